# nixosModules.mesh: confd (etcd v3, TLS) renders the mesh haproxy on 127.0.0.1 (brings base, ctrl's options)
{ nix-infra, ... }:
{
  imports = [ nix-infra.nixosModules.mesh ];
  nixInfra.etcd.endpoints = [ "https://10.0.0.10:2379" ];
  nixInfra.mesh = {
    enable = true;
    template = nix-infra.lib.confd.haproxyTemplate "web1";
    emptyConfig = nix-infra.lib.confd.header;
  };
}
