# Node type "ctrl": the modules every ctrl node runs. The node's data (its
# nixInfra.* option values) comes from lib via mkClusterFlake; the mesh proxy
# and the apps are enabled from that data (a node consuming no group runs no proxy).
{ lib, ... }:
{
  imports = [ ../modules ];
  nixInfra.node.enable = true;
  nixInfra.node.type = "ctrl";
  nixInfra.hetzner.enable = lib.mkDefault true;
  # etcd member; no mesh proxy (ctrl nodes consume nothing), overlay for reachability
  nixInfra.etcd.server.enable = true;
  nixInfra.overlay.enable = lib.mkDefault true;
}
