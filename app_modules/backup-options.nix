# The `backup` options of an app module (nixInfra.postgresql.backup, nixInfra.valkey.backup):
# what modules/backup.nix needs, with the defaults a user expects (daily; 7 daily,
# 5 weekly, 12 monthly snapshots kept). docs/data.md describes the set-up.
{ lib, app, what }:
let
  inherit (lib) mkEnableOption mkOption types;
in
{
  enable = mkEnableOption "restic backups of ${what} (docs/data.md)";
  repositorySecret = mkOption {
    type = types.str;
    default = "${app}-backup-repository";
    description = "Secret holding restic's repository (any restic backend), e.g. `sftp://u123456@u123456.your-storagebox.de:23//backups/${app}`; one of the app's `secrets`.";
  };
  passwordSecret = mkOption {
    type = types.str;
    default = "${app}-backup-password";
    description = "Secret holding the repository's password; one of the app's `secrets`. Keep a copy off the cluster: without it the backups cannot be read.";
  };
  sshKeySecret = mkOption {
    type = types.nullOr types.str;
    default = null;
    description = "For an sftp: repository (a Hetzner Storage Box): secret holding the SSH private key; one of the app's `secrets`.";
  };
  knownHosts = mkOption {
    type = types.lines;
    default = "";
    example = "[u123456.your-storagebox.de]:23 ssh-ed25519 AAAAC3Nza...";
    description = "With sshKeySecret: known_hosts lines pinning the SFTP server's host key.";
  };
  schedule = mkOption { type = types.str; default = "daily"; description = "When the backup runs (systemd OnCalendar=)."; };
  keep = {
    daily = mkOption { type = types.ints.unsigned; default = 7; description = "Daily snapshots kept."; };
    weekly = mkOption { type = types.ints.unsigned; default = 5; description = "Weekly snapshots kept."; };
    monthly = mkOption { type = types.ints.unsigned; default = 12; description = "Monthly snapshots kept."; };
  };
  limitUploadKiB = mkOption { type = types.nullOr types.ints.positive; default = null; description = "Upload limit in KiB/s (null: none)."; };
}
