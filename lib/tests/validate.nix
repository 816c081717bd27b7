let
  lib = import ../.;
  example = import ../example.nix;
  errorsOf = spec:
    let s = lib.spec.normalize spec; in
    lib.validate.semanticErrors s (lib.addresses.assign s.provider.network s.nodes) (lib.placement.appsByNode s.apps);
in
{
  testExampleValid = { expr = errorsOf example; expected = [ ]; };
  testEvenCtrl = {
    expr = errorsOf (example // { nodes = example.nodes // { ctrl002 = { type = "ctrl"; serverType = "cx22"; }; }; });
    expected = [ "nodes: 2 ctrl nodes (ctrl001, ctrl002); etcd needs an odd number (1, 3 or 5) to keep a quorum" ];
  };
  testDuplicatePublish = {
    expr = errorsOf (example // { apps = example.apps // { web = { group = "frontends"; port = 3000; publish = 5001; nodes = [ "worker001" ]; }; }; });
    expected = [ "apps.api.publish: port 5001 is published by apps.api, apps.web; publish ports are cluster-wide (consumers reach every app at 127.0.0.1:<publish>), give each app its own" ];
  };
  testZoneMismatch = {
    expr = errorsOf (example // { nodes = example.nodes // { worker001 = { type = "worker"; serverType = "cpx21"; location = "ash"; }; }; });
    expected = [ "nodes.worker001.location: ash is in network zone us-east, but the private network is in eu-central; allowed here: fsn1, hel1, nbg1" ];
  };
  testAddressClash = {
    expr = errorsOf (example // { nodes = example.nodes // { db = { type = "service"; serverType = "cx22"; privateIp = "10.10.64.1"; }; }; });
    expected = [ "nodes.db.privateIp: address 10.10.64.1 is taken by nodes.db.privateIp, nodes.worker001 (derived from its type and number); give all but one of them another nodes.<name>.privateIp" ];
  };
}
