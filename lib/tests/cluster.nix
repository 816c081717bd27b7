# evalCluster end to end, and the stability property: adding or removing a
# node or an app changes no other node's address.
let
  lib = import ../.;
  example = import ../example.nix;
  addressesOf = spec: builtins.mapAttrs (_: n: n.privateIp) (lib.evalCluster spec).manifest.nodes;
  seedOf = spec: (lib.evalCluster spec).etcdSeed;
  base = addressesOf example;
  bigger = example // {
    nodes = example.nodes // {
      ctrl002 = { type = "ctrl"; serverType = "cx22"; };
      ctrl003 = { type = "ctrl"; serverType = "cx22"; };
      worker002 = { type = "worker"; serverType = "cpx21"; };
      db = { type = "service"; serverType = "cpx31"; };
      gateway = { type = "ingress"; serverType = "cx22"; };
      edge = { type = "ingress"; serverType = "cx22"; privateIp = "10.10.0.2"; };
    };
    apps = example.apps // {
      web = { group = "frontends"; port = 3000; publish = 5002; nodes = [ "worker002" ]; };
      pg = { group = "services"; port = 5432; publish = 15432; nodes = [ "db" ]; secrets = [ "pg-pass" ]; };
    };
  };
  biggerAddrs = addressesOf bigger;
  # the example without worker001 (and its app): ctrl001 must keep its address
  smaller = example // { nodes = { inherit (example.nodes) ctrl001; }; apps = { }; };
  sameFor = names: a: b: builtins.all (n: a.${n} == b.${n}) names;
  c3 = (lib.evalCluster bigger).nodes;
in
{
  testExampleAddresses = { expr = base; expected = { ctrl001 = "10.10.32.1"; worker001 = "10.10.64.1"; }; };
  testAddingKeepsAddresses = { expr = sameFor [ "ctrl001" "worker001" ] base biggerAddrs; expected = true; };
  testRemovingKeepsAddresses = { expr = sameFor [ "ctrl001" ] base (addressesOf smaller); expected = true; };
  testRemovingFromBiggerKeepsAddresses = {
    expr = sameFor [ "ctrl001" "ctrl002" "ctrl003" "worker001" "db" "gateway" "edge" ] biggerAddrs
      (addressesOf (bigger // { nodes = removeAttrs bigger.nodes [ "worker002" ]; apps = removeAttrs bigger.apps [ "web" ]; }));
    expected = true;
  };
  testAddingKeepsOtherSeedValues = {
    expr = let a = seedOf example; b = seedOf bigger; in builtins.all (k: a.${k} == b.${k}) (builtins.attrNames a);
    expected = true;
  };
  testAllAddressesUnique = { expr = builtins.length (builtins.attrNames (builtins.groupBy (x: x) (builtins.attrValues biggerAddrs))); expected = 8; };
  testEtcdEndpoints = { expr = c3.worker001.etcd.endpoints; expected = [ "https://10.10.32.1:2379" "https://10.10.32.2:2379" "https://10.10.32.3:2379" ]; };
  testEtcdInitialCluster = {
    expr = c3.ctrl002.etcd.initialCluster;
    expected = "ctrl001=https://10.10.32.1:2380,ctrl002=https://10.10.32.2:2380,ctrl003=https://10.10.32.3:2380";
  };
  testEtcdMember = { expr = [ c3.ctrl001.etcd.member c3.db.etcd.member ]; expected = [ true false ]; };
  testConsumedApps = { expr = map (a: a.name) c3.worker002.consumedApps; expected = [ "pg" "api" ]; };
  testIngressConsumesFrontends = { expr = c3.gateway.consumerEnv.WEB_PORT; expected = "5002"; };
  testHostedApps = { expr = map (a: a.name) c3.db.hostedApps; expected = [ "pg" ]; };
  testConsumesOverride = {
    expr = (lib.evalCluster (example // { nodes = example.nodes // { worker001 = example.nodes.worker001 // { consumes = [ "frontends" ]; }; }; })).etcdSeed."/cluster/nodes/worker001".services;
    expected = [ "frontends" ];
  };
  testSpecErrorsIsWhatEvalClusterThrows = {
    expr = [
      (lib.specErrors example)
      (lib.specErrors (example // { name = "Bad"; }))
      (builtins.tryEval (lib.evalCluster (example // { name = "Bad"; })).manifest).success
    ];
    expected = [ [ ] [ "name: \"Bad\" is not a DNS label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)" ] false ];
  };
}
