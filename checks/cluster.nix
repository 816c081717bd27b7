# The cluster the NixOS VM tests run: every node on the test driver's vlan 1
# (eth1, 192.168.1.0/24), addresses from lib's plan; a native demo app
# (python http.server) on two workers, consumed by a third.
{
  name = "vmtest";
  provider = {
    type = "local"; location = "fsn1"; network = "192.168.1.0/24";
    sshKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2 test" ];
    adminCidrs = [ "192.168.1.0/24" ];
  };
  nodes.ctrl001 = { type = "ctrl"; serverType = "cx22"; };
  nodes.worker001 = { type = "worker"; serverType = "cx22"; };
  nodes.worker002 = { type = "worker"; serverType = "cx22"; };
  nodes.worker003 = { type = "worker"; serverType = "cx22"; };
  nodes.svc001 = { type = "service"; serverType = "cx22"; };
  apps.demo = { group = "backends"; port = 8080; publish = 5001; nodes = [ "worker001" "worker002" ]; unit = "demo-app.service";
                healthCheck = { type = "http"; path = "/"; intervalSeconds = 1; timeoutSeconds = 1; }; };
  # the app modules' test (checks/app-modules.nix)
  apps.db = { group = "services"; port = 5432; publish = 15432; nodes = [ "svc001" ]; unit = "postgresql.service";
              protocol = "tcp"; secrets = [ "db-password" ]; healthCheck.type = "tcp"; };
  apps.cache = { group = "services"; port = 6379; publish = 16379; nodes = [ "svc001" ]; unit = "redis-cache.service";
                 protocol = "tcp"; secrets = [ "cache-password" ]; healthCheck.type = "tcp"; };
}
