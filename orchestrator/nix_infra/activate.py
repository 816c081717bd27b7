"""Activation with magic rollback.

On the node, a transient systemd unit (systemd-run) runs ACTIVATE: it points
the system profile at the new system and switches to it; a failed switch
reverts at once. Then it waits for the orchestrator's confirmation (a file
created over a *fresh* SSH connection) and reverts by itself when none comes
within the timeout. Because the unit is detached from the SSH session, a
network restart during the switch cannot kill the activation half-way.

Every state change is written to /run/nix-infra/<token>.status, which the
orchestrator polls: switching -> waiting -> confirmed | rolled-back | failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STATE_DIR = "/run/nix-infra"

ACTIVATE = r"""
set -u
new=$1 token=$2 timeout=$3 generation=${4:-}
profiles=/nix/var/nix/profiles
profile=$profiles/system
state=/run/nix-infra
mkdir -p "$state"
status() { echo "$1" > "$state/$token.status.tmp" && mv "$state/$token.status.tmp" "$state/$token.status"; }
log() { echo "$(date -u +%FT%TZ) $*" >> "$state/$token.log"; }
gen() { sed -n 's/^system-\([0-9]*\)-link$/\1/p'; }
# The revert target is what runs now, never the profile (a staged `boot`, a timed-out or an
# abandoned activation may have left the profile elsewhere); the profile is put back as it was.
prev=$(readlink -f /run/current-system 2>/dev/null || true)
prevlink=$(readlink "$profile" 2>/dev/null || true)
last=$(ls -1 "$profiles" 2>/dev/null | gen | sort -n | tail -n 1)
added=""
echo "$new" > "$state/$token.system"
echo "$$" > "$state/$token.pid"
echo "$prev" > "$state/$token.previous"
revert() {
  log "reverting to ${prev:-nothing}"
  # the profile first: back where it was, and the generation this activation added is
  # deleted, so that `rollback` never picks the rejected system
  if [ -n "$prevlink" ]; then
    ln -sfn "$prevlink" "$profile.nix-infra-tmp" && mv -T "$profile.nix-infra-tmp" "$profile"
  elif [ -n "$added" ]; then
    rm -f "$profile"
  fi
  [ -z "$added" ] || rm -f "$profiles/$added"
  if [ -n "$prev" ] && [ "$prev" != "$new" ]; then
    "$prev/bin/switch-to-configuration" switch >> "$state/$token.log" 2>&1 || log "revert switch failed"
  fi
}
# killed (systemctl stop, or the unit abandoned): revert, never leave the new system half-confirmed
trap 'log "stopped"; revert; status rolled-back; exit 1' TERM INT HUP
status switching
log "switching to $new (running: ${prev:-none}, profile: ${prevlink:-none})"
if [ -n "$generation" ]; then
  set_profile() { nix-env -p "$profile" --switch-generation "$generation"; }
else
  set_profile() { nix-env -p "$profile" --set "$new"; }
fi
if ! set_profile >> "$state/$token.log" 2>&1; then
  log "setting the profile failed"; status failed; exit 1
fi
now=$(readlink "$profile" 2>/dev/null || true)
n=$(echo "$now" | gen)
if [ -z "$generation" ] && [ -n "$n" ] && [ "$n" -gt "${last:-0}" ]; then added=$now; fi
if ! "$new/bin/switch-to-configuration" switch >> "$state/$token.log" 2>&1; then
  log "switch failed"; revert; status failed; exit 1
fi
status waiting
i=0
while [ "$i" -lt $((timeout * 5)) ]; do
  if [ -e "$state/$token.confirm" ]; then log "confirmed"; status confirmed; exit 0; fi
  sleep 0.2; i=$((i + 1))
done
log "no confirmation within ${timeout}s"
revert
status rolled-back
exit 1
"""


WATCH = r"""
confirm=$1 base=$2 timeout=$3
shift 3
[ "$confirm" = 1 ] && touch "$base.confirm"
i=0 s=""
while [ "$i" -lt $((timeout * 5)) ]; do
  [ -r "$base.status" ] && read -r s < "$base.status"  # builtins: no process per look
  for want in "$@"; do
    if [ "$s" = "$want" ]; then echo "$s"; exit 0; fi
  done
  sleep 0.2; i=$((i + 1))
done
echo "${s:-none}"
exit 1
"""


@dataclass(frozen=True)
class Activation:
    """One activation of one node."""

    node: str
    system: str  # store path of the new system
    token: str  # unique per activation: names the unit and the state files
    confirm_timeout: int = 30
    generation: int | None = None  # a rollback: switch the profile to this existing generation

    @property
    def unit(self) -> str:
        return f"nix-infra-activate-{self.token}"

    def start_command(self) -> list[str]:
        """The detached activation: a transient unit that outlives the SSH session."""
        return [
            "systemd-run",
            f"--unit={self.unit}",
            "--description=nix-infra activation with magic rollback",
            "--collect",
            # NixOS puts its tools under /run/current-system/sw; /usr/bin for other hosts
            "--setenv=PATH=/run/current-system/sw/bin:/usr/bin:/bin",
            "--",
            "/bin/sh", "-c", ACTIVATE, "nix-infra-activate",
            self.system, self.token, str(self.confirm_timeout),
            *([str(self.generation)] if self.generation is not None else []),
        ]  # fmt: skip

    def watch_command(self, states: tuple[str, ...], timeout: int, *, confirm: bool = False) -> list[str]:
        """Wait on the node (one connection, no polling from here) until the status is one
        of `states`; print it. With `confirm`, first create the confirmation file."""
        return [
            "/bin/sh",
            "-c",
            WATCH,
            "nix-infra-watch",
            "1" if confirm else "0",
            f"{STATE_DIR}/{self.token}",
            str(timeout),
            *states,
        ]

    def log_command(self, lines: int = 30) -> list[str]:
        return ["tail", "-n", str(lines), f"{STATE_DIR}/{self.token}.log"]


def current_system_command() -> list[str]:
    """What the node runs now."""
    return ["readlink", "-f", "/run/current-system"]


PENDING_MARK = "nix-infra-pending"
TOKEN = re.compile(r"[0-9]{1,12}-[0-9a-f]{8}")
STORE_PATH = re.compile(r"/nix/store/[0-9a-z]{32}-[A-Za-z0-9+._?=-]+")


@dataclass(frozen=True)
class Pending:
    """An activation still in progress on a node (switching, or waiting for its confirmation)."""

    token: str
    status: str  # switching | waiting
    system: str


def probe_command(credentials_dir: str = "/var/lib/nix-infra/credentials") -> list[str]:
    """What the node runs now (first line), the credential files it holds, one per line, and
    its activations still in progress (`nix-infra-pending TOKEN STATUS SYSTEM`)."""
    return [
        "/bin/sh",
        "-c",
        f"readlink -f /run/current-system; ls -1 {credentials_dir} 2>/dev/null || true; "
        f'for f in {STATE_DIR}/*.status; do [ -e "$f" ] || continue; read -r s < "$f"; '
        'case "$s" in switching|waiting) t=${f##*/}; t=${t%.status}; '
        # an activation whose process is gone (killed with its node's session) is not pending
        f'p=; [ -r "{STATE_DIR}/$t.pid" ] && read -r p < "{STATE_DIR}/$t.pid"; '
        '[ -n "$p" ] && kill -0 "$p" 2>/dev/null || continue; '
        f'sys=; [ -r "{STATE_DIR}/$t.system" ] && read -r sys < "{STATE_DIR}/$t.system"; '
        f'echo "{PENDING_MARK} $t $s $sys" ;; esac; done',
    ]


def parse_pending(lines: list[str]) -> list[Pending]:
    """The probe's pending activations; anything malformed is ignored (it names nothing safe)."""
    out = []
    for line in lines:
        parts = line.split()
        well_formed = len(parts) == 4 and parts[0] == PENDING_MARK and parts[2] in ("switching", "waiting")
        if well_formed and TOKEN.fullmatch(parts[1]) and STORE_PATH.fullmatch(parts[3]):
            out.append(Pending(parts[1], parts[2], parts[3]))
    return sorted(out, key=lambda p: p.token)
