# nixosModules.ctrl: an etcd member with TLS from credentials (brings base)
{ nix-infra, ... }:
{
  imports = [ nix-infra.nixosModules.ctrl ];
  nixInfra.node = {
    enable = true;
    name = "ctrl1";
    type = "ctrl";
    privateIp = "10.0.0.10";
    privateNetwork = "10.0.0.0/16";
    sshKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2 ops" ];
    adminCidrs = [ "198.51.100.0/24" ];
    firewall.private.tcp = [ 2379 2380 ];
  };
  nixInfra.etcd = {
    server.enable = true;
    members = [ "ctrl1" ];
    endpoints = [ "https://10.0.0.10:2379" ];
    initialCluster = "ctrl1=https://10.0.0.10:2380";
  };
}
