# appModules.postgresql: PostgreSQL for the app "db", its password from a credential (brings apps)
{ nix-infra, ... }:
{
  imports = [ nix-infra.appModules.postgresql ];
  nixInfra.node = {
    privateIp = "10.0.3.1";
    privateNetwork = "10.0.0.0/16";
  };
  nixInfra.etcd.endpoints = [ "https://10.0.0.10:2379" ];
  nixInfra.apps.db = {
    port = 5432;
    unit = "postgresql.service";
    secrets = [ "db-password" ];
    registration = {
      app = "db"; group = "services"; node = "db1"; address = "10.0.3.1"; port = 5432;
      ttl = 30; interval = 10; healthCmd = "timeout 5 bash -c '</dev/tcp/127.0.0.1/5432'";
    };
  };
  nixInfra.postgresql = { app = "db"; passwordSecret = "db-password"; };
}
