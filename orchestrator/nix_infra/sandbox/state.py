"""Where a repo's sandbox keeps its state (`.nix-infra/sandbox/`) and what it records there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nix_infra.errors import NixInfraError

SSH_PORT = 2222  # every fake server's sshd (each on an address of its own)


@dataclass(frozen=True)
class SandboxPaths:
    repo: Path

    @property
    def root(self) -> Path:
        return self.repo / ".nix-infra" / "sandbox"

    @property
    def config(self) -> Path:  # written by `up` before anything starts: what to clean up
        return self.root / "config.json"

    @property
    def daemon(self) -> Path:  # written by the running daemon: pids, ports, servers
        return self.root / "daemon.json"

    @property
    def flake(self) -> Path:
        return self.root / "flake"

    @property
    def fleet(self) -> Path:
        return self.root / "fleet"

    @property
    def facts(self) -> Path:
        return self.root / "facts"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def etcd(self) -> Path:
        return self.root / "etcd"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"


@dataclass(frozen=True)
class SandboxConfig:
    """What `up` decided before starting anything (the intent, recorded first)."""

    token: str
    etcd_port: int
    secrets_dir: str  # the ctrl node's etcd TLS key, on a tmpfs (/dev/shm), removed by `down`
    ssh_key: str | None
    identity: str | None
    ctrl: str | None


@dataclass(frozen=True)
class DaemonState:
    """What the running daemon reports."""

    pid: int
    endpoint: str
    api_port: int
    etcd_pid: int | None
    etcd_url: str | None
    ready: bool
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a reader sees the old or the new document, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise NixInfraError(f"{path} is not a sandbox record ({exc}); `nix-infra sandbox down` removes it") from None
    if not isinstance(data, dict):
        raise NixInfraError(f"{path} is not a sandbox record; `nix-infra sandbox down` removes it")
    return data


def read_config(paths: SandboxPaths) -> SandboxConfig | None:
    data = _read(paths.config)
    if data is None:
        return None
    try:
        return SandboxConfig(**data)
    except TypeError:
        raise NixInfraError(f"{paths.config} is not a sandbox record; `nix-infra sandbox down` removes it") from None


def write_config(paths: SandboxPaths, config: SandboxConfig) -> None:
    write_json(paths.config, asdict(config))


def read_daemon(paths: SandboxPaths) -> DaemonState | None:
    data = _read(paths.daemon)
    if data is None:
        return None
    try:
        return DaemonState(**data)
    except TypeError:
        raise NixInfraError(f"{paths.daemon} is not a sandbox record; `nix-infra sandbox down` removes it") from None


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def is_daemon(pid: int, paths: SandboxPaths) -> bool:
    """Whether `pid` is this repo's sandbox daemon (not a stranger that got the pid later)."""
    argv = cmdline(pid)
    return "nix_infra.sandbox.daemon" in argv and str(paths.repo.resolve()) in argv


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


def running(paths: SandboxPaths) -> DaemonState | None:
    """The daemon's state when this repo's sandbox daemon runs, else None."""
    state = read_daemon(paths)
    if state is not None and alive(state.pid) and is_daemon(state.pid, paths):
        return state
    return None


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def terminate(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not wait_gone(pid, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_gone(pid, 5.0)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
