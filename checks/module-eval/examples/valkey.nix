# appModules.valkey: Valkey for the app "cache", its password from a credential (brings apps)
{ nix-infra, ... }:
{
  imports = [ nix-infra.appModules.valkey ];
  nixInfra.node.privateIp = "10.0.3.1";
  nixInfra.etcd.endpoints = [ "https://10.0.0.10:2379" ];
  nixInfra.apps.cache = {
    port = 6379;
    unit = "redis-cache.service";
    secrets = [ "cache-password" ];
    registration = {
      app = "cache"; group = "services"; node = "db1"; address = "10.0.3.1"; port = 6379;
      ttl = 30; interval = 10; healthCmd = "timeout 5 bash -c '</dev/tcp/127.0.0.1/6379'";
    };
  };
  nixInfra.valkey = { app = "cache"; passwordSecret = "cache-password"; };
}
