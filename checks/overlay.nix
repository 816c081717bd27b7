# VM test "overlay": flannel with the WireGuard backend on ctrl001, worker001
# and worker002. Proves: each node gets a flannel-wg interface and a subnet
# lease in etcd; worker001 reaches worker002's overlay address; on the private
# link, that traffic is WireGuard (UDP 51820) and never plain ICMP.
{ pkgs, self, disko }:
let
  common = import ./common.nix { inherit pkgs self disko; };
in
pkgs.testers.runNixOSTest {
  name = "nix-infra-overlay";
  nodes = {
    ctrl001 = common.nodeModule "ctrl001";
    worker001 = common.nodeModule "worker001";
    worker002 = common.nodeModule "worker002";
  };
  testScript = common.pythonHelpers + ''
    start_all()
    start_etcd(ctrl001)
    # what `nix-infra etcd seed` writes: flannel on the nodes only reads its config
    config = json.dumps(SEED["/coreos.com/network/config"], sort_keys=True, separators=(",", ":"))
    etcdctl(ctrl001, f"put /coreos.com/network/config '{config}'")
    for m in (ctrl001, worker001, worker002):
        m.wait_for_unit("multi-user.target")
        if m is not ctrl001:
            deliver(m, m.name)
        m.succeed("systemctl restart flannel.service")
        m.wait_until_succeeds("ip -4 addr show flannel-wg | grep -q 'inet 10.244.'", timeout=60)

    with subtest("every node has a subnet lease in etcd"):
        leases = etcdctl(ctrl001, "get --prefix /coreos.com/network/subnets/ --keys-only").split()
        assert len(leases) == 3, leases

    with subtest("overlay traffic crosses the private link encrypted"):
        target = worker002.succeed("ip -4 -o addr show flannel-wg | awk '{print $4}' | cut -d/ -f1").strip()
        worker001.succeed("tcpdump -i eth1 -n -w /tmp/link.pcap 'host 192.168.1.66' & echo $! > /tmp/tcpdump.pid; sleep 1")
        worker001.succeed(f"ping -c 5 -W 2 {target}")
        worker001.succeed("sleep 1; kill $(cat /tmp/tcpdump.pid); sleep 1")
        wireguard = int(worker001.succeed("tcpdump -n -r /tmp/link.pcap 'udp port 51820' | wc -l").strip())
        icmp = int(worker001.succeed("tcpdump -n -r /tmp/link.pcap icmp | wc -l").strip())
        assert wireguard >= 10, f"expected WireGuard packets on eth1, saw {wireguard}"
        assert icmp == 0, f"plain ICMP crossed the private link: {icmp} packets"
  '';
}
