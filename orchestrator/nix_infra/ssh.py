"""SSH to nodes, always with pinned host keys.

Every connection, by OpenSSH or by Nix (NIX_SSHOPTS), uses the cluster's own
known_hosts (facts/known_hosts) with StrictHostKeyChecking=yes; the user's
~/.ssh/known_hosts and the global one are never read or written. One
connection per command (ControlMaster=no): a confirmation must travel over a
fresh connection, and shared masters are known to hang `nix copy` (reported with deploy-rs).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nix_infra.errors import NixInfraError
from nix_infra.process import Result, run


@dataclass(frozen=True)
class SshTarget:
    """How to reach one node."""

    node: str
    host: str
    known_hosts: Path
    port: int = 22
    user: str = "root"
    identity: Path | None = None
    connect_timeout: int = 10

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    def known_hosts_name(self) -> str:
        """How known_hosts names this host: `host`, or `[host]:port` off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def ssh_options(t: SshTarget, *, port: bool = True) -> list[str]:
    """The options of every connection: pinned host keys, no prompts, no shared masters."""
    opts = [
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={t.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "UpdateHostKeys=no",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={t.connect_timeout}",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
    ]  # fmt: skip
    if port:
        opts += ["-p", str(t.port)]
    if t.identity is not None:
        opts += ["-i", str(t.identity), "-o", "IdentitiesOnly=yes"]
    return opts


def ssh_argv(t: SshTarget, command: Sequence[str], *, tty: bool = False) -> list[str]:
    """`ssh ... root@host -- 'cmd args'`: the remote command is one shell-quoted string."""
    return ssh_script_argv(t, shlex.join(command) if command else "", tty=tty)


def ssh_script_argv(t: SshTarget, script: str, *, tty: bool = False) -> list[str]:
    """`ssh ... root@host -- SCRIPT`: the node's shell runs SCRIPT as written."""
    argv = ["ssh", *ssh_options(t), "-t" if tty else "-T", t.destination]
    if script:
        argv += ["--", script]
    return argv


def nix_sshopts(t: SshTarget) -> str:
    """NIX_SSHOPTS for `nix copy --to ssh-ng://...`. Nix splits it on white space, unquoted."""
    opts = ssh_options(t)
    bad = [o for o in opts if any(c.isspace() for c in o)]
    if bad:
        raise NixInfraError(
            f"{t.node}: an SSH option contains white space ({bad[0]!r}); Nix cannot pass it in NIX_SSHOPTS. "
            "Move the cluster repo (or identity file) to a path without spaces."
        )
    return " ".join(opts)


def run_remote(
    t: SshTarget,
    command: Sequence[str],
    *,
    input_text: str | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> Result:
    """Run a command on a node; its exit code is checked like any local command's."""
    return run(
        ssh_argv(t, command),
        input_text=input_text,
        timeout=timeout,
        check=check,
        what=f"{t.node}: {shlex.join(command)}",
    )


def run_remote_commands(
    t: SshTarget, *commands: Sequence[str], timeout: float | None = None, check: bool = True
) -> Result:
    """Several commands in one connection, each after the previous succeeded (`a && b`)."""
    script = " && ".join(shlex.join(c) for c in commands)
    return run(ssh_script_argv(t, script), timeout=timeout, check=check, what=f"{t.node}: {script[:200]}")
