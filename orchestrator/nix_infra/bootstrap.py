"""Installing NixOS on a new server with nixos-anywhere, host keys pinned throughout.

A new server boots the stock image with a *bootstrap* host key that provision
generated and put into cloud-init user data (pinned in facts/known_hosts
before the first connection). nixos-anywhere then kexecs into the installer
(which keeps the running system's host keys), partitions with disko and
installs; the installed system gets a *final* host key generated here and
passed with --extra-files. When the node is back, the final key replaces the
bootstrap key in known_hosts and facts record the node as installed.

nixos-anywhere turns host key checking off for its own connections (its
default SSH options put StrictHostKeyChecking=no first, and for OpenSSH the
first value of an option wins). So nixos-anywhere runs with an `ssh` wrapper
first on its PATH that puts the pinned options in front of everything else.

Crash safety. The final key's public half is recorded in facts (`pendingHostKey`)
and pinned next to the bootstrap key *before* nixos-anywhere starts, so a run
killed during the install never locks the node out: the next run asks which key
answers. The final key: the node runs the installed system, which is pinned alone
and recorded as installed. The bootstrap key: the install did not get that far and
starts again with a new final key. The private key lives in a private directory
in /dev/shm, held with a lock while this process uses it; the next run removes
every such directory whose lock is free (its process is gone).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from nix_infra.errors import NixInfraError
from nix_infra.facts import FactsStore, HostKey, NodeFacts, generate_host_key
from nix_infra.process import run
from nix_infra.ssh import SshTarget, renew_session, run_remote, ssh_options


def nixos_anywhere_argv(flake: str, node: str, target: SshTarget, extra_files: Path) -> list[str]:
    argv = [
        "nixos-anywhere",
        "--flake", f"{flake}#{node}",
        "--target-host", target.destination,
        "--ssh-port", str(target.port),
        # the pinning itself is ssh_wrapper's (first on PATH, its options first): nixos-anywhere
        # passes these on split on white space (NIX_SSHOPTS), so no path goes this way
        "--ssh-option", "StrictHostKeyChecking=yes",
        "--extra-files", str(extra_files),
    ]  # fmt: skip
    if target.identity is not None:
        argv += ["-i", str(target.identity)]
    return argv


def ssh_wrapper(real_ssh: str, target: SshTarget) -> str:
    """An `ssh` that puts the pinned options first, so later `-o StrictHostKeyChecking=no` lose."""
    pinned = ssh_options(target, port=False)
    return f'#!/bin/sh\nexec {shlex.quote(real_ssh)} {shlex.join(pinned)} "$@"\n'


SECRET_PREFIX = "nix-infra-"
LOCK_NAME = ".owner.lock"
# a directory of ours without a lock file (an older version, or created a moment ago and not
# locked yet) is removed only once it is this old
UNLOCKED_MAX_AGE = 900.0


def _secret_base() -> Path:
    return Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


@contextlib.contextmanager
def _secret_dir() -> Iterator[Path]:
    """A private directory in memory (tmpfs) for the host key's few seconds outside Python,
    locked (flock) while this process uses it and removed after."""
    path = Path(tempfile.mkdtemp(prefix=SECRET_PREFIX, dir=_secret_base()))
    try:
        path.chmod(0o700)
        # locked under another name, then renamed: a cleaner never sees the lock file unlocked
        with open(path / ".owner.lock.new", "w") as lock:  # not inherited by children (O_CLOEXEC)
            fcntl.flock(lock, fcntl.LOCK_EX)
            os.rename(path / ".owner.lock.new", path / LOCK_NAME)
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def clean_stale_secret_dirs(base: Path | None = None) -> list[Path]:
    """Remove the private directories that killed runs left behind (their lock is free); the
    removed ones are returned."""
    base = base or _secret_base()
    removed = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    for path in entries:
        if not path.name.startswith(SECRET_PREFIX) or path.is_symlink() or not path.is_dir():
            continue
        try:
            if path.stat().st_uid != os.getuid():
                continue
            lock_path = path / LOCK_NAME
            if lock_path.exists():
                with open(lock_path) as lock:
                    try:
                        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live run's
                    shutil.rmtree(path, ignore_errors=True)
            elif (path / "extra-files").exists() and time.time() - path.stat().st_mtime > UNLOCKED_MAX_AGE:
                shutil.rmtree(path, ignore_errors=True)
            else:
                continue
        except OSError:
            continue
        removed.append(path)
    return removed


def write_extra_files(directory: Path, key: HostKey) -> None:
    ssh_dir = directory / "etc" / "ssh"
    ssh_dir.mkdir(parents=True, mode=0o755)
    private = ssh_dir / "ssh_host_ed25519_key"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.private_openssh)
    (ssh_dir / "ssh_host_ed25519_key.pub").write_text(key.public + "\n")


def wait_reachable(target: SshTarget, timeout: float, interval: float = 2.0) -> None:
    """Wait until the node answers over SSH with the key now pinned (after install and reboot)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        result = run_remote(target, ["true"], check=False, timeout=30)
        if result.returncode == 0:
            return
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        time.sleep(interval)
    raise NixInfraError(f"{target.node}: not reachable {timeout:.0f} s after installing NixOS: {last}")


HOST_KEY_REFUSED = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED", "host key is known")


def answers_with(target: SshTarget, public_key: str, workdir: Path) -> bool:
    """Whether the node answers over SSH with exactly this host key (a known_hosts of its own).

    False only when ssh refused the node's host key; any other failure (login refused,
    unreachable) is not an answer about the key and raises NixInfraError with ssh's reason,
    so a login problem is never taken for a changed host key."""
    host = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    known = workdir / "known_hosts.pending"
    known.write_text(f"{host} {' '.join(public_key.split()[:2])}\n")
    probe = replace(target, known_hosts=known)
    result = run_remote(probe, ["true"], check=False, timeout=60)
    renew_session(probe)  # a question, not a session to keep
    if result.returncode == 0:
        return True
    if any(marker in result.stderr for marker in HOST_KEY_REFUSED):
        return False
    reason = " / ".join(line.strip() for line in result.stderr.strip().splitlines()[-3:]) or f"exit {result.returncode}"
    raise NixInfraError(
        f"{target.node}: cannot tell which host key it answers with: ssh failed for another reason "
        f"({reason}); check that it is reachable and that your key may log in (--ssh-key, provider.sshKeys)"
    )


def resume(node: str, target: SshTarget, facts: FactsStore, known: NodeFacts) -> bool:
    """An install an earlier run started (its final key is pending): True when the node answers
    with the final key (it is then recorded as installed and pinned alone); False when it still
    answers with the bootstrap key (the install starts again)."""
    assert known.pending_host_key is not None
    with _secret_dir() as workdir:
        if answers_with(target, known.pending_host_key, workdir):
            facts.write(replace(known, host_key=known.pending_host_key, installed=True, pending_host_key=None))
            return True
        if answers_with(target, known.host_key, workdir):
            return False
    raise NixInfraError(
        f"{node}: an earlier install was interrupted and the node answers with neither the bootstrap "
        f"nor the new host key (facts/{node}.json hostKey and pendingHostKey); check it in the Hetzner "
        f"console, or `destroy {node}` and provision again"
    )


# disko formats nixInfra.hetzner.disk (default /dev/sda): never let that be an attached Hetzner
# volume (a re-created stateful node gets its volume attached before the install)
DISK_CHECK = r"""
disk=$(readlink -f /dev/sda) || exit 0
for link in /dev/disk/by-id/scsi-0HC_Volume_*; do
  [ -e "$link" ] || continue
  if [ "$(readlink -f "$link")" = "$disk" ]; then echo "$link"; exit 3; fi
done
exit 0
"""


def check_install_disk(node: str, target: SshTarget) -> None:
    """Refuse to install when the disk disko formats (/dev/sda) is a Hetzner volume, naming it."""
    result = run_remote(target, ["/bin/sh", "-c", DISK_CHECK], check=False, timeout=60)
    if result.returncode == 3:
        raise NixInfraError(
            f"{node}: /dev/sda is the Hetzner volume {result.stdout.strip()}, not the server's own disk; "
            "the install would format it. Detach the volume (it is attached again after the install) and "
            "run deploy again; nothing was written"
        )
    if result.returncode != 0:
        raise NixInfraError(
            f"{node}: checking the install disk failed (exit {result.returncode}): {result.stderr.strip()[-300:]}"
        )


def install(flake: str, node: str, target: SshTarget, facts: FactsStore, *, reboot_timeout: float = 600.0) -> None:
    """Install NixOS on a fresh server and pin its final host key."""
    known = facts.read(node)
    if known is None or known.installed:
        raise NixInfraError(f"{node}: not a fresh server (facts say it is installed); refusing to wipe it")
    real_ssh = shutil.which("ssh")
    if real_ssh is None:
        raise NixInfraError("ssh is not installed")
    if known.pending_host_key is not None:
        if resume(node, target, facts, known):
            return
        known = replace(known, pending_host_key=None)
    check_install_disk(node, target)
    final = generate_host_key()
    with _secret_dir() as workdir:
        extra = workdir / "extra-files"
        write_extra_files(extra, final)
        bindir = workdir / "bin"
        bindir.mkdir()
        wrapper = bindir / "ssh"
        wrapper.write_text(ssh_wrapper(real_ssh, target))
        wrapper.chmod(0o755)
        env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
        # intent first: the new key is pinned next to the bootstrap one before anything can use it
        facts.write(replace(known, pending_host_key=final.public))
        run(
            nixos_anywhere_argv(flake, node, target, extra),
            env=env,
            what=f"{node}: installing NixOS (nixos-anywhere)",
            stream=f"{node}: nixos-anywhere",
        )
    facts.write(replace(known, host_key=final.public, installed=True, pending_host_key=None))
    # a session opened before the install checked the bootstrap key: the installed system's key
    # is proven by a new connection
    renew_session(target)
    wait_reachable(target, reboot_timeout)
