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
#
# With a volume (apps.<app>.volume) its data directory /var/lib/redis-<app> lives
# on it (<mountpoint>/redis-<app>, bind-mounted; modules/volumes.nix). With
# backup.enable, restic backs up that directory after a SAVE (docs/data.md).
{ config, lib, pkgs, ... }:
let
  cfg = config.nixInfra.valkey;
  node = config.nixInfra.node;
  app = config.nixInfra.apps.${cfg.app};
  hosted = config.nixInfra.apps ? ${cfg.app};
  volume = if hosted && app.volume != null then config.nixInfra.volumes.${app.volume} or null else null;
  dataDir = "/var/lib/redis-${cfg.app}";
  backupOptions = import ./backup-options.nix { inherit lib; app = cfg.app; what = "its data directory after a SAVE"; };
  inherit (lib) mkEnableOption mkIf mkOption types;
  inherit (import ../modules/retry.nix { inherit lib; }) retried;
in
{
  # standalone: the apps placed on this node and the node options it reads
  imports = [ ../modules/apps.nix ../modules/volumes.nix ../modules/backup.nix ];

  options.nixInfra.valkey = {
    enable = mkEnableOption "Valkey for the app named `app`, on the nodes that app is placed on" // { default = true; };
    app = mkOption { type = types.str; default = "valkey"; description = "The app's name in the cluster spec."; };
    passwordSecret = mkOption {
      type = types.str;
      default = "${cfg.app}-password";
      defaultText = lib.literalExpression "\"\${config.nixInfra.valkey.app}-password\"";
      description = "Secret holding the password clients must send (AUTH); one of the app's `secrets`.";
    };
    backup = backupOptions;
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

    nixInfra.volumeDirs.${cfg.app} = mkIf (volume != null) {
      path = dataDir;
      subdir = "redis-${cfg.app}";
      user = "redis-${cfg.app}";
      group = "redis-${cfg.app}";
    };

    nixInfra.backups.${cfg.app} = mkIf cfg.backup.enable {
      kind = "valkey";
      # restic reads the directory as root; the restore puts it back with its owners
      paths = [ dataDir ];
      unit = "redis-${cfg.app}.service";
      inherit (cfg.backup) repositorySecret passwordSecret sshKeySecret knownHosts schedule keep limitUploadKiB;
      environment = {
        NIX_INFRA_BACKUP_STAGE_DIR = if volume != null then "${volume.mountpoint}/.nix-infra-restore-${cfg.app}" else "/var/lib/.nix-infra-restore-${cfg.app}";
        NIX_INFRA_BACKUP_VALKEY_PORT = toString app.port;
        NIX_INFRA_BACKUP_VALKEY_PASSWORD_SECRET = cfg.passwordSecret;
      };
      packages = [ pkgs.valkey ];
    };

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
