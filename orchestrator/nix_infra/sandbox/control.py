"""`sandbox up|down|status`, and how every other command of a repo finds its running sandbox."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from nix_infra.errors import NixInfraError
from nix_infra.lock import LOCK_DIR, LOCK_FILE, repo_lock
from nix_infra.sandbox.daemon import free_port
from nix_infra.sandbox.fleet import install_stand_ins, kill_namespace, write_cluster_flake
from nix_infra.sandbox.state import (
    SSH_PORT,
    DaemonState,
    SandboxConfig,
    SandboxPaths,
    alive,
    cmdline,
    is_daemon,
    read_config,
    read_daemon,
    remove_tree,
    running,
    terminate,
    write_config,
)

SHM = Path("/dev/shm")
SHM_PREFIX = "nix-infra-sandbox-"
# the repo's path goes into sshd configs and mount commands of the fake servers
_SAFE_PATH = re.compile(r"[A-Za-z0-9._+@/-]+")
START_TIMEOUT = 120.0

Say = Callable[[str], None]


def nix_infra_root() -> Path:
    """The nix-infra checkout this package runs from (the stand-in flake copies its lib/)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "lib" / "default.nix").is_file():
        raise NixInfraError(
            f"the sandbox needs nix-infra's lib/ next to the orchestrator, and {root}/lib/default.nix is "
            "missing: run it from a checkout (./bin/nix-infra sandbox ...)"
        )
    return root


def standin_flake_ref(paths: SandboxPaths) -> str:
    return f"path:{paths.flake}"


def refresh_standin(paths: SandboxPaths) -> None:
    """The stand-in flake follows the repo's cluster.nix (copied in; a flake sees only its own files)."""
    spec = (paths.repo / "cluster.nix").read_text()
    target = paths.flake / "cluster.nix"
    if not target.exists() or target.read_text() != spec:
        tmp = target.with_name(".cluster.nix.tmp")
        tmp.write_text(spec)
        os.replace(tmp, target)


def set_fault(paths: SandboxPaths, faults: dict[str, str]) -> None:
    """Nodes whose next system fails its activation, e.g. {"worker001": "fail-activation"}."""
    for node, what in faults.items():
        if re.fullmatch(r"[a-z0-9-]{1,63}", node) is None or what != "fail-activation":
            raise NixInfraError(f"sandbox fault {node!r}={what!r}: a node name and 'fail-activation'")
    text = "{ " + "".join(f'"{n}" = "{w}"; ' for n, w in sorted(faults.items())) + "}\n"
    (paths.flake / "faults.nix").write_text(text)


def check_path(repo: Path) -> None:
    if _SAFE_PATH.fullmatch(str(repo)) is None:
        raise NixInfraError(
            f"the sandbox cannot run in {str(repo)!r}: its path goes into the fake servers' sshd "
            "configuration; use a directory whose path has only letters, digits and . _ + @ / -"
        )


def _check_repo(repo: Path) -> None:
    if not (repo / "cluster.nix").is_file():
        raise NixInfraError(
            f"{repo} has no cluster.nix: run `nix-infra sandbox up` in a cluster repo "
            "(`nix-infra sandbox demo` makes one)"
        )
    check_path(repo)


def up(
    repo: Path, identity_path: Path | None, identity: Callable[[], Any], ssh_key: Path | None, say: Say
) -> DaemonState:
    """Start the repo's sandbox (or report the one that runs); idempotent."""
    repo = repo.resolve()
    _check_repo(repo)
    # one state-changing command at a time per repo: never two background processes
    with repo_lock(repo, "nix-infra sandbox up"):
        try:
            return _up(repo, identity_path, identity, ssh_key, say)
        except BaseException:
            _remove_lock_dir(repo)  # a failed start leaves nothing behind (only if nothing else is there)
            raise


def _up(
    repo: Path, identity_path: Path | None, identity: Callable[[], Any], ssh_key: Path | None, say: Say
) -> DaemonState:
    paths = SandboxPaths(repo)
    state = running(paths)
    if state is not None and state.ready:
        refresh_standin(paths)
        say(f"the sandbox of {repo} already runs (pid {state.pid}, API {state.endpoint})")
        return state
    if paths.root.exists():
        say("cleaning up what an earlier sandbox left")
        _down(repo, say=lambda _: None)
    try:
        return _start(repo, paths, identity_path, identity, ssh_key, say)
    except BaseException:  # an error or Ctrl-C half-way: nothing of it is left behind
        _down(repo, say=lambda _: None)
        raise


def _start(
    repo: Path,
    paths: SandboxPaths,
    identity_path: Path | None,
    identity: Callable[[], Any],
    ssh_key: Path | None,
    say: Say,
) -> DaemonState:
    from nix_infra.controlplane import issue_certificates
    from nix_infra.manifest import load_manifest_flake
    from nix_infra.pki import Pki

    root = nix_infra_root()
    etcd_port = free_port()
    paths.root.parent.mkdir(exist_ok=True)
    paths.root.mkdir(mode=0o700)  # the API token, the servers' host keys
    # the stand-in flake: the real lib, the repo's cluster.nix, etcd's port where the sandbox's etcd answers
    paths.flake.mkdir()
    (paths.flake / "manifest-override.nix").write_text(
        f"m: m // {{ etcd = m.etcd // {{ clientPort = {etcd_port}; }}; }}\n"
    )
    write_cluster_flake(paths.flake, root, (repo / "cluster.nix").read_text())
    set_fault(paths, {})
    install_stand_ins(paths.bin)
    say("evaluating the cluster (stand-in systems: plain Nix derivations built from each node's manifest entry)")
    manifest = load_manifest_flake(standin_flake_ref(paths))
    ctrl = manifest.etcd.members[0] if manifest.etcd.members else None
    secrets_dir = SHM / f"{SHM_PREFIX}{secrets.token_hex(8)}"
    config = SandboxConfig(
        token=secrets.token_hex(16),
        etcd_port=etcd_port,
        secrets_dir=str(secrets_dir),
        ssh_key=str(ssh_key.resolve()) if ssh_key else None,
        identity=str(identity_path.resolve()) if identity_path and identity_path.exists() else None,
        ctrl=ctrl,
    )
    write_config(paths, config)  # the intent, before anything starts: `down` cleans up from here
    if ctrl is not None:
        pki = Pki(repo)
        if not pki.ca_path.exists():
            raise NixInfraError(
                f"{pki.ca_path} does not exist: run `nix-infra init` first (the sandbox's etcd uses the "
                "cluster's PKI), then `nix-infra sandbox up` again"
            )
        for name, reason in issue_certificates(repo, manifest, identity):
            say(f"issued certificate {name} ({reason})")
        ident = identity()
        secrets_dir.mkdir(mode=0o700)
        material = {
            "ca.crt": pki.ca_pem(),
            "server.crt": pki.certificate_pem(f"nodes/{ctrl}/server"),
            "server.key": pki.private_key_pem(f"nodes/{ctrl}/server", ident),
            "peer.crt": pki.certificate_pem(f"nodes/{ctrl}/peer"),
            "peer.key": pki.private_key_pem(f"nodes/{ctrl}/peer", ident),
        }
        for name, data in material.items():
            fd = os.open(secrets_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    with paths.log.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nix_infra.sandbox.daemon", str(repo)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=repo,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = read_daemon(paths)
        if state is not None and state.error:
            break
        if state is not None and state.ready:
            say(f"sandbox up: Hetzner API {state.endpoint}, etcd {state.etcd_url or '- (no ctrl node)'}")
            return state
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = paths.log.read_text(errors="replace")[-1500:] if paths.log.exists() else ""
    raise NixInfraError(f"the sandbox did not start:\n{tail}")


def _is_ours(pid: int, marker: str) -> bool:
    return alive(pid) and any(marker in arg for arg in cmdline(pid))


def down(repo: Path, say: Say) -> list[str]:
    """Stop everything the repo's sandbox started and remove its state; what it stopped."""
    repo = repo.resolve()
    if (repo / "cluster.nix").is_file():
        with repo_lock(repo, "nix-infra sandbox down"):
            stopped = _down(repo, say)
            _remove_lock_dir(repo)  # held here: nobody else is inside it
            return stopped
    return _down(repo, say)


def _remove_lock_dir(repo: Path) -> None:
    """`.nix-infra/` when it only holds the run lock's own files: down leaves nothing on disk."""
    directory = repo / LOCK_DIR
    if directory.is_dir() and {p.name for p in directory.iterdir()} <= {LOCK_FILE, ".gitignore"}:
        for name in (LOCK_FILE, ".gitignore"):
            (directory / name).unlink(missing_ok=True)
        directory.rmdir()


def _down(repo: Path, say: Say) -> list[str]:
    paths = SandboxPaths(repo)
    stopped: list[str] = []
    try:  # a damaged record must not keep `down` from cleaning up
        config = read_config(paths)
    except NixInfraError:
        config = None
    try:
        state = read_daemon(paths)
    except NixInfraError:
        state = None
    if state is not None:
        if alive(state.pid) and is_daemon(state.pid, paths):
            terminate(state.pid)
            stopped.append(f"sandbox process {state.pid}")
        # whatever outlived it (a daemon killed with SIGKILL leaves its servers and etcd running)
        for name, server in state.servers.items():
            pid = server.get("pid")
            if isinstance(pid, int) and _is_ours(pid, str(paths.fleet)):
                kill_namespace(pid)
                terminate(pid, 5.0)
                stopped.append(f"server {name} ({pid})")
        if isinstance(state.etcd_pid, int) and _is_ours(state.etcd_pid, str(paths.etcd)):
            terminate(state.etcd_pid, 10.0)
            stopped.append(f"etcd ({state.etcd_pid})")
    # a daemon that a killed `up` started before it could record itself
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and is_daemon(int(entry.name), paths):
            terminate(int(entry.name))
            stopped.append(f"sandbox process {entry.name}")
    if config is not None:
        shm = Path(config.secrets_dir)
        if shm.parent == SHM and shm.name.startswith(SHM_PREFIX):
            remove_tree(shm)
    remove_tree(paths.root)
    parent = paths.root.parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
    for item in stopped:
        say(f"stopped {item}")
    return stopped


@dataclass(frozen=True)
class Status:
    running: bool
    repo: str
    pid: int | None
    endpoint: str | None
    etcd_url: str | None
    etcd_pid: int | None
    servers: dict[str, dict[str, Any]]
    leftovers: bool

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def status(repo: Path) -> Status:
    repo = repo.resolve()
    paths = SandboxPaths(repo)
    state = running(paths)
    if state is None:
        return Status(False, str(repo), None, None, None, None, {}, leftovers=paths.root.exists())
    return Status(True, str(repo), state.pid, state.endpoint, state.etcd_url, state.etcd_pid, state.servers, False)


# ---- every other command: target the running sandbox -------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a command in a repo with a running sandbox is pointed at."""

    paths: SandboxPaths
    config: SandboxConfig
    state: DaemonState

    def environment(self) -> dict[str, str]:
        env = {
            "HCLOUD_TOKEN": self.config.token,
            "HCLOUD_ENDPOINT": self.state.endpoint,
            "FAKE_FLEET_ROOT": str(self.paths.fleet),
            "PATH": f"{self.paths.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            # the stand-in systems are built here from nothing: no binary cache to ask
            "NIX_CONFIG": "substituters =\n" + os.environ.get("NIX_CONFIG", ""),
        }
        for name, value in {
            "NIX_INFRA_HCLOUD_POLL_INTERVAL": "0.05",
            "NIX_INFRA_POLL_INTERVAL": "0.2",
            "NIX_INFRA_SSH_CONNECT_TIMEOUT": "5",
            "NIX_INFRA_REBOOT_TIMEOUT": "60",
        }.items():
            env[name] = os.environ.get(name, value)
        return env

    def banner(self) -> str:
        return (
            f"sandbox: this command targets the local sandbox of {self.paths.repo} (Hetzner API "
            f"{self.state.endpoint}, {len(self.state.servers)} server(s); nodes run stand-in systems built "
            "from their manifest entries, not NixOS); `nix-infra sandbox down` ends it"
        )


def find_target(repo: Path) -> Target | None:
    """The running sandbox of `repo`, None when it has none; an error when it has a dead one."""
    paths = SandboxPaths(repo.resolve())
    if not paths.root.exists():
        return None
    config = read_config(paths)
    state = running(paths)
    if config is None or state is None or not state.ready:
        raise NixInfraError(
            f"{paths.root} records a sandbox that is not running: `nix-infra sandbox up` starts it again, "
            "`nix-infra sandbox down` removes it (until then, commands here would not know whether to "
            "target the sandbox or Hetzner)"
        )
    refresh_standin(paths)
    return Target(paths, config, state)


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


__all__ = ["SSH_PORT", "Status", "Target", "down", "environment", "find_target", "set_fault", "status", "up"]
