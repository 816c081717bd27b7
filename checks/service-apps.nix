# The app modules the test cluster's service node runs (checks/cluster.nix:
# apps db and cache on svc001), as the VM tests app-modules and
# first-install and the module evaluation check give them to it.
{
  imports = [
    ../app_modules/postgresql.nix
    ../app_modules/valkey.nix
  ];
  nixInfra.postgresql = { app = "db"; passwordSecret = "db-password"; };
  nixInfra.valkey = { app = "cache"; passwordSecret = "cache-password"; };
}
