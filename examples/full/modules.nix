# The cluster's own NixOS settings, shared by flake.nix and nix-infra's
# eval-all check: app modules for every node (each acts only where its app
# runs) and the ingress's host names.
appModules: {
  modules = [
    appModules.postgresql
    appModules.valkey
    appModules.container
    {
      nixInfra.postgresql = { app = "db"; passwordSecret = "db-password"; };
      nixInfra.valkey = { app = "cache"; passwordSecret = "cache-password"; };
      nixInfra.containerApps.api.dataDir = "/var/lib/api";
    }
  ];
  nodeModules.ingress001 = [
    {
      nixInfra.ingress = {
        acmeEmail = "ops@example.com";
        virtualHosts."www.example.com".app = "web";
      };
    }
  ];
}
