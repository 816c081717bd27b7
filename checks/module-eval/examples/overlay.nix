# nixosModules.overlay: flannel with WireGuard over the private network, state in etcd
{ nix-infra, ... }:
{
  imports = [ nix-infra.nixosModules.overlay ];
  nixInfra.node = {
    privateIp = "10.0.1.5";
    firewall.private.udp = [ 51820 ];
  };
  nixInfra.etcd.endpoints = [ "https://10.0.0.10:2379" ];
  nixInfra.overlay.enable = true;
}
