# The control plane: etcd on a ctrl node, on its private IP and localhost only,
# TLS with client- and peer-certificate auth. Certificates and keys come from
# the credentials the orchestrator delivers (pki/nodes/<node>/{server,peer}),
# never from the Nix store. Also declares the cluster's etcd endpoints, which
# every etcd client on any node (mesh, overlay, apps) reads.
{ config, lib, pkgs, ... }:
let
  cfg = config.nixInfra.etcd;
  node = config.nixInfra.node;
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
  cred = name: "/run/credentials/etcd.service/${name}";
  credNames = [
    "nix-infra-etcd-ca"
    "nix-infra-etcd-server-cert"
    "nix-infra-etcd-server-key"
    "nix-infra-etcd-peer-cert"
    "nix-infra-etcd-peer-key"
  ];
in
{
  # standalone: the node options it reads
  imports = [ ./base.nix ];

  options.nixInfra.etcd = {
    endpoints = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "https://10.10.32.1:2379" ];
      description = "Client URLs of every etcd member (manifest `etcd.endpoints`), for every client on the node.";
    };
    members = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Names of the ctrl nodes, the etcd members (manifest `etcd.members`).";
    };
    initialCluster = mkOption {
      type = types.str;
      default = "";
      example = "ctrl001=https://10.10.32.1:2380";
      description = "The static bootstrap list `name=peerURL,...` (manifest `etcd.initialCluster`).";
    };
    clientPort = mkOption { type = types.port; default = 2379; description = "etcd's client port."; };
    peerPort = mkOption { type = types.port; default = 2380; description = "etcd's peer port."; };

    server.enable = mkEnableOption "an etcd member on this node (ctrl nodes)";
  };

  config = mkIf cfg.server.enable {
    assertions = [
      {
        assertion = builtins.elem node.name cfg.members;
        message = "nixInfra.etcd.server: ${node.name} is not one of the etcd members (${toString cfg.members}).";
      }
      {
        assertion = builtins.length cfg.members == 1 || builtins.length cfg.members >= 3;
        message = "nixInfra.etcd.members: etcd needs 1 member or 3 and more, got ${toString (builtins.length cfg.members)}.";
      }
    ];

    services.etcd = {
      enable = true;
      name = node.name;
      listenClientUrls = [
        "https://${node.privateIp}:${toString cfg.clientPort}"
        "https://127.0.0.1:${toString cfg.clientPort}"
      ];
      advertiseClientUrls = [ "https://${node.privateIp}:${toString cfg.clientPort}" ];
      listenPeerUrls = [ "https://${node.privateIp}:${toString cfg.peerPort}" ];
      initialAdvertisePeerUrls = [ "https://${node.privateIp}:${toString cfg.peerPort}" ];
      initialCluster = lib.splitString "," cfg.initialCluster;
      # a new cluster is bootstrapped once from the manifest; members join an existing one later
      initialClusterState = mkDefault "new";
      clientCertAuth = true;
      peerClientCertAuth = true;
      # strings, not paths: nothing is copied to the store; systemd provides the files
      trustedCaFile = cred "nix-infra-etcd-ca";
      certFile = cred "nix-infra-etcd-server-cert";
      keyFile = cred "nix-infra-etcd-server-key";
      peerTrustedCaFile = cred "nix-infra-etcd-ca";
      peerCertFile = cred "nix-infra-etcd-peer-cert";
      peerKeyFile = cred "nix-infra-etcd-peer-key";
      # the orchestrator seeds in transactions of up to 128 operations (etcd's default)
      extraConf.MAX_TXN_OPS = mkDefault "128";
    };

    # fails until the orchestrator delivered its certificates; upstream restarts it
    # every 30 s (Restart=always, RestartSec=30s), so it comes up by itself
    systemd.services.etcd.serviceConfig.LoadCredentialEncrypted =
      map (n: "${n}:${node.credentialsDir}/${n}.cred") credNames;
  };
}
