"""Backups of stateful apps: run, list and restore restic snapshots on a node.

The work happens on the node, in the backup script the app module installs
(modules/scripts/backup.sh, behind the wrapper /etc/nix-infra/backup/<app>,
which knows the app's paths, dump and credentials). The orchestrator validates
what it passes, runs the wrapper over SSH (pinned host keys, exit codes
checked) and shows its progress. No secret travels: the node reads the
repository URL and password from its own credentials.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from nix_infra.errors import NixInfraError
from nix_infra.options import check_app_name
from nix_infra.process import run_attached
from nix_infra.ssh import SshTarget, run_remote, ssh_argv

WRAPPER_DIR = "/etc/nix-infra/backup"
SNAPSHOT_RE = re.compile(r"[0-9a-f]{8,64}|latest")
# an absolute path of plain components: no '..', no shell or option surprises
PATH_RE = re.compile(r"(/[A-Za-z0-9._+@=-]+)+/?")


@dataclass(frozen=True)
class Snapshot:
    """One restic snapshot of an app."""

    id: str
    short_id: str
    time: str
    host: str
    paths: tuple[str, ...]
    tags: tuple[str, ...]


def check_snapshot(snapshot: str) -> str:
    if not SNAPSHOT_RE.fullmatch(snapshot):
        raise NixInfraError(
            f"--snapshot {snapshot!r}: a snapshot ID is 8 to 64 hex digits (see `backup list`), or latest"
        )
    return snapshot


def check_restore_path(path: str) -> str:
    if not PATH_RE.fullmatch(path) or any(part in (".", "..") for part in path.split("/")):
        raise NixInfraError(
            f"--to {path!r}: an absolute path on the node of letters, digits and . _ + @ = - (no '..', no spaces)"
        )
    return path


def backup_command(app: str, verb: str, *, snapshot: str | None = None, to: str | None = None) -> list[str]:
    """The node command for `verb` (run, list, restore, check) of `app`; every value validated."""
    if verb not in ("run", "list", "restore", "check"):
        raise NixInfraError(f"backup: unknown verb {verb!r}")
    argv = [f"{WRAPPER_DIR}/{check_app_name(app)}", verb]
    if verb == "restore":
        if snapshot is not None:
            argv += ["--snapshot", check_snapshot(snapshot)]
        if to is not None:
            argv += ["--to", check_restore_path(to)]
    elif snapshot is not None or to is not None:
        raise NixInfraError(f"backup {verb}: --snapshot and --to are options of restore")
    return argv


def _attached(target: SshTarget, app: str, verb: str, argv: list[str]) -> None:
    """Run on the node with the terminal attached (restic's progress shows), checking the exit code."""
    code = run_attached(ssh_argv(target, argv), what=f"{target.node}: backup {verb} {app}")
    if code != 0:
        raise NixInfraError(
            f"{target.node}: backup {verb} {app} failed (exit {code}); the node's messages are above. "
            f"Is {app} backed up on {target.node} (nixInfra.<module>.backup.enable) and deployed?",
            exit_code=code,
        )


def run_backup(target: SshTarget, app: str) -> None:
    """Dump, back up and prune now, as the node's backup timer does."""
    _attached(target, app, "run", backup_command(app, "run"))


def restore(target: SshTarget, app: str, *, snapshot: str | None = None, to: str | None = None) -> None:
    """Restore a snapshot (default: the latest) into the app's data, or only its files to `to`."""
    _attached(target, app, "restore", backup_command(app, "restore", snapshot=snapshot, to=to))


def parse_snapshots(text: str) -> list[Snapshot]:
    try:
        data: Any = json.loads(text or "[]")
    except ValueError as exc:
        raise NixInfraError("restic snapshots did not print JSON") from exc
    if data is None:
        return []
    if not isinstance(data, list):
        raise NixInfraError("restic snapshots printed no list")
    out = []
    for s in data:
        if not isinstance(s, dict) or not isinstance(s.get("id"), str):
            raise NixInfraError("restic snapshots printed an entry without an id")
        out.append(
            Snapshot(
                id=s["id"],
                short_id=str(s.get("short_id", s["id"][:8])),
                time=str(s.get("time", "")),
                host=str(s.get("hostname", "")),
                paths=tuple(str(p) for p in s.get("paths") or ()),
                tags=tuple(str(t) for t in s.get("tags") or ()),
            )
        )
    return sorted(out, key=lambda s: s.time)


def list_snapshots(target: SshTarget, app: str) -> list[Snapshot]:
    """The app's snapshots in its repository, oldest first."""
    result = run_remote(target, backup_command(app, "list"), check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-10:])
        raise NixInfraError(f"{target.node}: backup list {app} failed (exit {result.returncode}):\n{tail}")
    return parse_snapshots(result.stdout)
