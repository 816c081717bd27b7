# Node type "ctrl": the composition of modules every ctrl node runs.
# Later capabilities (etcd, mesh, overlay, apps, ingress, registry) add
# their modules here.
{ ... }:
{
  imports = [ ../modules/node.nix ../modules/hetzner.nix ];
  nixInfra.node.enable = true;
  nixInfra.node.type = "ctrl";
}
