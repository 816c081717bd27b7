# Node type "service": the modules every service node runs. The node's data (its
# nixInfra.* option values) comes from lib via mkClusterFlake; the mesh proxy
# and the apps are enabled from that data (a node consuming no group runs no proxy).
{ lib, ... }:
{
  imports = [ ../modules ];
  nixInfra.node.enable = true;
  nixInfra.node.type = "service";
  nixInfra.hetzner.enable = lib.mkDefault true;
  # runs stateful services (app_modules/: postgresql, valkey, ...) for the mesh
  nixInfra.overlay.enable = lib.mkDefault true;
}
