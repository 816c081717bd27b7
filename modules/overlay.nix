# The encrypted overlay: flannel with its WireGuard backend, state in the
# cluster's etcd over TLS (the node's client certificate, from credentials),
# inter-node traffic on the private network. The WireGuard UDP port is opened
# on the private interface only (lib puts it in the node's private firewall ports).
{ config, lib, ... }:
let
  cfg = config.nixInfra.overlay;
  node = config.nixInfra.node;
  etcd = config.nixInfra.etcd;
  inherit (lib) mkEnableOption mkIf mkOption types;
  cred = name: "/run/credentials/flannel.service/${name}";
  mesh = import ../lib/mesh.nix;
in
{
  # standalone: the node and etcd options it reads
  imports = [ ./base.nix ./ctrl.nix ];

  options.nixInfra.overlay = {
    enable = mkEnableOption "the flannel overlay network with the WireGuard backend";

    network = mkOption {
      type = types.str;
      default = "10.244.0.0/16";
      description = "The overlay's address range; each node leases a /24 of it (lib: constants.overlay.network).";
    };

    port = mkOption {
      type = types.port;
      default = 51820;
      description = "WireGuard's UDP port (flannel-wg), reachable on the private interface only.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = builtins.elem cfg.port node.firewall.private.udp;
        message = "nixInfra.overlay.port ${toString cfg.port} is not among the node's private UDP ports; flannel peers could not reach it.";
      }
      {
        assertion = !(lib.hasInfix "/coreos.com/network/config" config.systemd.services.flannel.preStart);
        message = "systemd.services.flannel.preStart writes /coreos.com/network/config; the orchestrator seeds it and a node's etcd role may only read it.";
      }
    ];

    services.flannel = {
      enable = true;
      network = cfg.network;
      # peers talk over the private network, never the public one
      iface = node.privateInterface;
      publicIp = node.privateIp;
      storageBackend = "etcd";
      etcd = {
        endpoints = etcd.endpoints;
        caFile = cred "nix-infra-etcd-ca";
        certFile = cred "nix-infra-etcd-client-cert";
        keyFile = cred "nix-infra-etcd-client-key";
      };
      # what flannel reads is /coreos.com/network/config, which the orchestrator
      # seeds from lib (mesh.overlayConfig, the same attrs); set here only so the
      # upstream options say the same
      backend = (mesh.overlayConfig { inherit (cfg) network port; }).Backend;
    };

    systemd.services.flannel = {
      # upstream's preStart only puts /coreos.com/network/config (the network
      # and backend above) with the node's certificate before every start; the
      # orchestrator seeds that key with the admin certificate (`etcd seed`) and
      # the node's etcd role may only read it. flannel waits, retrying, until
      # the key is there; the runtime directory comes from serviceConfig.
      preStart = lib.mkForce "";
      serviceConfig.LoadCredentialEncrypted = map (n: "${n}:${node.credentialsDir}/${n}.cred") [
        "nix-infra-etcd-ca"
        "nix-infra-etcd-client-cert"
        "nix-infra-etcd-client-key"
      ];
      # fails until the credentials are delivered and etcd answers; upstream restarts
      # it every 10 s (Restart=always, RestartSec=10s), so it comes up by itself
    };
  };
}
