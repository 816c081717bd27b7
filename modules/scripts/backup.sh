#!/usr/bin/env bash
# nix-infra backup: back up, list and restore one stateful app's data with restic.
#
#   backup.sh run                                   dump (consistent), restic backup, forget/prune
#   backup.sh list                                  the app's snapshots, as restic's JSON
#   backup.sh restore [--snapshot ID] [--to PATH]   restore (default: the latest snapshot)
#   backup.sh check                                 restic check of the repository
#
# One implementation: the NixOS module (app_modules/postgresql.nix, valkey.nix)
# runs it from its backup unit and the node wrapper /etc/nix-infra/backup/<app>
# that `nix-infra backup` calls; the tests run it on the local fleet.
#
# Configuration (environment; no secret in it):
#   NIX_INFRA_BACKUP_APP              the app's name (snapshots are tagged app=<name>)
#   NIX_INFRA_BACKUP_KIND             postgresql | valkey | files
#   NIX_INFRA_BACKUP_PATHS            the paths backed up, one per line (absolute; on the app's volume)
#   NIX_INFRA_BACKUP_DUMP_DIR         postgresql: where the dump goes (one of the paths)
#   NIX_INFRA_BACKUP_UNIT             the app's unit (valkey/files: stopped during a restore)
#   NIX_INFRA_BACKUP_REPOSITORY_SECRET, NIX_INFRA_BACKUP_PASSWORD_SECRET
#                                     credentials holding restic's repository URL and password
#   NIX_INFRA_BACKUP_SSH_KEY_SECRET   optional: credential holding the SSH key of an sftp: repository
#   NIX_INFRA_BACKUP_SSH_KNOWN_HOSTS  with it: the known_hosts file pinning the SFTP server's key
#   NIX_INFRA_BACKUP_KEEP_DAILY/_WEEKLY/_MONTHLY   retention (default 7, 5, 12)
#   NIX_INFRA_BACKUP_LIMIT_UPLOAD     optional: upload limit in KiB/s
#   NIX_INFRA_BACKUP_LOCK_DIR         optional: where the app's lock file is (default /run)
#   NIX_INFRA_BACKUP_STAGE_DIR        optional: where a restore unpacks first (default: <first path>.nix-infra-restore)
#   NIX_INFRA_BACKUP_PG_DATABASE      postgresql: the database dumped and restored
#   NIX_INFRA_BACKUP_PG_PORT          postgresql: its port (unix socket in /run/postgresql)
#   NIX_INFRA_BACKUP_DB_USER          the OS user pg_dump/pg_restore run as (default postgres)
#   NIX_INFRA_BACKUP_VALKEY_PORT, NIX_INFRA_BACKUP_VALKEY_PASSWORD_SECRET   valkey: SAVE before the backup
#
# Credentials are read from $CREDENTIALS_DIRECTORY (in a unit that loads them)
# or decrypted with systemd-creds from /var/lib/nix-infra/credentials (over
# SSH). The password reaches restic through RESTIC_PASSWORD_COMMAND/FILE and the
# repository through its environment: never argv, never a file on disk (an SSH
# key is staged in a private directory under /run, removed on exit).
#
# Crash safety: restic never leaves a repository half-written (data first, the
# snapshot last); a killed run leaves at most unreferenced data and a stale lock,
# which the next run removes (restic unlock) before it backs up. The dump is
# written to a temporary file and renamed, so the previous dump stays whole.
set -euo pipefail
cd / # the database's user runs commands here too

die() { echo "nix-infra backup: $*" >&2; exit 2; }
log() { echo "nix-infra backup[$app]: $*" >&2; }

app=${NIX_INFRA_BACKUP_APP:-}
kind=${NIX_INFRA_BACKUP_KIND:-files}
[[ $app =~ ^[a-z][a-z0-9-]{0,62}$ ]] || die "NIX_INFRA_BACKUP_APP must be an app name (got '${app}')"
case "$kind" in postgresql | valkey | files) ;; *) die "NIX_INFRA_BACKUP_KIND must be postgresql, valkey or files (got '$kind')" ;; esac
mapfile -t paths < <(printf '%s\n' "${NIX_INFRA_BACKUP_PATHS:-}" | sed '/^$/d')
((${#paths[@]})) || die "NIX_INFRA_BACKUP_PATHS names no path"
for p in "${paths[@]}"; do [[ $p == /* && $p != *..* ]] || die "NIX_INFRA_BACKUP_PATHS: '$p' is not an absolute path"; done
creds_dir=${NIX_INFRA_BACKUP_CREDENTIALS_DIR:-/var/lib/nix-infra/credentials}
db_user=${NIX_INFRA_BACKUP_DB_USER:-postgres}

private=$(mktemp -d /run/nix-infra-backup.XXXXXX)
chmod 700 "$private"
trap 'rm -rf -- "$private"' EXIT

# secret NAME: the credential's content on stdout
secret() {
  [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad credential name '$1'"
  if [ -n "${CREDENTIALS_DIRECTORY:-}" ] && [ -r "$CREDENTIALS_DIRECTORY/$1" ]; then
    cat -- "$CREDENTIALS_DIRECTORY/$1"
  elif [ -r "$creds_dir/$1.cred" ]; then
    systemd-creds decrypt --name="$1" -- "$creds_dir/$1.cred" - ||
      die "credential $1 ($creds_dir/$1.cred) does not decrypt"
  else
    die "credential $1 is not on this node: set it (nix-infra secrets set) and deploy"
  fi
}

repo_secret=${NIX_INFRA_BACKUP_REPOSITORY_SECRET:-}
pass_secret=${NIX_INFRA_BACKUP_PASSWORD_SECRET:-}
[ -n "$repo_secret" ] || die "NIX_INFRA_BACKUP_REPOSITORY_SECRET is not set"
[ -n "$pass_secret" ] || die "NIX_INFRA_BACKUP_PASSWORD_SECRET is not set"
RESTIC_REPOSITORY=$(secret "$repo_secret")
[ -n "$RESTIC_REPOSITORY" ] || die "credential $repo_secret (the repository) is empty"
export RESTIC_REPOSITORY
unset RESTIC_PASSWORD RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND RESTIC_REPOSITORY_FILE
if [ -n "${CREDENTIALS_DIRECTORY:-}" ] && [ -r "$CREDENTIALS_DIRECTORY/$pass_secret" ]; then
  export RESTIC_PASSWORD_FILE="$CREDENTIALS_DIRECTORY/$pass_secret"
else
  secret "$pass_secret" >/dev/null # fails clearly now, not inside restic
  export RESTIC_PASSWORD_COMMAND="systemd-creds decrypt --name=$pass_secret -- $creds_dir/$pass_secret.cred -"
fi
export RESTIC_CACHE_DIR=${RESTIC_CACHE_DIR:-/var/cache/nix-infra-restic/$app}
export RESTIC_PROGRESS_FPS=${RESTIC_PROGRESS_FPS:-0.2} # a progress line every 5 s, on a terminal or not

restic_opts=()
if [ -n "${NIX_INFRA_BACKUP_SSH_KEY_SECRET:-}" ]; then
  [[ $RESTIC_REPOSITORY == sftp:* ]] || die "an SSH key is set but the repository is not sftp:"
  known=${NIX_INFRA_BACKUP_SSH_KNOWN_HOSTS:-}
  [ -n "$known" ] && [ -r "$known" ] || die "NIX_INFRA_BACKUP_SSH_KNOWN_HOSTS must name the known_hosts file of the SFTP server"
  (umask 077 && secret "$NIX_INFRA_BACKUP_SSH_KEY_SECRET" > "$private/ssh_key")
  rest=${RESTIC_REPOSITORY#sftp:}
  if [[ $rest == //* ]]; then rest=${rest#//}; target=${rest%%/*}; else target=${rest%%:*}; fi
  port=22
  if [[ ${target#*@} == *:* ]]; then port=${target##*:}; target=${target%:*}; fi
  [[ $port =~ ^[0-9]+$ && $target =~ ^[A-Za-z0-9._@-]+$ ]] || die "cannot read user@host[:port] from the sftp: repository"
  restic_opts+=(-o "sftp.command=ssh -F /dev/null -i $private/ssh_key -o IdentitiesOnly=yes -o UserKnownHostsFile=$known -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ServerAliveInterval=15 -p $port $target -s sftp")
fi
limit=${NIX_INFRA_BACKUP_LIMIT_UPLOAD:-}
[[ -z $limit || $limit =~ ^[1-9][0-9]{0,8}$ ]] || die "NIX_INFRA_BACKUP_LIMIT_UPLOAD must be KiB/s (a positive integer)"
r() { restic "${restic_opts[@]}" ${limit:+--limit-upload "$limit"} "$@"; }

# the repository exists and opens with this password; else, with `init` (a backup run),
# it is created (restic init refuses to overwrite one), otherwise this fails clearly
ensure_repository() {
  local err
  if err=$(r cat config 2>&1 >/dev/null); then return 0; fi
  if grep -q 'wrong password' <<<"$err"; then
    die "the repository's password is wrong (credential $pass_secret): $err"
  elif grep -qiE 'Is there a repository at the following location|does not exist|no such file' <<<"$err"; then
    [ "${1:-}" = init ] || die "there is no repository yet (no backup of $app has run): $err"
    log "initialising the repository"
    r init >/dev/null
  else
    die "cannot open the repository: $err"
  fi
}

# psql/pg_dump as the database's OS user (peer authentication on the unix socket)
as_db() { runuser -u "$db_user" -- "$@"; }

dump() {
  case "$kind" in
    postgresql)
      local dir=${NIX_INFRA_BACKUP_DUMP_DIR:?NIX_INFRA_BACKUP_DUMP_DIR is not set} db=${NIX_INFRA_BACKUP_PG_DATABASE:?NIX_INFRA_BACKUP_PG_DATABASE is not set}
      local pgport=${NIX_INFRA_BACKUP_PG_PORT:-5432}
      install -d -m 0700 -o "$db_user" -- "$dir"
      log "pg_dump of database $db"
      as_db pg_dump --host=/run/postgresql --port="$pgport" --format=custom --file="$dir/$db.dump.tmp" -- "$db"
      as_db pg_dumpall --host=/run/postgresql --port="$pgport" --globals-only --file="$dir/globals.sql.tmp"
      mv -- "$dir/$db.dump.tmp" "$dir/$db.dump"
      mv -- "$dir/globals.sql.tmp" "$dir/globals.sql"
      sync -- "$dir/$db.dump" "$dir/globals.sql"
      ;;
    valkey)
      local vport=${NIX_INFRA_BACKUP_VALKEY_PORT:?NIX_INFRA_BACKUP_VALKEY_PORT is not set}
      log "valkey SAVE"
      REDISCLI_AUTH=$(secret "${NIX_INFRA_BACKUP_VALKEY_PASSWORD_SECRET:?}") valkey-cli -h 127.0.0.1 -p "$vport" SAVE >/dev/null
      ;;
    files) ;;
  esac
}

snapshot_of() { # the snapshot ID (default: the app's latest)
  if [ -n "$1" ]; then
    [[ $1 =~ ^[0-9a-f]{8,64}$ || $1 == latest ]] || die "--snapshot must be a snapshot ID (hex) or latest"
    echo "$1"
  else echo latest; fi
}

cmd=${1:-}
shift || true

# one run, restore or check of an app at a time (the timer's and `nix-infra backup`'s):
# they would write the same dump and fight over restic's exclusive lock
exclusive() {
  exec 9>"${NIX_INFRA_BACKUP_LOCK_DIR:-/run}/nix-infra-backup-$app.lock"
  flock -n 9 || die "another backup, restore or check of $app is running on this node; try again when it is done"
}
case "$cmd" in
  run)
    [ $# -eq 0 ] || die "run takes no arguments"
    exclusive
    ensure_repository init
    r unlock >/dev/null 2>&1 || true # removes only stale locks (a killed run's)
    dump
    start=$(date +%s)
    log "restic backup of ${paths[*]}"
    r backup --tag nix-infra --tag "app=$app" --host "$(cat /proc/sys/kernel/hostname)" -- "${paths[@]}"
    log "restic forget --prune (daily ${NIX_INFRA_BACKUP_KEEP_DAILY:-7}, weekly ${NIX_INFRA_BACKUP_KEEP_WEEKLY:-5}, monthly ${NIX_INFRA_BACKUP_KEEP_MONTHLY:-12})"
    r forget --prune --tag "app=$app" --group-by host,tags \
      --keep-daily "${NIX_INFRA_BACKUP_KEEP_DAILY:-7}" --keep-weekly "${NIX_INFRA_BACKUP_KEEP_WEEKLY:-5}" \
      --keep-monthly "${NIX_INFRA_BACKUP_KEEP_MONTHLY:-12}" >/dev/null
    log "done in $(($(date +%s) - start)) s"
    ;;
  list)
    [ $# -eq 0 ] || die "list takes no arguments"
    ensure_repository
    r snapshots --json --tag "app=$app"
    ;;
  check)
    exclusive
    ensure_repository
    r unlock >/dev/null 2>&1 || true # removes only stale locks (a killed run's)
    r check
    ;;
  restore)
    snapshot="" to=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --snapshot) [ $# -ge 2 ] || die "--snapshot needs an ID"; snapshot=$2; shift 2 ;;
        --to) [ $# -ge 2 ] || die "--to needs a path"; to=$2; shift 2 ;;
        *) die "restore: unknown argument '$1' (allowed: --snapshot ID, --to PATH)" ;;
      esac
    done
    snapshot=$(snapshot_of "$snapshot")
    [ -z "$to" ] || [[ $to == /?* && $to != *..* ]] || die "--to must be an absolute path other than /"
    exclusive
    ensure_repository
    if [ -n "$to" ]; then
      log "restoring snapshot $snapshot to $to"
      r restore "$snapshot" --tag "app=$app" --target "$to"
      exit 0
    fi
    # best on the volume, beside the data (renames stay on one file system)
    stage=${NIX_INFRA_BACKUP_STAGE_DIR:-${paths[0]%/}.nix-infra-restore}
    [[ $stage == /* && $stage != *..* ]] || die "NIX_INFRA_BACKUP_STAGE_DIR must be an absolute path"
    rm -rf -- "$stage"
    install -d -m 0700 -- "$stage"
    log "restoring snapshot $snapshot"
    r restore "$snapshot" --tag "app=$app" --target "$stage"
    case "$kind" in
      postgresql)
        db=${NIX_INFRA_BACKUP_PG_DATABASE:?} dir=${NIX_INFRA_BACKUP_DUMP_DIR:?} pgport=${NIX_INFRA_BACKUP_PG_PORT:-5432}
        [ -f "$stage$dir/$db.dump" ] || die "snapshot $snapshot holds no dump of $db ($dir/$db.dump)"
        chown -R -- "$db_user" "$stage"
        # roles are NixOS's (ensureUsers, the password from its credential): globals.sql is
        # in the snapshot for a manual recovery, not replayed over the current passwords
        log "replacing database $db with the dump (pg_restore)"
        as_db dropdb --host=/run/postgresql --port="$pgport" --if-exists --force -- "$db"
        as_db pg_restore --host=/run/postgresql --port="$pgport" --exit-on-error --create -d postgres -- "$stage$dir/$db.dump"
        ;;
      valkey | files)
        unit=${NIX_INFRA_BACKUP_UNIT:?NIX_INFRA_BACKUP_UNIT is not set}
        for p in "${paths[@]}"; do [ -d "$stage$p" ] || die "snapshot $snapshot holds no $p (another app's?)"; done
        log "stopping $unit"
        systemctl stop -- "$unit"
        # each path's contents are replaced (the path itself may be a mount point: a bind
        # mount from the volume); a run killed here is resumed by running the restore again
        shopt -s dotglob nullglob
        for p in "${paths[@]}"; do
          install -d -- "$p"
          rm -rf -- "${p:?}"/*
          mv -- "$stage$p"/* "$p"/
          chown --reference="$stage$p" -- "$p"
          chmod --reference="$stage$p" -- "$p"
        done
        shopt -u dotglob nullglob
        log "starting $unit"
        systemctl start -- "$unit"
        ;;
    esac
    rm -rf -- "$stage"
    log "restored snapshot $snapshot"
    ;;
  *) die "usage: backup.sh run | list | check | restore [--snapshot ID] [--to PATH]" ;;
esac
