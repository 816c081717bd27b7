# VM test "mesh": ctrl001 runs etcd; worker001 and worker002 run the demo app
# (registered by the real registration unit); worker003 consumes it through
# its mesh proxy at 127.0.0.1:5001. Proves: the consumer reaches both
# instances; stopping one instance removes it within the lease TTL while
# traffic keeps flowing; a haproxy reload drops no connection.
{ pkgs, self, disko }:
let
  common = import ./common.nix { inherit pkgs self disko; };
  demoApp = name: {
    # the app: a native service answering with its node's name
    systemd.services.demo-app = {
      wantedBy = [ "multi-user.target" ];
      script = ''
        mkdir -p /run/demo && echo ${name} > /run/demo/index.html
        exec ${pkgs.python3}/bin/python3 -m http.server 8080 --directory /run/demo
      '';
    };
  };
in
pkgs.testers.runNixOSTest {
  name = "nix-infra-mesh";
  nodes = {
    ctrl001 = common.nodeModule "ctrl001";
    worker001 = { imports = [ (common.nodeModule "worker001") (demoApp "worker001") ]; };
    worker002 = { imports = [ (common.nodeModule "worker002") (demoApp "worker002") ]; };
    worker003 = common.nodeModule "worker003";
  };
  testScript = common.pythonHelpers + ''
    start_all()
    start_etcd(ctrl001)
    for key, value in SEED.items():  # what `nix-infra etcd seed` writes
        etcdctl(ctrl001, f"put {key} '{json.dumps(value, sort_keys=True, separators=(',', ':'))}'")

    workers = [worker001, worker002, worker003]
    for w in workers:
        w.wait_for_unit("multi-user.target")
        deliver(w, w.name)
        w.succeed("systemctl restart nix-infra-confd.service nix-infra-mesh-haproxy.service")
    for w in (worker001, worker002):
        w.wait_for_unit("demo-app.service")
        w.succeed("systemctl restart nix-infra-register-demo.service")

    with subtest("the consumer reaches both instances through 127.0.0.1:5001"):
        worker003.wait_until_succeeds("grep -q 'server worker001 192.168.1.65:8080' /var/lib/nix-infra/mesh/haproxy.cfg", timeout=60)
        worker003.wait_until_succeeds("grep -q 'server worker002 192.168.1.66:8080' /var/lib/nix-infra/mesh/haproxy.cfg", timeout=60)
        seen = {worker003.succeed("curl -fsS http://127.0.0.1:5001/").strip() for _ in range(10)}
        assert seen == {"worker001", "worker002"}, seen

    with subtest("a stopped instance leaves within the lease TTL; traffic keeps flowing"):
        worker001.succeed("systemctl stop demo-app.service")
        # the registration unit is bound to the app: it deregisters at once; the TTL (3 s) bounds a crash
        ctrl001.wait_until_fails("ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 "
                                 f"--cacert={PKI}/ca.crt --cert={PKI}/admin.crt --key={PKI}/admin.key "
                                 "get /cluster/backends/demo/instances/worker001 | grep -q worker001", timeout=4)
        worker003.wait_until_fails("grep -q 'server worker001' /var/lib/nix-infra/mesh/haproxy.cfg", timeout=15)
        for _ in range(10):
            assert worker003.succeed("curl -fsS http://127.0.0.1:5001/").strip() == "worker002"

    with subtest("a haproxy reload drops no connection"):
        worker003.succeed(
            "(for i in $(seq 300); do curl -fsS -o /dev/null http://127.0.0.1:5001/ || exit 1; done) & pid=$!; "
            "sleep 0.2; systemctl reload nix-infra-mesh-haproxy.service; "
            "systemctl reload nix-infra-mesh-haproxy.service; wait $pid"
        )
  '';
}
