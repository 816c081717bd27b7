# nixosModules.base: identity, hardened SSH from adminCidrs only, default-deny firewall, Nix settings
{ nix-infra, ... }:
{
  imports = [ nix-infra.nixosModules.base ];
  nixInfra.node = {
    enable = true;
    name = "web1";
    type = "worker";
    privateIp = "10.0.1.5";
    privateNetwork = "10.0.0.0/16";
    sshKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2 ops" ];
    adminCidrs = [ "198.51.100.0/24" ];
    firewall.private.tcp = [ 8080 ];
  };
}
