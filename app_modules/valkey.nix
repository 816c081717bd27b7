# Valkey (the Redis fork) as a mesh service. In the cluster spec:
#
#   apps.cache = { group = "services"; port = 6379; publish = 16379; nodes = [ "svc001" ];
#                  unit = "redis-cache.service"; protocol = "tcp"; secrets = [ "cache-password" ]; };
#
# and in the flake: modules = [ nix-infra.appModules.valkey ] with
#
#   nixInfra.valkey = { app = "cache"; passwordSecret = "cache-password"; };
#
# It listens on 127.0.0.1 and the node's private IP and requires the password
# from the secret (read from the credential at start; never in the store).
{ config, lib, pkgs, ... }:
let
  cfg = config.nixInfra.valkey;
  node = config.nixInfra.node;
  app = config.nixInfra.apps.${cfg.app};
  hosted = config.nixInfra.apps ? ${cfg.app};
  inherit (lib) mkEnableOption mkIf mkOption types;
  inherit (import ../modules/retry.nix { inherit lib; }) retried;
in
{
  # standalone: the apps placed on this node and the node options it reads
  imports = [ ../modules/apps.nix ];

  options.nixInfra.valkey = {
    enable = mkEnableOption "Valkey for the app named `app`, on the nodes that app is placed on" // { default = true; };
    app = mkOption { type = types.str; default = "valkey"; description = "The app's name in the cluster spec."; };
    passwordSecret = mkOption {
      type = types.str;
      default = "${cfg.app}-password";
      defaultText = lib.literalExpression "\"\${config.nixInfra.valkey.app}-password\"";
      description = "Secret holding the password clients must send (AUTH); one of the app's `secrets`.";
    };
  };

  config = lib.mkMerge [
  {
    # the unit that reads the password loads it (ExecStartPre=+ reads requirePassFile as root)
    nixInfra.appCredentialUnits = mkIf cfg.enable { ${cfg.app} = [ "redis-${cfg.app}.service" ]; };
  }
  (mkIf (cfg.enable && hosted) {
    assertions = [
      {
        assertion = app.unit == "redis-${cfg.app}.service";
        message = "apps.${cfg.app}.unit must be \"redis-${cfg.app}.service\" in the cluster spec (it is ${app.unit}).";
      }
      {
        assertion = builtins.elem cfg.passwordSecret app.secrets;
        message = "apps.${cfg.app}.secrets must list ${cfg.passwordSecret} (nixInfra.valkey.passwordSecret).";
      }
    ];

    services.redis.package = pkgs.valkey;
    services.redis.servers.${cfg.app} = {
      enable = true;
      port = app.port;
      bind = "127.0.0.1 ${node.privateIp}";
      # a string, not a path: the credential systemd decrypts for this unit
      requirePassFile = "/run/credentials/redis-${cfg.app}.service/${cfg.passwordSecret}";
      appendOnly = true;
    };
    # until the orchestrator delivered the password the unit fails and retries, then
    # comes up by itself (upstream sets no Restart=)
    systemd.services."redis-${cfg.app}" = {
      serviceConfig = retried;
      startLimitIntervalSec = 0;
    };
  })
  ];
}
