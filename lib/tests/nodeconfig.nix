let
  lib = import ../.;
  cluster = lib.evalCluster (import ../example.nix);
  w = cluster.nodes.worker001.config;
  ctrl = cluster.nodes.ctrl001.config;
  nc = lib.nodeconfig;
  app = hc: { name = "api"; group = "backends"; port = 8080; healthCheck = { intervalSeconds = 10; timeoutSeconds = 5; path = "/h"; command = "check-it"; } // hc; };
in
{
  testNode = {
    expr = w.node;
    expected = {
      name = "worker001"; type = "worker"; privateIp = "10.10.64.1";
      firewall = cluster.manifest.nodes.worker001.firewall;
      sshKeys = cluster.manifest.sshKeys; adminCidrs = cluster.manifest.adminCidrs;
      privateNetwork = cluster.manifest.network.ipRange;
    };
  };
  testEtcdMatchesManifest = { expr = [ w.etcd ctrl.etcd ]; expected = [ cluster.manifest.etcd cluster.manifest.etcd ]; };
  testMeshOnlyForConsumers = { expr = [ ctrl.mesh.enable w.mesh.enable ]; expected = [ false true ]; };
  testMeshTemplateIsTheNodes = { expr = w.mesh.template; expected = lib.confd.haproxyTemplate "worker001"; };
  testConsumerEnv = { expr = w.mesh.consumerEnv.API_PORT; expected = "5001"; };
  testAppUnitAndSecrets = {
    expr = { inherit (w.apps.api) unit secrets port; };
    expected = { unit = "podman-api.service"; secrets = [ "api-token" ]; port = 8080; };
  };
  testRegistration = {
    expr = w.apps.api.registration;
    expected = {
      app = "api"; group = "backends"; node = "worker001"; address = "10.10.64.1"; port = 8080;
      interval = 10; ttl = 30;
      timeout = 5; healthCmd = "curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8080/";
    };
  };
  testHealthTcp = { expr = nc.healthCommand (app { type = "tcp"; }); expected = "timeout 5 bash -c '</dev/tcp/127.0.0.1/8080'"; };
  testHealthHttpQueryIsOneWord = {
    # issue 12.1: '&' would background curl under bash -c, so a down app registered healthy
    expr = nc.healthCommand (app { type = "http"; path = "/healthz?full=1&verbose=1"; });
    expected = "curl -fsS -o /dev/null --max-time 5 'http://127.0.0.1:8080/healthz?full=1&verbose=1'";
  };
  testHealthHttpSemicolonIsOneWord = {
    expr = nc.healthCommand (app { type = "http"; path = "/x;touch$IFS/tmp/P"; });
    expected = "curl -fsS -o /dev/null --max-time 5 'http://127.0.0.1:8080/x;touch$IFS/tmp/P'";
  };
  testHealthCommand = { expr = nc.healthCommand (app { type = "command"; }); expected = "check-it"; };
  testCredentialsMatchManifest = {
    expr = w.credentials;
    expected = {
      dir = "/var/lib/nix-infra/credentials";
      names = cluster.manifest.nodes.worker001.credentials;
      units = cluster.manifest.nodes.worker001.credentialUnits;
    };
  };
  testOverlay = { expr = w.overlay; expected = { network = "10.244.0.0/16"; port = 51820; }; };
  testIngressFrontends = {
    expr = (lib.evalCluster ((import ../example.nix) // {
      nodes = (import ../example.nix).nodes // { ingress001 = { type = "ingress"; serverType = "cx22"; }; };
      apps = (import ../example.nix).apps // { web = { group = "frontends"; port = 3000; publish = 5100; nodes = [ "worker001" ]; image = "web:1"; }; };
    })).nodes.ingress001.config.ingress.frontends;
    expected = { web = 5100; };
  };
  testNoAppsOnCtrl = { expr = ctrl.apps; expected = { }; };
  testVolumes = {
    expr = [
      w.volumes
      (lib.evalCluster ((import ../example.nix) // { nodes = (import ../example.nix).nodes // { db = { type = "service"; serverType = "cx22"; volumes.pgdata = { size = 20; mountpoint = "/var/lib/postgresql"; }; }; }; })).nodes.db.config.volumes
    ];
    expected = [ { } { pgdata = { size = 20; mountpoint = "/var/lib/postgresql"; filesystem = "ext4"; }; } ];
  };
}
