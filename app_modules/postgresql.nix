# PostgreSQL as a mesh service. In the cluster spec:
#
#   apps.db = { group = "services"; port = 5432; publish = 15432; nodes = [ "svc001" ];
#               unit = "postgresql.service"; protocol = "tcp"; secrets = [ "db-password" ]; };
#
# and in the flake: modules = [ nix-infra.appModules.postgresql ] with
#
#   nixInfra.postgresql = { app = "db"; database = "app"; user = "app"; passwordSecret = "db-password"; };
#
# PostgreSQL listens on 127.0.0.1 and the node's private IP at the app's port,
# accepts password logins (scram-sha-256) from the private network only, and
# sets the user's password from the secret (a credential; never in argv or the store).
#
# With a volume (apps.<app>.volume in the spec) the data directory lives on it
# (<mountpoint>/postgresql bind-mounted at /var/lib/postgresql; modules/volumes.nix)
# and postgresql.service requires that mount. With backup.enable, restic backs up
# a pg_dump of the database daily (modules/backup.nix, docs/data.md):
#
#   nixInfra.postgresql.backup = { enable = true; sshKeySecret = "db-backup-ssh-key";
#     knownHosts = "[u123456.your-storagebox.de]:23 ssh-ed25519 AAAA..."; };
#
# with the secrets db-backup-repository, db-backup-password (and the key) in the app's `secrets`.
{ config, lib, pkgs, ... }:
let
  cfg = config.nixInfra.postgresql;
  node = config.nixInfra.node;
  app = config.nixInfra.apps.${cfg.app};
  hosted = config.nixInfra.apps ? ${cfg.app};
  volume = if hosted && app.volume != null then config.nixInfra.volumes.${app.volume} or null else null;
  # the dump goes next to the data: on the volume when there is one
  dumpDir = if volume != null then "${volume.mountpoint}/backup/${cfg.app}" else "/var/lib/nix-infra-backup/${cfg.app}";
  backupOptions = import ./backup-options.nix { inherit lib; app = cfg.app; what = "a pg_dump of `database`"; };
  inherit (lib) mkEnableOption mkIf mkOption types;
  inherit (import ../modules/retry.nix { inherit lib; }) retried;
in
{
  # standalone: the apps placed on this node and the node options it reads
  imports = [ ../modules/apps.nix ../modules/volumes.nix ../modules/backup.nix ];

  options.nixInfra.postgresql = {
    enable = mkEnableOption "PostgreSQL for the app named `app`, on the nodes that app is placed on" // { default = true; };
    app = mkOption { type = types.str; default = "postgres"; description = "The app's name in the cluster spec."; };
    database = mkOption { type = types.str; default = "app"; description = "Database created for the consumers."; };
    user = mkOption { type = types.str; default = "app"; description = "Role that owns `database` and logs in with the password."; };
    passwordSecret = mkOption {
      type = types.str;
      default = "${cfg.app}-password";
      defaultText = lib.literalExpression "\"\${config.nixInfra.postgresql.app}-password\"";
      description = "Secret holding the role's password; it must be one of the app's `secrets` in the spec.";
    };
    package = mkOption {
      type = types.package;
      default = pkgs.postgresql_17;
      defaultText = lib.literalExpression "pkgs.postgresql_17";
      description = "PostgreSQL package (major upgrades need a dump and restore).";
    };
    backup = backupOptions;
  };

  config = lib.mkMerge [
  {
    # only the password unit reads the password; postgresql.service never does
    nixInfra.appCredentialUnits = mkIf cfg.enable { ${cfg.app} = [ "nix-infra-postgresql-password.service" ]; };
  }
  (mkIf (cfg.enable && hosted) {
    assertions = [
      {
        assertion = app.unit == "postgresql.service";
        message = "apps.${cfg.app}.unit must be \"postgresql.service\" in the cluster spec (it is ${app.unit}).";
      }
      {
        assertion = builtins.elem cfg.passwordSecret app.secrets;
        message = "apps.${cfg.app}.secrets must list ${cfg.passwordSecret} (nixInfra.postgresql.passwordSecret).";
      }
    ];

    # the data on the app's volume, where upstream's unit expects it
    nixInfra.volumeDirs.${cfg.app} = mkIf (volume != null) {
      path = "/var/lib/postgresql";
      subdir = "postgresql";
      user = "postgres";
      group = "postgres";
    };

    nixInfra.backups.${cfg.app} = mkIf cfg.backup.enable {
      kind = "postgresql";
      paths = [ dumpDir ];
      unit = "postgresql.service";
      inherit (cfg.backup) repositorySecret passwordSecret sshKeySecret knownHosts schedule keep limitUploadKiB;
      environment = {
        NIX_INFRA_BACKUP_DUMP_DIR = dumpDir;
        NIX_INFRA_BACKUP_PG_DATABASE = cfg.database;
        NIX_INFRA_BACKUP_PG_PORT = toString app.port;
      };
      packages = [ cfg.package ];
    };

    services.postgresql = {
      enable = true;
      package = cfg.package;
      enableTCPIP = true;
      settings = {
        port = app.port;
        listen_addresses = lib.mkForce "127.0.0.1,${node.privateIp}";
        password_encryption = "scram-sha-256";
      };
      authentication = lib.mkAfter ''
        host ${cfg.database} ${cfg.user} ${node.privateNetwork} scram-sha-256
      '';
      ensureDatabases = [ cfg.database ];
      ensureUsers = [ { name = cfg.user; ensureDBOwnership = cfg.user == cfg.database; } ];
    };

    # Sets the role's password after postgresql-setup.service created the role; restarted
    # with postgresql.service (PartOf), which a rotation of the secret restarts. The
    # password goes through psql's stdin and psql's environment only: never argv or the store.
    systemd.services.nix-infra-postgresql-password = {
      description = "nix-infra: set the password of PostgreSQL role ${cfg.user} from its credential";
      wantedBy = [ "postgresql.service" ];
      partOf = [ "postgresql.service" ];
      startLimitIntervalSec = 0;
      requires = [ "postgresql-setup.service" ];
      after = [ "postgresql-setup.service" ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        User = "postgres";
      }
      # fails until the orchestrator delivered the password, then succeeds by itself
      // retried;
      script = ''
        PGPW="$(< "$CREDENTIALS_DIRECTORY/${cfg.passwordSecret}")" \
          ${cfg.package}/bin/psql -v ON_ERROR_STOP=1 -p ${toString app.port} -d postgres <<'SQL'
        \getenv pw PGPW
        ALTER ROLE "${cfg.user}" WITH LOGIN PASSWORD :'pw';
        SQL
      '';
    };
  })
  ];
}
