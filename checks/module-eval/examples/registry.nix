# nixosModules.registry: container registry and Nix binary cache on the private IP (brings base)
{ nix-infra, ... }:
{
  imports = [ nix-infra.nixosModules.registry ];
  nixInfra.node.privateIp = "10.0.5.1";
  nixInfra.registry.enable = true;
}
