# The registry node: a container registry and the cluster's Nix binary cache,
# both listening on the private network only. The cache signs with the
# `nix-infra-cache-key` secret, delivered as a credential (never in the store).
{ config, lib, ... }:
let
  cfg = config.nixInfra.registry;
  node = config.nixInfra.node;
  inherit (lib) mkEnableOption mkIf mkOption types;
  inherit (import ./retry.nix { inherit lib; }) retried;
in
{
  # standalone: the node options it reads
  imports = [ ./base.nix ];

  options.nixInfra.registry = {
    enable = mkEnableOption "the container registry and Nix binary cache on the private network";

    registryPort = mkOption { type = types.port; default = 5000; description = "Container registry port (lib: ports.registry)."; };
    cachePort = mkOption { type = types.port; default = 5080; description = "Nix binary cache port (lib: ports.binaryCache)."; };
  };

  config = mkIf cfg.enable {
    services.dockerRegistry = {
      enable = true;
      listenAddress = node.privateIp;
      port = cfg.registryPort;
      # old image layers are collected; the registry is a cache of what the cluster runs
      enableGarbageCollect = true;
    };

    services.nix-serve = {
      enable = true;
      bindAddress = node.privateIp;
      port = cfg.cachePort;
      # the key comes as an encrypted credential below, not as a file path the module would load
      secretKeyFile = null;
    };
    systemd.services.nix-serve = {
      environment.NIX_SECRET_KEY_FILE = "/run/credentials/nix-serve.service/nix-infra-cache-key";
      serviceConfig.LoadCredentialEncrypted = [ "nix-infra-cache-key:${node.credentialsDir}/nix-infra-cache-key.cred" ];
      # fails until the orchestrator delivered the key; upstream restarts it every
      # 5 s (Restart=always), so it comes up by itself
    };
    # binds the private IP (base.nix allows that before DHCP configured it); recovers from a failed start
    systemd.services.docker-registry = {
      serviceConfig = retried;
      startLimitIntervalSec = 0;
    };
  };
}
