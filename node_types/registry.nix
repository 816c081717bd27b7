# Node type "registry": the modules every registry node runs. The node's data (its
# nixInfra.* option values) comes from lib via mkClusterFlake; the mesh proxy
# and the apps are enabled from that data (a node consuming no group runs no proxy).
{ lib, ... }:
{
  imports = [ ../modules ];
  nixInfra.node.enable = true;
  nixInfra.node.type = "registry";
  nixInfra.hetzner.enable = lib.mkDefault true;
  # container registry and Nix binary cache on the private network
  nixInfra.registry.enable = true;
  nixInfra.overlay.enable = lib.mkDefault true;
}
