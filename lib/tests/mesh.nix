let
  mesh = import ../mesh.nix;
  api = { name = "api"; group = "backends"; publish = 5001; port = 8080; envPrefix = "API"; protocol = "http"; path = "/v1"; };
  db = { name = "db"; group = "services"; publish = 5432; port = 5432; envPrefix = "DB"; protocol = "tcp"; path = "/"; };
in
{
  testNodeKey = { expr = mesh.nodeKey "worker001"; expected = "/cluster/nodes/worker001"; };
  testMetaDataKey = { expr = mesh.metaDataKey api; expected = "/cluster/backends/api/meta_data"; };
  testInstancesPrefix = { expr = mesh.instancesPrefix api; expected = "/cluster/backends/api/instances/"; };
  testMetaData = {
    expr = mesh.metaData api;
    expected = { publish = { port = 5001; }; port = 8080; env_prefix = "API"; env = { PROTOCOL = "http"; HOST = "127.0.0.1"; PORT = "5001"; PATH = "/v1"; }; };
  };
  testSeed = {
    expr = mesh.seed { w1 = { name = "w1"; consumes = [ "services" ]; }; } { inherit api; } { w1 = "10.10.64.1"; };
    expected = {
      "/cluster/nodes/w1" = { name = "w1"; ipv4 = "10.10.64.1"; services = [ "services" ]; };
      "/cluster/backends/api/meta_data" = mesh.metaData api;
      "/coreos.com/network/config" = mesh.clusterOverlayConfig;
    };
  };
  testOverlayConfig = {
    expr = mesh.overlayConfig { network = "10.244.0.0/16"; port = 51820; };
    expected = { Network = "10.244.0.0/16"; SubnetLen = 24; Backend = { Type = "wireguard"; ListenPort = 51820; PersistentKeepaliveInterval = 25; }; };
  };
  testClusterOverlayConfigIsTheConstants = {
    expr = with mesh.clusterOverlayConfig; [ Network Backend.ListenPort ];
    expected = [ (import ../constants.nix).overlay.network (import ../constants.nix).ports.wireguard ];
  };
  testSeedHasNoInstances = {
    expr = builtins.filter (k: builtins.match ".*/instances/.*" k != null) (builtins.attrNames (mesh.seed { } { inherit api db; } { }));
    expected = [ ];
  };
  testConsumerEnv = {
    expr = mesh.consumerEnv [ api db ];
    expected = { API_HOST = "127.0.0.1"; API_PORT = "5001"; API_PROTOCOL = "http"; API_PATH = "/v1"; DB_HOST = "127.0.0.1"; DB_PORT = "5432"; DB_PROTOCOL = "tcp"; DB_PATH = "/"; };
  };
  testAppsByGroup = { expr = builtins.mapAttrs (_: map (a: a.name)) (mesh.appsByGroup { inherit api db; }); expected = { frontends = [ ]; backends = [ "api" ]; services = [ "db" ]; }; };
}
