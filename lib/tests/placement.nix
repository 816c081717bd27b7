let
  pl = import ../placement.nix;
  c = import ../constants.nix;
  apps = {
    api = { name = "api"; nodes = [ "w1" "w2" ]; port = 8080; secrets = [ "api-token" "db-pass" ]; };
    web = { name = "web"; nodes = [ "w1" ]; port = 3000; secrets = [ "db-pass" ]; };
  };
  byNode = pl.appsByNode apps;
in
{
  testAppsByNode = { expr = builtins.mapAttrs (_: map (a: a.name)) byNode; expected = { w1 = [ "api" "web" ]; w2 = [ "api" ]; }; };
  testCredentials = { expr = pl.credentials byNode.w1; expected = [ "api-token" "db-pass" ]; };
  testCredentialUnits = {
    expr = pl.credentialUnits byNode.w1;
    expected = { api-token = [ "podman-api.service" ]; db-pass = builtins.sort builtins.lessThan (map pl.appUnit (builtins.filter (a: builtins.elem "db-pass" a.secrets) byNode.w1)); };
  };
  testCredentialUnitsShared = {
    expr = pl.credentialUnits [ { name = "web"; secrets = [ "t" ]; } { name = "api"; secrets = [ "t" "u" ]; } ];
    expected = { t = [ "podman-api.service" "podman-web.service" ]; u = [ "podman-api.service" ]; };
  };
  testCredentialsNone = { expr = pl.credentials [ ]; expected = [ ]; };
  testFirewallWorker = { expr = pl.firewall "worker" byNode.w1; expected = { public = { tcp = [ 22 ]; udp = [ ]; }; private = { tcp = [ 3000 8080 ]; udp = [ 51820 ]; }; }; };
  testFirewallIngress = { expr = pl.firewall "ingress" [ ]; expected = { public = { tcp = [ 22 80 443 ]; udp = [ ]; }; private = { tcp = [ ]; udp = [ 51820 ]; }; }; };
  testFirewallCtrl = { expr = (pl.firewall "ctrl" [ ]).private.tcp; expected = [ 2379 2380 ]; };
  testFirewallRegistry = { expr = (pl.firewall "registry" [ ]).private.tcp; expected = [ 5000 5080 ]; };
  testRegistryCredentials = { expr = pl.nodeCredentials "registry" [ ]; expected = [ "nix-infra-cache-key" ]; };
  testRegistryCredentialUnits = { expr = pl.nodeCredentialUnits "registry" [ ]; expected = { nix-infra-cache-key = [ "nix-serve.service" ]; }; };
  testWorkerCredentialsAreAppSecrets = { expr = pl.nodeCredentials "worker" byNode.w1; expected = pl.credentials byNode.w1; };
  testReservedPortsAreThePlatformPorts = {
    expr = builtins.sort builtins.lessThan (builtins.attrValues c.ports);
    expected = c.reservedPorts;
  };
  testPlatformPortsAreWhatTheFirewallOpens = {
    expr = builtins.all (
      t:
      let f = pl.firewall t [ ]; in
      builtins.sort builtins.lessThan (f.public.tcp ++ f.public.udp ++ f.private.tcp ++ f.private.udp)
      == builtins.sort builtins.lessThan (map (k: c.ports.${k}) c.platformPorts.${t})
    ) c.nodeTypes;
    expected = true;
  };
}
