# A generated cluster of `size` nodes for bench/eval-scaling: 3 ctrl, 2
# ingress, one service node in ten, the rest workers; about 2 apps per node,
# each placed on two nodes, every app with a secret.
{ size }:
let
  pad = n: let s = toString n; in builtins.substring 0 (4 - builtins.stringLength s) "0000" + s;
  nCtrl = 3;
  nIngress = 2;
  rest = size - nCtrl - nIngress;
  nService = rest / 10;
  nWorker = rest - nService;
  mk = type: prefix: count: serverType:
    builtins.genList (i: { name = "${prefix}${pad (i + 1)}"; value = { inherit type serverType; labels.role = prefix; }; }) count;
  hosts = map (n: n.name) (mk "worker" "worker" nWorker "cpx21" ++ mk "service" "svc" nService "cpx31");
  nHosts = builtins.length hosts;
  nApps = 2 * size;
  mod = a: b: a - (a / b) * b;
  groups = [ "frontends" "backends" "services" ];
in
{
  name = "bench";
  provider = {
    location = "fsn1";
    network = "10.0.0.0/12";
    sshKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2 bench" ];
    adminCidrs = [ "198.51.100.0/24" ];
  };
  nodes = builtins.listToAttrs (mk "ctrl" "ctrl" nCtrl "cx22" ++ mk "ingress" "ingress" nIngress "cx22" ++ mk "worker" "worker" nWorker "cpx21" ++ mk "service" "svc" nService "cpx31");
  apps = builtins.listToAttrs (
    builtins.genList (i: {
      name = "app${pad i}";
      value = {
        group = builtins.elemAt groups (mod i 3);
        port = 10000 + i;
        publish = 30000 + i;
        nodes = [ (builtins.elemAt hosts (mod i nHosts)) (builtins.elemAt hosts (mod (i + 1) nHosts)) ];
        image = "registry.example/app${pad i}:1";
        secrets = [ "app${pad i}-token" "shared-db" ];
      };
    }) nApps
  );
}
