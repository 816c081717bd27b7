# The base of every nix-infra node: identity, SSH access, firewall ports and
# Nix settings. It only maps the per-node data lib/ computed
# ((evalCluster spec).nodes.<name>) onto NixOS options.
{ config, lib, ... }:
let
  cfg = config.nixInfra.node;
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
  portSet = types.submodule {
    options = {
      tcp = mkOption { type = types.listOf types.port; default = [ ]; description = "TCP ports."; };
      udp = mkOption { type = types.listOf types.port; default = [ ]; description = "UDP ports."; };
    };
  };
in
{
  options.nixInfra.node = {
    enable = mkEnableOption "the nix-infra node base (identity, SSH, firewall)";

    name = mkOption {
      type = types.strMatching "[a-z]([-a-z0-9]{0,61}[a-z0-9])?";
      description = "The node's name in the cluster spec; becomes its host name.";
    };

    type = mkOption {
      type = types.enum [ "ctrl" "worker" "service" "ingress" "registry" ];
      description = "The node type, as in the cluster spec.";
    };

    privateIp = mkOption {
      type = types.str;
      example = "10.10.64.1";
      description = "The node's address on the cluster's private network (from lib).";
    };

    privateInterface = mkOption {
      type = types.str;
      # Hetzner attaches the first private network as enp7s0 on current server types.
      default = "enp7s0";
      description = "The interface of the private network; private firewall ports open only here.";
    };

    firewall = mkOption {
      type = types.submodule {
        options = {
          public = mkOption { type = portSet; default = { }; description = "Ports open on every interface."; };
          private = mkOption { type = portSet; default = { }; description = "Ports open on the private interface only."; };
        };
      };
      default = { };
      description = "Firewall ports of this node, as derived by lib (manifest field `firewall`).";
    };

    sshKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Operator SSH public keys allowed to log in as root (provider.sshKeys).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.sshKeys != [ ];
        message = "nixInfra.node.sshKeys is empty: nobody could log in to ${cfg.name}; set provider.sshKeys in the cluster spec.";
      }
    ];

    networking.hostName = mkDefault cfg.name;

    # Deny by default; open exactly what lib derived.
    networking.firewall.enable = mkDefault true;
    networking.firewall.allowedTCPPorts = cfg.firewall.public.tcp;
    networking.firewall.allowedUDPPorts = cfg.firewall.public.udp;
    networking.firewall.interfaces.${cfg.privateInterface} = {
      allowedTCPPorts = cfg.firewall.private.tcp;
      allowedUDPPorts = cfg.firewall.private.udp;
    };

    services.openssh = {
      enable = true;
      # Keys only: the orchestrator and operators authenticate with keys.
      settings.PasswordAuthentication = mkDefault false;
      settings.KbdInteractiveAuthentication = mkDefault false;
      settings.PermitRootLogin = mkDefault "prohibit-password";
    };
    users.users.root.openssh.authorizedKeys.keys = cfg.sshKeys;

    # Systems are built on the operator's machine and copied; nodes never build.
    nix.settings.experimental-features = mkDefault [ "nix-command" "flakes" ];
    nix.settings.trusted-users = mkDefault [ "root" ];
  };
}
