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
  # issue 11.5: an app port equal to the publish port of an app its node consumes
  testPortClashesWithConsumedPublish = {
    expr = errorsOf (example // {
      nodes = example.nodes // { svc001 = { type = "service"; serverType = "cx22"; }; };
      apps = example.apps // { db = { group = "services"; port = 5432; publish = 5432; nodes = [ "svc001" ]; }; };
    });
    expected = [ "apps.db.port: port 5432 clashes on node svc001 with apps.db.publish (the mesh proxy listens on 127.0.0.1:5432 on every node that consumes services); give apps.db.port or apps.db.publish another port" ];
  };
  testPortClashNamesBothAppsAndAllNodes = {
    expr = errorsOf (example // {
      nodes = example.nodes // { worker002 = { type = "worker"; serverType = "cx22"; }; };
      apps = example.apps // {
        api = example.apps.api // { nodes = [ "worker001" "worker002" ]; };
        db = { group = "services"; port = 5432; publish = 8080; nodes = [ "worker001" ]; };
      };
    });
    expected = [ "apps.api.port: port 8080 clashes on nodes worker001, worker002 with apps.db.publish (the mesh proxy listens on 127.0.0.1:8080 on every node that consumes services); give apps.api.port or apps.db.publish another port" ];
  };
  testNoClashWhereTheGroupIsNotConsumed = {
    # worker001 consumes only frontends here: nothing listens on 127.0.0.1:5001 there
    expr = errorsOf (example // {
      nodes = example.nodes // { worker001 = example.nodes.worker001 // { consumes = [ "frontends" ]; }; };
      apps = example.apps // { db = { group = "backends"; port = 5001; publish = 5002; nodes = [ "worker001" ]; }; };
    });
    expected = [ ];
  };
  testPlatformPortsReservedEverywhere = {
    expr = map (p: builtins.length (errorsOf (example // { apps.api = example.apps.api // { port = p; }; }))) [ 5000 5080 51820 8080 ];
    expected = [ 1 1 1 0 ];
  };
  testReservedPublishNamesItsUser = {
    expr = errorsOf (example // { apps.api = example.apps.api // { publish = 5080; }; });
    expected = [ "apps.api.publish: port 5080 is the platform's (the binary cache (nix-serve) on registry nodes); an app may not listen on or publish any of the platform's ports 22, 80, 443, 2379, 2380, 5000, 5080, 51820" ];
  };
  testExamplesHaveNoPortClash = {
    expr = map (f: errorsOf (import f)) [ ../../examples/full/cluster.nix ../../checks/cluster.nix ../../templates/cluster/cluster.nix ];
    expected = [ [ ] [ ] [ ] ];
  };
  # volumes: an app's data on a volume of its one node
  testAppVolumeOnTwoNodes = {
    expr = errorsOf (example // {
      nodes = example.nodes // { w2 = { type = "worker"; serverType = "cx22"; volumes.data = { size = 10; mountpoint = "/srv/data"; }; }; };
      apps.api = example.apps.api // { nodes = [ "worker001" "w2" ]; volume = "data"; };
    });
    expected = [ "apps.api.volume: an app with a volume is placed on exactly one node, but apps.api.nodes lists 2 (worker001, w2)" ];
  };
  testAppVolumeMissingOnNode = {
    expr = errorsOf (example // { apps.api = example.apps.api // { volume = "data"; }; });
    expected = [ "apps.api.volume: node worker001 has no volume \"data\"; declare nodes.worker001.volumes.data (its volumes: none)" ];
  };
  testAppVolumeOk = {
    expr = errorsOf (example // {
      nodes = example.nodes // { worker001 = example.nodes.worker001 // { volumes.data = { size = 10; mountpoint = "/srv/data"; }; }; };
      apps.api = example.apps.api // { volume = "data"; };
    });
    expected = [ ];
  };
  testVolumeHetznerNameTooLong = {
    expr = errorsOf (example // {
      nodes = example.nodes // { worker001 = example.nodes.worker001 // { volumes.${builtins.concatStringsSep "" (builtins.genList (_: "v") 60)} = { size = 10; mountpoint = "/srv/data"; }; }; };
    });
    expected = [ "nodes.worker001.volumes.${builtins.concatStringsSep "" (builtins.genList (_: "v") 60)}: its Hetzner volume name \"demo-worker001-${builtins.concatStringsSep "" (builtins.genList (_: "v") 60)}\" (<cluster>-<node>-<volume>) is 75 characters; Hetzner allows at most 63, shorten the volume, node or cluster name" ];
  };
}
