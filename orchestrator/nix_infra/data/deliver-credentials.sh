#!/usr/bin/env bash
# nix-infra deliver-credentials: runs on a node, fed by the orchestrator over SSH stdin.
#
# Input, in this order:
#   put NAME LENGTH [SHA256]\n<LENGTH bytes>   one per credential delivered
#   units NAME UNIT...\n                        the units that load NAME (optional)
#   keep NAME...\n                              the node's complete set of credentials; ends the input
# Nothing is committed before the keep line arrived. Each put is encrypted with
# `systemd-creds encrypt --name=NAME - DIR/.NAME.cred.new` and verified: the new
# file must decrypt, to LENGTH bytes (and, when given, to the SHA256). A stream
# that ends early, or any failure, removes every staged file and changes nothing.
# bash's `read` takes a pipe byte by byte and GNU `head -c N` reads no more than
# N bytes, so the frames never bleed into each other.
#
# Commit (after keep): the units of every added or changed credential (old and
# new values compared by their SHA-256, decrypted into pipes, never to disk) are
# written to DIR/.pending-restart first, then the new files are moved into
# place (an unchanged value keeps its old file and mtime), files of credentials
# not in the keep line are removed, and the pending units that systemd knows
# are reset (`reset-failed`) and (re)started (`restart`: they are meant to run,
# also when a first boot left them failed or inactive). The record is removed
# once the restart ran, so a connection cut before that restarts them on the
# next delivery. Units systemd does not know yet are left to the coming switch.
#
# Output: "changed NAME", "unchanged NAME", "removed NAME", "restarted UNIT",
# "not-loaded UNIT", "restart-failed UNIT"; errors go to stderr (never a value).
# The credentials directory is the first argument (default /var/lib/nix-infra/credentials).
set -euo pipefail -f  # -f: no globbing of the words split from frame lines
umask 077
dir=${1:-/var/lib/nix-infra/credentials}
pending="$dir/.pending-restart"
mkdir -p "$dir"
chmod 0700 "$dir"
set +f; rm -f "$dir"/.*.cred.new; set -f  # staged by a delivery killed outright (encrypted, never committed)

fail() { echo "deliver-credentials: $*" >&2; exit 2; }
staged=()
declare -A units=() sums=()
cleanup() { for n in "${staged[@]}"; do rm -f "$dir/.$n.cred.new"; done; }
trap cleanup EXIT

valid_name() { [[ $1 =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$ ]]; }
# systemd's unit-name grammar: [A-Za-z0-9:_.\@-], a known suffix, at most 255 characters, no leading '-'
valid_unit() {
  [[ ${#1} -le 255 && $1 != -* && $1 =~ ^[A-Za-z0-9:_.\\@-]+\.(service|socket|device|mount|automount|swap|target|path|timer|slice|scope)$ ]]
}
plain_sum() { systemd-creds decrypt --name="$1" "$2" - | sha256sum | cut -d' ' -f1; }

commit() {
  local -a restart=() changed=() names=()
  local n u
  if [ -f "$pending" ]; then
    while read -r u; do valid_unit "$u" && restart+=("$u"); done < "$pending"
  fi
  for n in "${staged[@]}"; do
    if [ -f "$dir/$n.cred" ] && [ "$(plain_sum "$n" "$dir/$n.cred" 2>/dev/null || true)" = "${sums[$n]}" ]; then
      rm -f "$dir/.$n.cred.new"
      echo "unchanged $n"
    else
      changed+=("$n")
      for u in ${units[$n]:-}; do restart+=("$u"); done
    fi
  done
  if [ ${#restart[@]} -gt 0 ]; then
    mapfile -t restart < <(printf '%s\n' "${restart[@]}" | sort -u)
    printf '%s\n' "${restart[@]}" > "$pending.new"
    sync "$pending.new" 2>/dev/null || true
    mv -f "$pending.new" "$pending"
  fi
  for n in "${changed[@]}"; do
    chmod 0600 "$dir/.$n.cred.new"
    mv -f "$dir/.$n.cred.new" "$dir/$n.cred"
    echo "changed $n"
  done
  staged=()
  names=($1)
  set +f
  for f in "$dir"/*.cred; do
    [ -e "$f" ] || continue
    n=${f##*/}; n=${n%.cred}
    case " ${names[*]} " in *" $n "*) ;; *) rm -f "$f"; echo "removed $n" ;; esac
  done
  set -f
  [ ${#restart[@]} -gt 0 ] || return 0
  local -a loaded=()
  for u in "${restart[@]}"; do
    if [ "$(systemctl show --property=LoadState --value -- "$u" 2>/dev/null || true)" = not-found ]; then
      echo "not-loaded $u"
    else
      loaded+=("$u")
    fi
  done
  if [ ${#loaded[@]} -gt 0 ]; then
    systemctl reset-failed -- "${loaded[@]}" 2>/dev/null || true
    if systemctl restart -- "${loaded[@]}"; then
      for u in "${loaded[@]}"; do echo "restarted $u"; done
    else
      # which ones did not come up (the others did restart)
      for u in "${loaded[@]}"; do
        if systemctl is-active --quiet -- "$u"; then echo "restarted $u"; else echo "restart-failed $u"; fi
      done
    fi
  fi
  rm -f "$pending"
}

while read -r op rest; do
  case "$op" in
    put)
      words=($rest)
      name=${words[0]:-} len=${words[1]:-} sum=${words[2]:-}
      valid_name "$name" || fail "put: bad credential name"
      [[ $len =~ ^[0-9]{1,9}$ ]] || fail "put $name: bad length"
      [ -z "${sum:-}" ] || [[ $sum =~ ^[0-9a-f]{64}$ ]] || fail "put $name: bad SHA-256"
      new="$dir/.$name.cred.new"
      staged+=("$name")
      if ! err=$(head -c "$len" | systemd-creds encrypt --name="$name" - "$new" 2>&1); then
        fail "put $name: systemd-creds encrypt failed: ${err:-no message}"
      fi
      if ! got=$(systemd-creds decrypt --name="$name" "$new" - 2>/dev/null | wc -c); then
        err=$(systemd-creds decrypt --name="$name" "$new" - 2>&1 >/dev/null || true)
        fail "put $name: the new credential does not decrypt: ${err:-no message}"
      fi
      [ $((got)) -eq "$len" ] || fail "put $name: $((got)) of $len bytes arrived (input cut short); nothing was changed"
      actual=$(plain_sum "$name" "$new")
      [ -z "${sum:-}" ] || [ "$actual" = "$sum" ] || fail "put $name: checksum mismatch; nothing was changed"
      sums[$name]=$actual ;;
    units)
      words=($rest)
      name=${words[0]:-} list=${words[*]:1}
      valid_name "$name" || fail "units: bad credential name"
      for u in $list; do valid_unit "$u" || fail "units $name: not a unit name: ${u:0:80}"; done
      units[$name]=$list ;;
    keep)
      for n in $rest; do valid_name "$n" || fail "keep: bad credential name"; done
      commit "$rest"
      exit 0 ;;
    *) fail "unknown frame: ${op:0:40}" ;;
  esac
done
fail "input ended early (${#staged[@]} credential(s) received, no keep line); nothing was changed"
