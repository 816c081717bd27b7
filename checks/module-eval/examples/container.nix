# appModules.container: a data directory and a non-root user for a container app (brings apps)
{ nix-infra, ... }:
{
  imports = [ nix-infra.appModules.container ];
  nixInfra.etcd.endpoints = [ "https://10.0.0.10:2379" ];
  nixInfra.apps.api = {
    image = "ghcr.io/acme/api:1.4";
    port = 8080;
    secrets = [ "api-token" ];
    registration = {
      app = "api"; group = "backends"; node = "web1"; address = "10.0.1.5"; port = 8080;
      ttl = 30; interval = 10; healthCmd = "curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8080/";
    };
  };
  nixInfra.containerApps.api = {
    dataDir = "/var/lib/api";
    user = "1000:1000";
  };
}
