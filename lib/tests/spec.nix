let
  spec = import ../spec.nix;
  example = import ../example.nix;
  norm = spec.normalize example;
in
{
  testExampleHasNoShapeErrors = { expr = spec.shapeErrors example; expected = [ ]; };
  testProviderDefaults = {
    expr = (spec.normalize { name = "x"; provider = { location = "hel1"; sshKeys = [ ]; }; nodes = { }; }).provider;
    expected = { type = "hetzner"; location = "hel1"; networkZone = "eu-central"; network = "10.10.0.0/16"; image = "debian-12"; sshKeys = [ ]; adminCidrs = [ ]; };
  };
  testNodeDefaults = {
    expr = norm.nodes.ctrl001;
    expected = { name = "ctrl001"; type = "ctrl"; serverType = "cx22"; location = "fsn1"; image = "debian-12"; privateIp = null; labels = { }; consumes = [ ]; };
  };
  testNodeLocationOverride = { expr = norm.nodes.worker001.location; expected = "nbg1"; };
  testWorkerConsumesByDefault = { expr = norm.nodes.worker001.consumes; expected = [ "services" "backends" ]; };
  testAppDefaults = {
    expr = norm.apps.api;
    expected = {
      name = "api"; group = "backends"; port = 8080; publish = 5001; nodes = [ "worker001" ];
      envPrefix = "API"; image = "ghcr.io/acme/api:1.4"; unit = "podman-api.service"; secrets = [ "api-token" ];
      protocol = "http"; path = "/";
      healthCheck = { type = "http"; path = "/"; command = null; intervalSeconds = 10; timeoutSeconds = 5; };
    };
  };
  testServicesDefaultToTcp = {
    expr = let a = (spec.normalize (example // { apps.db = { group = "services"; port = 5432; publish = 15432; nodes = [ "worker001" ]; }; })).apps.db; in [ a.protocol a.healthCheck.type a.envPrefix ];
    expected = [ "tcp" "tcp" "DB" ];
  };
  testDefaultEnvPrefix = { expr = spec.defaultEnvPrefix "my-app2"; expected = "MY_APP2"; };
  testCollectsAllShapeErrors = {
    expr = builtins.length (spec.shapeErrors (example // { name = "Bad"; nodes.ctrl001 = { type = "nope"; serverType = "cx22"; }; }));
    expected = 2;
  };
  testNativeAppUnit = {
    expr = (spec.normalize (example // { apps.db = { group = "services"; port = 5432; publish = 15432; nodes = [ "worker001" ]; }; })).apps.db.unit;
    expected = "db.service";
  };
  testExplicitAppUnit = {
    expr = (spec.normalize (example // { apps.db = { group = "services"; port = 5432; publish = 15432; nodes = [ "worker001" ]; unit = "postgresql.service"; }; })).apps.db.unit;
    expected = "postgresql.service";
  };
}
