# Node type "ingress": the modules every ingress node runs. The node's data (its
# nixInfra.* option values) comes from lib via mkClusterFlake; the mesh proxy
# and the apps are enabled from that data (a node consuming no group runs no proxy).
{ lib, ... }:
{
  imports = [ ../modules ];
  nixInfra.node.enable = true;
  nixInfra.node.type = "ingress";
  nixInfra.hetzner.enable = lib.mkDefault true;
  # public HTTPS for the frontends, via the mesh proxy on 127.0.0.1
  nixInfra.ingress.enable = true;
  nixInfra.overlay.enable = lib.mkDefault true;
}
