# Backups of stateful apps with restic: for each entry of nixInfra.backups (an
# app module sets it from its `backup` options, e.g. nixInfra.postgresql.backup),
#
#   /etc/nix-infra/backup/<app>          the node wrapper: the app's settings (no
#                                        secret) around modules/scripts/backup.sh;
#                                        `nix-infra backup run|list|restore` calls it
#   nix-infra-backup-<app>.service       runs `<wrapper> run`: the consistent dump,
#                                        restic backup, forget --prune (retention)
#   nix-infra-backup-<app>.timer         on the schedule (Persistent: a missed run
#                                        runs at boot)
#
# The repository URL, its password and an SFTP key are secrets of the app (its
# `secrets` in the spec), delivered as credentials: the unit loads them
# (nixInfra.appCredentialUnits) and restic reads them from the credentials
# directory; over SSH the script decrypts them with systemd-creds. Never in the
# store, argv or the environment file. docs/data.md tells how to set them up.
{ config, lib, pkgs, ... }:
let
  cfg = config.nixInfra.backups;
  apps = config.nixInfra.apps;
  node = config.nixInfra.node;
  inherit (lib) mapAttrs' mkIf mkOption nameValuePair types;

  backupOptions = { name, ... }: {
    options = {
      kind = mkOption { type = types.enum [ "postgresql" "valkey" "files" ]; description = "How the app is dumped before and restored after (backup.sh)."; };
      paths = mkOption { type = types.nonEmptyListOf (types.strMatching "/[A-Za-z0-9._/-]+"); description = "What is backed up (on the app's volume)."; };
      unit = mkOption { type = types.str; description = "The app's unit (stopped during a restore, except PostgreSQL's)."; };
      repositorySecret = mkOption { type = types.str; default = "${name}-backup-repository"; description = "Secret holding restic's repository, e.g. sftp://u123456@u123456.your-storagebox.de:23//backups/<app>."; };
      passwordSecret = mkOption { type = types.str; default = "${name}-backup-password"; description = "Secret holding the repository's password."; };
      sshKeySecret = mkOption { type = types.nullOr types.str; default = null; description = "For an sftp: repository: secret holding the SSH private key."; };
      knownHosts = mkOption { type = types.lines; default = ""; description = "For an sftp: repository: known_hosts lines pinning the server's host key (required with sshKeySecret)."; };
      schedule = mkOption { type = types.str; default = "daily"; description = "When it runs (systemd OnCalendar=)."; };
      keep = {
        daily = mkOption { type = types.ints.unsigned; default = 7; description = "Daily snapshots kept."; };
        weekly = mkOption { type = types.ints.unsigned; default = 5; description = "Weekly snapshots kept."; };
        monthly = mkOption { type = types.ints.unsigned; default = 12; description = "Monthly snapshots kept."; };
      };
      limitUploadKiB = mkOption { type = types.nullOr types.ints.positive; default = null; description = "Upload limit in KiB/s."; };
      environment = mkOption { type = types.attrsOf types.str; default = { }; description = "More NIX_INFRA_BACKUP_* settings of the kind (database, port...)."; };
      packages = mkOption { type = types.listOf types.package; default = [ ]; description = "Tools the dump and restore need (pg_dump, valkey-cli...)."; };
    };
  };

  settings = name: b:
    {
      NIX_INFRA_BACKUP_APP = name;
      NIX_INFRA_BACKUP_KIND = b.kind;
      NIX_INFRA_BACKUP_PATHS = lib.concatStringsSep "\n" b.paths;
      NIX_INFRA_BACKUP_UNIT = b.unit;
      NIX_INFRA_BACKUP_REPOSITORY_SECRET = b.repositorySecret;
      NIX_INFRA_BACKUP_PASSWORD_SECRET = b.passwordSecret;
      NIX_INFRA_BACKUP_CREDENTIALS_DIR = node.credentialsDir;
      NIX_INFRA_BACKUP_KEEP_DAILY = toString b.keep.daily;
      NIX_INFRA_BACKUP_KEEP_WEEKLY = toString b.keep.weekly;
      NIX_INFRA_BACKUP_KEEP_MONTHLY = toString b.keep.monthly;
      RESTIC_CACHE_DIR = "/var/cache/nix-infra-restic/${name}";
    }
    // lib.optionalAttrs (b.sshKeySecret != null) {
      NIX_INFRA_BACKUP_SSH_KEY_SECRET = b.sshKeySecret;
      NIX_INFRA_BACKUP_SSH_KNOWN_HOSTS = "/etc/nix-infra/backup/${name}.known_hosts";
    }
    // lib.optionalAttrs (b.limitUploadKiB != null) { NIX_INFRA_BACKUP_LIMIT_UPLOAD = toString b.limitUploadKiB; }
    // b.environment;

  wrapper = name: b: pkgs.writeShellScript "nix-infra-backup-${name}" ''
    export PATH=${lib.makeBinPath ([ pkgs.restic pkgs.coreutils pkgs.util-linux pkgs.openssh pkgs.systemd pkgs.gnugrep pkgs.gnused pkgs.diffutils ] ++ b.packages)}
    ${lib.concatStringsSep "\n" (lib.mapAttrsToList (k: v: "export ${k}=${lib.escapeShellArg v}") (settings name b))}
    exec ${pkgs.bash}/bin/bash ${./scripts/backup.sh} "$@"
  '';
in
{
  # standalone: the apps placed on this node and the node options it reads
  imports = [ ./apps.nix ];

  options.nixInfra.backups = mkOption {
    type = types.attrsOf (types.submodule backupOptions);
    default = { };
    description = "Restic backups by app name (an app module sets them from its `backup` options).";
  };

  config = mkIf (cfg != { }) {
    assertions = lib.concatLists (lib.mapAttrsToList (name: b: [
      {
        assertion = apps ? ${name};
        message = "nixInfra.backups.${name}: no app ${name} on this node.";
      }
      {
        assertion = apps ? ${name} -> lib.all (s: builtins.elem s apps.${name}.secrets)
          ([ b.repositorySecret b.passwordSecret ] ++ lib.optional (b.sshKeySecret != null) b.sshKeySecret);
        message = "apps.${name}.secrets must list the backup's secrets: ${lib.concatStringsSep ", " ([ b.repositorySecret b.passwordSecret ] ++ lib.optional (b.sshKeySecret != null) b.sshKeySecret)}.";
      }
      {
        assertion = b.sshKeySecret != null -> b.knownHosts != "";
        message = "nixInfra.backups.${name}: sshKeySecret needs knownHosts (the SFTP server's host key, pinned).";
      }
    ]) cfg);

    # the backup unit reads the app's credentials (the repository and its password)
    nixInfra.appCredentialUnits = lib.mapAttrs (name: _: [ "nix-infra-backup-${name}.service" ]) cfg;

    environment.etc = lib.mkMerge (lib.mapAttrsToList (name: b: {
      "nix-infra/backup/${name}" = { source = wrapper name b; mode = "0700"; };
    } // lib.optionalAttrs (b.knownHosts != "") {
      "nix-infra/backup/${name}.known_hosts".text = b.knownHosts;
    }) cfg);

    systemd.services = mapAttrs' (name: b: nameValuePair "nix-infra-backup-${name}" {
      description = "nix-infra: back up ${name} with restic";
      wants = [ b.unit "network-online.target" ];
      after = [ b.unit "network-online.target" ];
      unitConfig.RequiresMountsFor = b.paths;
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${wrapper name b} run";
        CacheDirectory = "nix-infra-restic/${name}";
        Nice = 10;
        IOSchedulingClass = "idle";
      };
    }) cfg;

    systemd.timers = mapAttrs' (name: b: nameValuePair "nix-infra-backup-${name}" {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = b.schedule;
        Persistent = true;
        RandomizedDelaySec = "15m";
      };
    }) cfg;
  };
}
