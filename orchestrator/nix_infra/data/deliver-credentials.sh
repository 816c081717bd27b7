#!/usr/bin/env bash
# nix-infra deliver-credentials: runs on a node, fed by the orchestrator over SSH stdin.
#
# Reads "put NAME LENGTH\n<LENGTH bytes>" frames, then one "keep NAME...\n" line,
# from stdin. For each put, `systemd-creds encrypt --name=NAME - DIR/NAME.cred`;
# an unchanged value (old and new decrypted into pipes, compared with cmp)
# keeps its old file; files of credentials not in the keep line are removed.
# bash's `read` takes a pipe byte by byte and GNU `head -c N` reads no more than
# N bytes, so the frames never bleed into each other. Prints one line per
# credential: "changed NAME", "unchanged NAME" or "removed NAME".
# The credentials directory is the first argument (default /var/lib/nix-infra/credentials).
set -euo pipefail
umask 077
dir=${1:-/var/lib/nix-infra/credentials}
mkdir -p "$dir"
chmod 0700 "$dir"
while read -r op rest; do
  case "$op" in
    put)
      set -- $rest
      name=$1 len=$2
      new="$dir/.$name.cred.new"
      head -c "$len" | systemd-creds encrypt --name="$name" - "$new" 2>/dev/null
      if [ -f "$dir/$name.cred" ] && cmp -s \
          <(systemd-creds decrypt --name="$name" "$dir/$name.cred" - 2>/dev/null) \
          <(systemd-creds decrypt --name="$name" "$new" - 2>/dev/null); then
        rm -f "$new"
        echo "unchanged $name"
      else
        chmod 0600 "$new"
        mv -f "$new" "$dir/$name.cred"
        echo "changed $name"
      fi ;;
    keep)
      for f in "$dir"/*.cred; do
        [ -e "$f" ] || continue
        n=${f##*/}; n=${n%%.cred}
        case " $rest " in *" $n "*) ;; *) rm -f "$f"; echo "removed $n" ;; esac
      done
      exit 0 ;;
    *) echo "unknown frame: $op" >&2; exit 2 ;;
  esac
done
echo "input ended early" >&2
exit 2
