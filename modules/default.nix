# Every nix-infra NixOS module; each is off until enabled (node_types/ do that).
{
  imports = [
    ./base.nix
    ./hetzner.nix
    ./ctrl.nix
    ./mesh.nix
    ./overlay.nix
    ./apps.nix
    ./ingress.nix
    ./registry.nix
    ./volumes.nix
    ./backup.nix
  ];
}
