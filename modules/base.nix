# The base of every nix-infra node: identity, hardened SSH, a default-deny
# firewall, Nix settings, the credentials directory and journald limits.
# It only maps the data lib computed ((evalCluster spec).nodes.<name>.config.node)
# onto NixOS options.
{ config, lib, ... }:
let
  cfg = config.nixInfra.node;
  inherit (lib) concatStringsSep mkDefault mkEnableOption mkIf mkOption types;
  portSet = types.submodule {
    options = {
      tcp = mkOption { type = types.listOf types.port; default = [ ]; description = "TCP ports."; };
      udp = mkOption { type = types.listOf types.port; default = [ ]; description = "UDP ports."; };
    };
  };
  # SSH is reachable from adminCidrs only: the public port list lib derives
  # includes 22, which the nftables rule below opens per source instead.
  publicTcp = builtins.filter (p: p != 22) cfg.firewall.public.tcp;
  v4 = builtins.filter (c: builtins.match ".*:.*" c == null) cfg.adminCidrs;
  v6 = builtins.filter (c: builtins.match ".*:.*" c != null) cfg.adminCidrs;
in
{
  options.nixInfra.node = {
    enable = mkEnableOption "the nix-infra node base (identity, SSH, firewall, Nix settings)";

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

    privateNetwork = mkOption {
      type = types.str;
      example = "10.10.0.0/16";
      description = "The cluster's private network (provider.network); services trust clients from it.";
    };

    privateInterface = mkOption {
      type = types.str;
      default = "enp7s0";
      description = ''
        The interface of the private network; cluster ports open only here.
        Hetzner attaches the first private network as enp7s0 on its current
        server types (check `ip link` on an older type).
      '';
    };

    firewall = mkOption {
      type = types.submodule {
        options = {
          public = mkOption { type = portSet; default = { }; description = "Ports open on every interface (SSH: adminCidrs only)."; };
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

    adminCidrs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "203.0.113.0/24" ];
      description = "Networks allowed to reach SSH (provider.adminCidrs); nobody else can connect.";
    };

    binaryCache = {
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "http://10.10.160.1:5001";
        description = "The cluster's own Nix binary cache (a registry node), used as a substituter.";
      };
      publicKey = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "The public key the cluster cache signs with, trusted by every node.";
      };
    };

    credentialsDir = mkOption {
      type = types.str;
      default = "/var/lib/nix-infra/credentials";
      description = "Where the orchestrator writes the node's encrypted credentials (systemd-creds, root only).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.sshKeys != [ ];
        message = "nixInfra.node.sshKeys is empty: nobody could log in to ${cfg.name}; set provider.sshKeys in the cluster spec.";
      }
      {
        assertion = cfg.adminCidrs != [ ];
        message = "nixInfra.node.adminCidrs is empty: SSH to ${cfg.name} would be closed to everyone; set provider.adminCidrs.";
      }
      {
        assertion = (cfg.binaryCache.url == null) == (cfg.binaryCache.publicKey == null);
        message = "nixInfra.node.binaryCache: set both url and publicKey, or neither.";
      }
    ];

    networking.hostName = mkDefault cfg.name;

    # Default deny; open exactly what lib derived. nftables, for per-source SSH rules.
    networking.nftables.enable = mkDefault true;
    networking.firewall.enable = mkDefault true;
    networking.firewall.allowedTCPPorts = publicTcp;
    networking.firewall.allowedUDPPorts = cfg.firewall.public.udp;
    networking.firewall.interfaces.${cfg.privateInterface} = {
      allowedTCPPorts = cfg.firewall.private.tcp;
      allowedUDPPorts = cfg.firewall.private.udp;
    };
    networking.firewall.extraInputRules = lib.concatStrings [
      (lib.optionalString (v4 != [ ]) "ip saddr { ${concatStringsSep ", " v4} } tcp dport 22 accept\n")
      (lib.optionalString (v6 != [ ]) "ip6 saddr { ${concatStringsSep ", " v6} } tcp dport 22 accept\n")
    ];

    services.openssh = {
      enable = true;
      # the rule above opens port 22 to adminCidrs only
      openFirewall = false;
      # only the ed25519 host key: it is the one nix-infra pins (facts/known_hosts)
      hostKeys = mkDefault [ { type = "ed25519"; path = "/etc/ssh/ssh_host_ed25519_key"; } ];
      settings = {
        # keys only: the orchestrator and operators authenticate with keys
        PasswordAuthentication = mkDefault false;
        KbdInteractiveAuthentication = mkDefault false;
        PermitRootLogin = mkDefault "prohibit-password";
        # modern algorithms only (post-quantum hybrid key exchange first)
        KexAlgorithms = mkDefault [ "mlkem768x25519-sha256" "sntrup761x25519-sha512@openssh.com" "curve25519-sha256" ];
        Ciphers = mkDefault [ "chacha20-poly1305@openssh.com" "aes256-gcm@openssh.com" "aes128-gcm@openssh.com" ];
        Macs = mkDefault [ "hmac-sha2-512-etm@openssh.com" "hmac-sha2-256-etm@openssh.com" ];
      };
    };
    users.users.root.openssh.authorizedKeys.keys = cfg.sshKeys;

    nix.settings = {
      # flakes, for `nix` on the node; systems are built by the operator and copied
      experimental-features = mkDefault [ "nix-command" "flakes" ];
      trusted-users = mkDefault [ "root" ];
      substituters = lib.optional (cfg.binaryCache.url != null) cfg.binaryCache.url;
      trusted-public-keys = lib.optional (cfg.binaryCache.publicKey != null) cfg.binaryCache.publicKey;
    };

    # the orchestrator's credentials: root only, created before any unit loads one
    systemd.tmpfiles.rules = [ "d ${cfg.credentialsDir} 0700 root root -" ];

    # bounded logs: small disks on small servers
    services.journald.settings.Journal = {
      SystemMaxUse = mkDefault "1G";
      MaxRetentionSec = mkDefault "30day";
    };

    # Services bind the private IP (etcd, PostgreSQL, Valkey, the registry), which
    # Hetzner's DHCP may configure after network.target: let them bind it before it exists.
    boot.kernel.sysctl."net.ipv4.ip_nonlocal_bind" = mkDefault 1;
  };
}
