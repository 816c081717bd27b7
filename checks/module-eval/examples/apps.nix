# nixosModules.apps: a container app under podman, its secrets, its mesh registration
{ nix-infra, ... }:
{
  imports = [ nix-infra.nixosModules.apps ];
  nixInfra.etcd.endpoints = [ "https://10.0.0.10:2379" ];
  nixInfra.apps.api = {
    image = "ghcr.io/acme/api:1.4";
    port = 8080;
    secrets = [ "api-token" ];
    registration = {
      app = "api";
      group = "backends";
      node = "web1";
      address = "10.0.1.5";
      port = 8080;
      ttl = 30;
      interval = 10;
      healthCmd = "curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8080/";
    };
  };
}
