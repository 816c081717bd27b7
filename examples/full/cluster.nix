# Every node type and every app module: 3 ctrl, 2 workers running a container
# API, a service node with PostgreSQL and Valkey, an ingress, a registry.
{
  name = "full";
  provider = {
    location = "fsn1";
    network = "10.20.0.0/16";
    sshKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2 ops@laptop" ];
    adminCidrs = [ "203.0.113.0/24" ];
  };
  nodes = {
    ctrl001 = { type = "ctrl"; serverType = "cx22"; };
    ctrl002 = { type = "ctrl"; serverType = "cx22"; location = "nbg1"; };
    ctrl003 = { type = "ctrl"; serverType = "cx22"; location = "hel1"; };
    worker001 = { type = "worker"; serverType = "cpx21"; };
    worker002 = { type = "worker"; serverType = "cpx21"; location = "nbg1"; };
    svc001 = { type = "service"; serverType = "cpx31"; };
    ingress001 = { type = "ingress"; serverType = "cx22"; consumes = [ "frontends" ]; };
    registry001 = { type = "registry"; serverType = "cx32"; };
  };
  apps = {
    web = { group = "frontends"; port = 3000; publish = 5100; nodes = [ "worker001" "worker002" ]; image = "ghcr.io/acme/web:2.0"; };
    api = { group = "backends"; port = 8080; publish = 5001; nodes = [ "worker001" "worker002" ]; image = "ghcr.io/acme/api:1.4"; secrets = [ "api-token" ]; };
    db = { group = "services"; port = 5432; publish = 15432; nodes = [ "svc001" ]; unit = "postgresql.service"; secrets = [ "db-password" ];
           healthCheck = { type = "tcp"; }; };
    cache = { group = "services"; port = 6379; publish = 16379; nodes = [ "svc001" ]; unit = "redis-cache.service"; secrets = [ "cache-password" ];
              healthCheck = { type = "tcp"; }; };
  };
}
