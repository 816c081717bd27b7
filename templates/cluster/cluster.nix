# The whole cluster: nodes, apps, secrets. Every field is described in
# nix-infra's docs/cluster-spec.md.
{
  name = "demo";
  provider = {
    type = "hetzner";
    location = "fsn1";
    networkZone = "eu-central";
    network = "10.10.0.0/16";
    image = "debian-12";
    # Placeholders: plan/provision/deploy refuse them against the real API ("replace this
    # placeholder"): your public key (~/.ssh/id_ed25519.pub), the addresses you administer from.
    sshKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2 ops@laptop" ];
    adminCidrs = [ "203.0.113.0/24" ];
  };
  nodes.ctrl001 = { type = "ctrl"; serverType = "cx22"; };
  nodes.worker001 = { type = "worker"; serverType = "cpx21"; location = "nbg1"; };
  apps.api = {
    group = "backends";
    port = 8080;
    publish = 5001;
    nodes = [ "worker001" ];
    envPrefix = "API";
    image = "ghcr.io/acme/api:1.4";
    secrets = [ "api-token" ];
  };
}
