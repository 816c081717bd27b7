# nixosModules.default: every module, each off until enabled
{ nix-infra, ... }:
{
  imports = [ nix-infra.nixosModules.default ];
}
