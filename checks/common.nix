# Shared by the VM tests: the test cluster evaluated by lib, a throwaway test
# PKI (keys in the store: test fixtures only, never a real cluster's), the
# modules of each node, and Python helpers for the test scripts.
{ pkgs, self, disko }:
let
  inherit (pkgs) lib;
  infraLib = import ../lib;
  spec = import ./cluster.nix;
  cluster = infraLib.evalCluster spec;
  clusterFlake = import ../lib/cluster-flake.nix { nixpkgs = { inherit lib; }; };

  # CA + per-node certificates with the SANs nix-infra issues (orchestrator/nix_infra/pki.py)
  testPki = pkgs.runCommand "nix-infra-test-pki" { nativeBuildInputs = [ pkgs.openssl ]; } ''
    mkdir -p $out && cd $out
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
      -subj "/O=nix-infra/CN=test CA" -keyout ca.key -out ca.crt
    issue() { # name cn san eku
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/O=nix-infra/CN=$2" \
        -keyout "$1.key" -out "$1.csr"
      printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "$4" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile "$1.ext" -out "$1.crt"
    }
    ${lib.concatStrings (lib.mapAttrsToList (name: n: ''
      issue ${name}-client ${name} "DNS:${name}" clientAuth
      ${lib.optionalString (n.type == "ctrl") ''
        issue ${name}-server ${name} "DNS:${name},DNS:localhost,IP:${n.privateIp},IP:127.0.0.1" serverAuth,clientAuth
        issue ${name}-peer ${name} "DNS:${name},IP:${n.privateIp}" serverAuth,clientAuth
      ''}
    '') cluster.nodes)}
    issue admin nix-infra-admin "DNS:admin" clientAuth
  '';

  # Modules of one VM: what mkClusterFlake gives the node, fitted to the test network.
  nodeModule = name: { lib, ... }: {
    imports = [
      disko.nixosModules.disko
      ../node_types/${cluster.nodes.${name}.type}.nix
      (clusterFlake.nodeDataModule cluster.spec name cluster.nodes.${name} null)
    ];
    nixInfra.hetzner.enable = lib.mkForce false;
    nixInfra.node.privateInterface = "eth1";
    virtualisation.vlans = [ 1 ];
    networking.interfaces.eth1.ipv4.addresses = lib.mkForce [ { address = cluster.nodes.${name}.privateIp; prefixLength = 24; } ];
    environment.systemPackages = [ pkgs.etcd pkgs.curl pkgs.tcpdump ];
  };

  # Python for the test scripts: put each node's credentials where the
  # orchestrator puts them (systemd-creds encrypt), then start what uses them.
  pythonHelpers = ''
    import json
    PKI = "${testPki}"
    CREDS = "/var/lib/nix-infra/credentials"

    def deliver(machine, node, ctrl=False):
        pairs = {"nix-infra-etcd-ca": "ca.crt",
                 "nix-infra-etcd-client-cert": f"{node}-client.crt", "nix-infra-etcd-client-key": f"{node}-client.key"}
        if ctrl:
            for kind in ("server", "peer"):
                pairs[f"nix-infra-etcd-{kind}-cert"] = f"{node}-{kind}.crt"
                pairs[f"nix-infra-etcd-{kind}-key"] = f"{node}-{kind}.key"
        machine.succeed(f"mkdir -p {CREDS} && chmod 0700 {CREDS}")
        for cred, file in pairs.items():
            machine.succeed(f"systemd-creds encrypt --name={cred} {PKI}/{file} {CREDS}/{cred}.cred")

    def start_etcd(ctrl):
        ctrl.wait_for_unit("multi-user.target")
        deliver(ctrl, ctrl.name, ctrl=True)
        ctrl.succeed("systemctl restart etcd.service")  # it failed at boot: no credentials yet
        ctrl.wait_for_unit("etcd.service")

    def etcdctl(machine, args):
        return machine.succeed(
            f"ETCDCTL_API=3 ETCDCTL_ENDPOINTS=https://127.0.0.1:2379 ETCDCTL_CACERT={PKI}/ca.crt "
            f"ETCDCTL_CERT={PKI}/admin.crt ETCDCTL_KEY={PKI}/admin.key etcdctl {args}")

    SEED = json.loads(${builtins.toJSON (builtins.toJSON cluster.etcdSeed)})
  '';
in
{
  inherit cluster testPki nodeModule pythonHelpers;
}
