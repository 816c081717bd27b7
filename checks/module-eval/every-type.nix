# A cluster with every node type and every app module, each app module under a
# name other than its default, for the module evaluation check: 1 ctrl, 2
# workers (a container app with a secret, a data directory and a non-root
# user; a frontend), a service node (PostgreSQL and Valkey), an ingress and a
# registry. The service node has a volume (in the spec; its id in
# every-type-facts/, as provision records it) holding both databases' data, and
# both are backed up (PostgreSQL to an SFTP Storage Box).
{ mkClusterFlake, appModules }:
mkClusterFlake {
  facts = ./every-type-facts;
  cluster = {
    name = "everytype";
    provider = {
      location = "hel1";
      network = "10.30.0.0/16";
      sshKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2 ci" ];
      adminCidrs = [ "198.51.100.0/24" "2001:db8::/32" ];
    };
    nodes = {
      ctrl001 = { type = "ctrl"; serverType = "cx22"; };
      worker001 = { type = "worker"; serverType = "cx22"; };
      worker002 = { type = "worker"; serverType = "cx22"; };
      svc001 = {
        type = "service";
        serverType = "cx32";
        volumes.data = { size = 50; mountpoint = "/srv/data"; filesystem = "ext4"; };
      };
      ingress001 = { type = "ingress"; serverType = "cx22"; };
      registry001 = { type = "registry"; serverType = "cx22"; };
    };
    apps = {
      shop = { group = "frontends"; port = 3000; publish = 5100; nodes = [ "worker001" "worker002" ]; image = "registry.example.com:5000/acme/shop@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; };
      orders = { group = "backends"; port = 8080; publish = 5001; nodes = [ "worker001" ]; image = "ghcr.io/acme/orders:2.1"; secrets = [ "orders-token" "orders-db-url" ]; healthCheck = { type = "http"; path = "/healthz"; }; };
      maindb = { group = "services"; port = 5432; publish = 15432; nodes = [ "svc001" ]; unit = "postgresql.service"; secrets = [ "maindb-pass" "maindb-backup-repository" "maindb-backup-password" "maindb-backup-ssh-key" ]; healthCheck.type = "tcp"; volume = "data"; };
      sessions = { group = "services"; port = 6379; publish = 16379; nodes = [ "svc001" ]; unit = "redis-sessions.service"; secrets = [ "sessions-pass" "sessions-backup-repository" "sessions-backup-password" ]; healthCheck.type = "tcp"; volume = "data"; };
    };
  };
  modules = [
    appModules.container
    appModules.postgresql
    appModules.valkey
    {
      nixInfra.postgresql = { app = "maindb"; database = "orders"; user = "orders"; passwordSecret = "maindb-pass"; };
      nixInfra.valkey = { app = "sessions"; passwordSecret = "sessions-pass"; };
      nixInfra.containerApps.orders = {
        dataDir = "/var/lib/orders";
        user = "1000:1000";
        environment.LOG_LEVEL = "info";
        cmd = [ "--serve" ];
      };
    }
  ];
  nodeModules.svc001 = [
    {
      nixInfra.postgresql.backup = {
        enable = true;
        sshKeySecret = "maindb-backup-ssh-key";
        knownHosts = "[u123456.your-storagebox.de]:23 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2";
      };
      nixInfra.valkey.backup = { enable = true; schedule = "hourly"; keep.daily = 14; };
    }
  ];
  nodeModules.ingress001 = [
    { nixInfra.ingress = { acmeEmail = "ops@example.com"; virtualHosts."shop.example.com".app = "shop"; }; }
  ];
}
