# Node type "worker": the composition of modules every worker node runs.
# Later capabilities (etcd, mesh, overlay, apps, ingress, registry) add
# their modules here.
{ ... }:
{
  imports = [ ../modules/node.nix ../modules/hetzner.nix ];
  nixInfra.node.enable = true;
  nixInfra.node.type = "worker";
}
