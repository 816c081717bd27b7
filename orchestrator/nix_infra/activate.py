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

from dataclasses import dataclass

STATE_DIR = "/run/nix-infra"

ACTIVATE = r"""
set -u
new=$1 token=$2 timeout=$3
profile=/nix/var/nix/profiles/system
state=/run/nix-infra
mkdir -p "$state"
status() { echo "$1" > "$state/$token.status.tmp" && mv "$state/$token.status.tmp" "$state/$token.status"; }
log() { echo "$(date -u +%FT%TZ) $*" >> "$state/$token.log"; }
prev=$(readlink -f "$profile" 2>/dev/null || true)
revert() {
  if [ -n "$prev" ] && [ "$prev" != "$new" ]; then
    log "reverting to $prev"
    nix-env -p "$profile" --set "$prev" >> "$state/$token.log" 2>&1
    "$prev/bin/switch-to-configuration" switch >> "$state/$token.log" 2>&1 || log "revert switch failed"
  fi
}
status switching
log "switching to $new (previous: ${prev:-none})"
if ! nix-env -p "$profile" --set "$new" >> "$state/$token.log" 2>&1; then
  log "setting the profile failed"; status failed; exit 1
fi
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


def probe_command(credentials_dir: str = "/var/lib/nix-infra/credentials") -> list[str]:
    """What the node runs now (first line), then the credential files it holds, one per line."""
    return ["/bin/sh", "-c", f"readlink -f /run/current-system; ls -1 {credentials_dir} 2>/dev/null || true"]
