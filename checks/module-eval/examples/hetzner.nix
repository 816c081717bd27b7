# nixosModules.hetzner (brings disko's module): disk layout, GRUB, IPv4 by DHCP, the routed IPv6 /64
{ nix-infra, ... }:
{
  imports = [ nix-infra.nixosModules.hetzner ];
  nixInfra.hetzner = {
    enable = true;
    ipv6Network = "2a01:4f8:c17:b8f8::/64";
  };
}
