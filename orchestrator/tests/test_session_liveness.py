"""Sessions against a node that misbehaves mid-command (found by a review): each failed before its fix."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nix_infra.session import Outcome, Sessions
from nix_infra.ssh import SshTarget

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(not Path(SSHD).exists(), reason="needs openssh-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[SshTarget, subprocess.Popen[bytes]]]:
    """One sshd on loopback (not daemonized: its pid is the Popen's), a target pinned to its key."""
    for name in ("hostkey", "userkey"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    shutil.copy(tmp_path / "userkey.pub", tmp_path / "authorized_keys")
    Path("/run/sshd").mkdir(exist_ok=True)
    port = _free_port()
    (tmp_path / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path}/hostkey\n"
        f"AuthorizedKeysFile {tmp_path}/authorized_keys\nPermitRootLogin yes\nStrictModes no\nUsePAM no\n"
        f"PidFile none\n"
    )
    host_key = " ".join((tmp_path / "hostkey.pub").read_text().split()[:2])
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp_path / "sshd_config")], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "sshd did not start"
            time.sleep(0.1)
    t = SshTarget(
        node="w1", host="127.0.0.1", port=port, known_hosts=tmp_path / "known_hosts", identity=tmp_path / "userkey"
    )
    try:
        yield t, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [p for c in out for p in (int(c), *_descendants(int(c)))]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def test_a_remote_command_killed_by_a_signal_is_not_a_lost_connection(
    sshd: tuple[SshTarget, subprocess.Popen[bytes]],
) -> None:
    """A command the node kills (OOM killer: SIGKILL) fails naming the signal; the connection,
    which is fine, is kept. Today paramiko drops the exit-signal message: the command is reported
    as "connection lost: the channel closed without an exit status" and the session reopened."""
    t, _ = sshd
    sessions = Sessions()
    try:
        assert sessions.execute(t, "true", timeout=60).returncode == 0
        killed = sessions.execute(t, "kill -KILL $$", timeout=60)
        assert killed.returncode != 0
        assert b"connection lost" not in killed.stderr, killed.stderr
        assert b"KILL" in killed.stderr, killed.stderr
        assert sessions.execute(t, "true", timeout=60).returncode == 0
        assert sessions.opened(t) == 1  # the connection never dropped
    finally:
        sessions.close_all()


def test_a_node_that_stops_answering_mid_command_fails_the_command(
    sshd: tuple[SshTarget, subprocess.Popen[bytes]],
) -> None:
    """session.py says its keepalive does what ServerAliveInterval 5 / ServerAliveCountMax 3 do
    (OpenSSH gives up after ~15 s, "Timeout, server not responding"). A node whose sshd stops
    answering while its TCP stack still acknowledges (a frozen process, a hung node with a live
    kernel) is never given up: paramiko's keepalive asks for no reply, so TCP_USER_TIMEOUT never
    fires. The bound below is 6x OpenSSH's; it waited for ever before session.py's _Liveness."""
    t, proc = sshd
    sessions = Sessions()
    stopped: list[int] = []
    result: list[Outcome | BaseException] = []

    def run() -> None:
        try:
            result.append(sessions.execute(t, "sleep 20; echo done"))
        except BaseException as exc:
            result.append(exc)

    try:
        assert sessions.execute(t, "true", timeout=60).returncode == 0
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        deadline = time.monotonic() + 30
        while not any("sleep" in _cmdline(p) for p in _descendants(proc.pid)):
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.05)
        stopped = _descendants(proc.pid)  # the connection's sshd processes and the command
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):  # a short-lived child may be gone already
                os.kill(pid, signal.SIGSTOP)
        worker.join(90)
        assert result, "the command still waits on a node that stopped answering 90 s ago"
        assert isinstance(result[0], Outcome) and result[0].returncode == 255, result
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        sessions.close_all()
