#!/usr/bin/env bash
# Stages a container unit's decrypted credentials for the container's user:
#
#   stage-container-secrets.sh SRC DST OWNER -- NAME...
#
# SRC is the unit's $CREDENTIALS_DIRECTORY (files root-owned, 0400), DST its
# RuntimeDirectory on tmpfs (removed when the unit stops), OWNER the
# container's user as uid[:gid] ("" = root). Each NAME is copied to DST/NAME
# owned by OWNER, mode 0400; the container bind-mounts DST/NAME read-only at
# /run/secrets/NAME. Nothing is written to disk; values never reach argv.
# Run by the unit as root (ExecStartPre of podman-<app>.service, modules/apps.nix).
set -euo pipefail
umask 077

die() { echo "stage-container-secrets: $*" >&2; exit 2; }
[ $# -ge 4 ] && [ "$4" = "--" ] || die "usage: stage-container-secrets.sh SRC DST OWNER -- NAME..."
src=$1 dst=$2 owner=$3
shift 4
[ -n "$src" ] && [ -d "$src" ] || die "SRC ${src@Q} is not a directory (is \$CREDENTIALS_DIRECTORY set?)"
[[ "$dst" == /* ]] || die "DST ${dst@Q} is not an absolute path"
owner=${owner:-0:0}
[[ "$owner" =~ ^(0|[1-9][0-9]{0,9})(:(0|[1-9][0-9]{0,9}))?$ ]] || die "OWNER ${owner@Q} is not uid[:gid] (numbers)"
uid=${owner%%:*}
gid=$uid
[[ "$owner" == *:* ]] && gid=${owner#*:}
(( uid <= 4294967294 && gid <= 4294967294 )) || die "OWNER ${owner@Q}: a uid or gid is above 4294967294"
for name in "$@"; do
  [[ "$name" =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$ ]] || die "secret name ${name@Q} is not a safe file name"
  [ -f "$src/$name" ] && [ ! -L "$src/$name" ] || die "credential $name is missing in $src (not delivered yet?)"
done

# DST is the unit's own runtime directory: never follow a link planted there
[ ! -L "$dst" ] || die "DST ${dst@Q} is a symbolic link"
# 0711: the container's user reaches its files by name, nobody lists them
install -d -m 0711 -o 0 -g 0 -- "$dst"
tmp=""
trap '[ -z "$tmp" ] || rm -f -- "$tmp"' EXIT
for name in "$@"; do
  tmp=$(mktemp -- "$dst/.$name.XXXXXX")
  cat -- "$src/$name" > "$tmp"
  chown -- "$uid:$gid" "$tmp"
  chmod 0400 -- "$tmp"
  # -T: replace DST/NAME itself, never move into a directory of that name
  if [ -d "$dst/$name" ] && [ ! -L "$dst/$name" ]; then rm -rf -- "${dst:?}/$name"; fi
  mv -fT -- "$tmp" "$dst/$name"
  tmp=""
done
