let
  lib = import ../.;
  m = (lib.evalCluster (import ../example.nix)).manifest;
in
{
  testVersion = { expr = m.version; expected = 1; };
  testNodeNames = { expr = builtins.attrNames m.nodes; expected = [ "ctrl001" "worker001" ]; };
  testLabels = {
    expr = m.nodes.worker001.labels;
    expected = { "nix-infra/cluster" = "demo"; "nix-infra/node" = "worker001"; "nix-infra/type" = "worker"; };
  };
  testUserLabelsKept = {
    expr = (lib.manifest.nodeLabels "demo" { name = "w1"; type = "worker"; labels = { team = "a"; }; }).team;
    expected = "a";
  };
  testSystemAttr = { expr = m.nodes.ctrl001.system; expected = "nixosConfigurations.ctrl001"; };
  testCredentials = { expr = [ m.nodes.ctrl001.credentials m.nodes.worker001.credentials ]; expected = [ [ ] [ "api-token" ] ]; };
  testWaves = { expr = [ m.waves m.nodes.ctrl001.wave m.nodes.worker001.wave ]; expected = [ [ [ "ctrl001" ] [ "worker001" ] ] 0 1 ]; };
  testNetwork = { expr = m.network; expected = { ipRange = "10.10.0.0/16"; subnet = "10.10.0.0/16"; gateway = "10.10.0.1"; zone = "eu-central"; }; };
  testSecrets = { expr = m.secrets; expected = [ "api-token" ]; };
  testSeedKeys = { expr = builtins.attrNames m.etcdSeed; expected = [ "/cluster/backends/api/meta_data" "/cluster/nodes/ctrl001" "/cluster/nodes/worker001" "/coreos.com/network/config" ]; };
  testEtcd = {
    expr = m.etcd;
    expected = {
      members = [ "ctrl001" ];
      endpoints = [ "https://10.10.32.1:2379" ];
      initialCluster = "ctrl001=https://10.10.32.1:2380";
      clientPort = 2379;
      peerPort = 2380;
    };
  };
  testIsJson = { expr = builtins.fromJSON (builtins.toJSON m) == m; expected = true; };
  # volumes and statefulness
  testNoVolumesStateless = {
    expr = [ m.nodes.worker001.volumes m.nodes.worker001.stateful m.apps.api.volume ];
    expected = [ { } false null ];
  };
  testVolumeInManifest =
    let
      ex = import ../example.nix;
      mv = (lib.evalCluster (ex // {
        nodes = ex.nodes // { db = { type = "service"; serverType = "cx22"; labels.team = "a"; volumes.pgdata = { size = 50; mountpoint = "/var/lib/postgresql"; filesystem = "xfs"; }; }; };
        apps = ex.apps // { pg = { group = "services"; port = 5432; publish = 15432; nodes = [ "db" ]; volume = "pgdata"; }; };
      })).manifest;
    in
    {
      expr = [ mv.nodes.db.volumes mv.nodes.db.stateful mv.apps.pg.volume mv.nodes.worker001.stateful ];
      expected = [
        {
          pgdata = {
            size = 50; mountpoint = "/var/lib/postgresql"; filesystem = "xfs";
            labels = { team = "a"; "nix-infra/cluster" = "demo"; "nix-infra/node" = "db"; "nix-infra/type" = "service"; "nix-infra/volume" = "pgdata"; };
          };
        }
        true "pgdata" false
      ];
    };
  testStatefulUnits = {
    expr = map (u: lib.manifest.isStateful { volumes = { }; } [ { volume = null; unit = u; } ]) [ "postgresql.service" "redis-cache.service" "podman-api.service" "redis.service" ];
    expected = [ true true false false ];
  };
}
