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
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from nix_infra.errors import NixInfraError
from nix_infra.facts import FactsStore, HostKey, generate_host_key
from nix_infra.process import run
from nix_infra.ssh import SshTarget, run_remote, ssh_options


def nixos_anywhere_argv(flake: str, node: str, target: SshTarget, extra_files: Path) -> list[str]:
    argv = [
        "nixos-anywhere",
        "--flake", f"{flake}#{node}",
        "--target-host", target.destination,
        "--ssh-port", str(target.port),
        "--ssh-option", f"UserKnownHostsFile={target.known_hosts}",
        "--ssh-option", "StrictHostKeyChecking=yes",
        "--extra-files", str(extra_files),
    ]  # fmt: skip
    if target.identity is not None:
        argv += ["-i", str(target.identity)]
    return argv


def ssh_wrapper(real_ssh: str, target: SshTarget) -> str:
    """An `ssh` that puts the pinned options first, so later `-o StrictHostKeyChecking=no` lose."""
    pinned = [o for o in ssh_options(target) if o not in ("-p", str(target.port))]
    return f'#!/bin/sh\nexec {shlex.quote(real_ssh)} {shlex.join(pinned)} "$@"\n'


def _secret_dir() -> Path:
    """A private directory in memory (tmpfs) for the host key's few seconds outside Python."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="nix-infra-", dir=base))
    path.chmod(0o700)
    return path


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


def install(flake: str, node: str, target: SshTarget, facts: FactsStore, *, reboot_timeout: float = 600.0) -> None:
    """Install NixOS on a fresh server and pin its final host key."""
    known = facts.read(node)
    if known is None or known.installed:
        raise NixInfraError(f"{node}: not a fresh server (facts say it is installed); refusing to wipe it")
    real_ssh = shutil.which("ssh")
    if real_ssh is None:
        raise NixInfraError("ssh is not installed")
    final = generate_host_key()
    workdir = _secret_dir()
    try:
        extra = workdir / "extra-files"
        write_extra_files(extra, final)
        bindir = workdir / "bin"
        bindir.mkdir()
        wrapper = bindir / "ssh"
        wrapper.write_text(ssh_wrapper(real_ssh, target))
        wrapper.chmod(0o755)
        env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
        run(nixos_anywhere_argv(flake, node, target, extra), env=env, what=f"{node}: installing NixOS (nixos-anywhere)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    facts.write(replace(known, host_key=final.public, installed=True))
    wait_reachable(target, reboot_timeout)
