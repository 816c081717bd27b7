# Node type "worker": the modules every worker node runs. The node's data (its
# nixInfra.* option values) comes from lib via mkClusterFlake; the mesh proxy
# and the apps are enabled from that data (a node consuming no group runs no proxy).
{ lib, ... }:
{
  imports = [ ../modules ];
  nixInfra.node.enable = true;
  nixInfra.node.type = "worker";
  nixInfra.hetzner.enable = lib.mkDefault true;
  # runs container apps; consumes services and backends through the mesh
  nixInfra.overlay.enable = lib.mkDefault true;
}
