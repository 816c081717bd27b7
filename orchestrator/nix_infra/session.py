"""SSH sessions to nodes over fabric (paramiko): one per node per run, host keys pinned.

Every remote command of the orchestrator (deploy's probe, delivery, activation, confirmation,
health; `cmd`, `status`, `action --store-as-secret`...) runs on a channel of the node's session:
the first use opens it, later ones reuse it, so a run pays one key exchange per node instead of
one per command. `renew(target)` closes it so the next command opens a *fresh* connection: the
deploy does that after the switch, since magic rollback must prove that a new connection works.

Isolation: no ssh_config is read (fabric Config with an explicit empty SSHConfig, lazy: neither
~/.ssh/config nor /etc/ssh/ssh_config nor fabric's own config files), no gateway/proxy, no agent
forwarding. Pinning: the node's keys are the lines of facts/known_hosts for its name (`host`, or
`[host]:port` off port 22); no other known_hosts file is loaded and any other key is refused
(PinnedKeys, a RejectPolicy that accepts exactly those keys: unlike paramiko's HostKeys it keeps two
keys of one type for one host, as during an install); the host key algorithms offered are the
pinned keys' types only. Identities as ssh.pinned_settings: with an --ssh-key only that file, and
the agent only when the file is one only the agent can use; without one, ssh's default keys and
the agent.

OpenSSH stays where a tool needs it (nix copy's ssh-ng, nixos-anywhere, interactive `ssh`, attached
`backup`/`action`), with the pinned options of ssh.py.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass

import paramiko
from fabric import Config, Connection
from paramiko.config import SSHConfig

from nix_infra.ssh import SshTarget, identity_needs_agent

log = logging.getLogger(__name__)

# the exit code OpenSSH gives when the connection failed or dropped; callers tell it from the
# command's own codes, as before
CONNECTION_FAILED = 255
KEEPALIVE_SECONDS = 5  # as ServerAliveInterval in ssh.py
_RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
# every host key algorithm paramiko may negotiate (those not pinned are disabled per connection)
HOST_KEY_ALGORITHMS: tuple[str, ...] = tuple(paramiko.Transport._preferred_keys)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Outcome:
    """A remote command's exit code (255: the connection failed or dropped) and its output."""

    returncode: int
    stdout: bytes
    stderr: bytes


def pinned_keys(t: SshTarget) -> set[tuple[str, str]]:
    """The (key type, base64) pairs facts/known_hosts pins for the node's name; empty when none
    (or no file). Only plain entries count: no markers (@revoked, @cert-authority), no hashed names."""
    name = t.known_hosts_name()
    try:
        lines = t.known_hosts.read_text().splitlines()
    except OSError:
        return set()
    keys: set[tuple[str, str]] = set()
    for line in lines:
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith(("#", "@", "|")):
            continue
        if name in fields[0].split(","):
            keys.add((fields[1], fields[2]))
    return keys


def fingerprint(key: paramiko.PKey) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class PinnedKeys(paramiko.MissingHostKeyPolicy):
    """Accept exactly the pinned keys: with no host key loaded into the client, paramiko asks this
    policy about every key it is offered; anything else is refused as OpenSSH refuses it."""

    def __init__(self, t: SshTarget, keys: set[tuple[str, str]]) -> None:
        self.target = t
        self.keys = keys

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if (key.get_name(), key.get_base64()) not in self.keys:
            raise paramiko.SSHException(
                f"Host key verification failed: {hostname} offered the {key.get_name()} key {fingerprint(key)}, "
                f"which {self.target.known_hosts} does not pin for it (an impostor, or a reinstalled node)"
            )


def fabric_config() -> Config:
    """A fabric Config that reads no file: no ssh_config, no fabric.yaml; no agent forwarding."""
    config = Config(ssh_config=SSHConfig(), lazy=True, overrides={"load_ssh_configs": False, "forward_agent": False})
    return config


def connection(t: SshTarget) -> Connection:
    """A fabric Connection to the node (not yet open), pinned and isolated as the module says."""
    keys = pinned_keys(t)
    types = {k for k, _ in keys}
    allowed = types | (set(_RSA_ALGORITHMS) if "ssh-rsa" in types else set())
    disabled = [k for k in HOST_KEY_ALGORITHMS if k not in allowed]
    connect_kwargs: dict[str, object] = {
        "disabled_algorithms": {"keys": disabled},
        "banner_timeout": t.connect_timeout,
        "auth_timeout": max(t.connect_timeout, 30),
        "channel_timeout": max(t.connect_timeout, 30),
    }
    if t.identity is not None:
        connect_kwargs.update(
            key_filename=[str(t.identity)], look_for_keys=False, allow_agent=identity_needs_agent(t.identity)
        )
    else:
        connect_kwargs.update(look_for_keys=True, allow_agent=True)
    conn = Connection(
        t.host,
        user=t.user,
        port=t.port,
        config=fabric_config(),
        gateway=False,  # fabric: any non-None value is taken as given; False: no gateway
        forward_agent=False,
        connect_timeout=t.connect_timeout,
        connect_kwargs=connect_kwargs,
    )
    client = paramiko.SSHClient()  # no host keys loaded: every key goes through PinnedKeys
    client.set_missing_host_key_policy(PinnedKeys(t, keys))
    conn.client = client
    return conn


class _Liveness:
    """What ServerAliveInterval 5 / ServerAliveCountMax 3 do for OpenSSH: every 5 s a keepalive
    the server must answer (paramiko's own keepalive asks for no answer, so a frozen sshd or a hung
    node whose kernel still acknowledges TCP would go unnoticed); `unanswered_for()` tells a waiting
    command how long the server has owed its answer. Also TCP_USER_TIMEOUT (15 s), so data that stays
    unacknowledged gives the connection up: a node that vanished fails a command instead of hanging it."""

    def __init__(self, transport: paramiko.Transport) -> None:
        self.transport = transport
        self.asked: float | None = None
        sock = transport.sock
        if isinstance(sock, socket.socket) and hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, KEEPALIVE_SECONDS * 3 * 1000)
        threading.Thread(target=self._run, daemon=True, name="ssh-alive").start()

    def _run(self) -> None:
        while self.transport.is_active():
            time.sleep(KEEPALIVE_SECONDS)
            if not self.transport.is_active():
                return
            self.asked = time.monotonic()
            try:  # an answer of either kind (OpenSSH refuses the request) proves the server is there
                self.transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:  # the transport closed under us: the command sees it
                return
            self.asked = None

    def unanswered_for(self) -> float:
        asked = self.asked
        return 0.0 if asked is None else time.monotonic() - asked


def _liveness(transport: paramiko.Transport) -> _Liveness | None:
    alive = getattr(transport, "_nix_infra_liveness", None)
    return alive if isinstance(alive, _Liveness) else None


def _detect_a_dead_peer(transport: paramiko.Transport) -> None:
    transport._nix_infra_liveness = _Liveness(transport)  # type: ignore[attr-defined]


_original_handle_request = paramiko.Channel._handle_request  # type: ignore[attr-defined]


def _handle_request(self: paramiko.Channel, m: paramiko.Message) -> None:
    """paramiko drops the `exit-signal` request (RFC 4254 6.10): a command killed by a signal looks
    like a cut connection. Record the signal's name and end the wait for a status as OpenSSH does."""
    start = m.packet.tell()
    if m.get_text() != "exit-signal":
        m.packet.seek(start)
        _original_handle_request(self, m)
        return
    m.get_boolean()  # want_reply: never set for exit-signal
    self._nix_infra_exit_signal = m.get_text()  # type: ignore[attr-defined]
    self.status_event.set()


# the transport dispatches channel messages through a table of the functions themselves
paramiko.Transport._channel_handler_table[paramiko.common.MSG_CHANNEL_REQUEST] = _handle_request  # type: ignore[attr-defined]


class _Session:
    def __init__(self, t: SshTarget) -> None:
        self.target = t
        self.lock = threading.Lock()
        self.conn: Connection | None = None
        self.opened = 0  # connections made (a key exchange each)

    def transport(self) -> paramiko.Transport:
        """The open transport, connecting first when there is none or it died. Raises
        paramiko/socket errors on failure."""
        with self.lock:
            if self.conn is not None and self.conn.is_connected:
                alive: paramiko.Transport = self.conn.transport
                return alive
            self.close_locked()
            t = self.target
            if not pinned_keys(t):
                raise paramiko.SSHException(
                    f"Host key verification failed: {t.known_hosts} pins no key for {t.known_hosts_name()}"
                )
            conn = connection(t)
            try:
                conn.open()
            except BaseException:
                conn.close()
                raise
            self.opened += 1
            self.conn = conn
            transport: paramiko.Transport = conn.transport
            _detect_a_dead_peer(transport)
            return transport

    def close_locked(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        with self.lock:
            self.close_locked()

    def drop(self, transport: paramiko.Transport) -> None:
        """Forget the connection `transport` belongs to (it failed), unless it was replaced already."""
        with self.lock:
            if self.conn is not None and self.conn.transport is transport:
                self.close_locked()


class Sessions:
    """The sessions of this run, one per target (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[SshTarget, _Session] = {}

    def _session(self, t: SshTarget) -> _Session:
        with self._lock:
            s = self._sessions.get(t)
            if s is None:
                s = self._sessions[t] = _Session(t)
            return s

    def execute(
        self, t: SshTarget, command: str, *, stdin: bytes | None = None, timeout: float | None = None
    ) -> Outcome:
        """Run `command` (a shell command line, as OpenSSH passes it) in a new channel of the
        node's session, `stdin` sent then closed. A connection that cannot be made or drops gives
        returncode 255 with the reason in stderr. Raises TimeoutError after `timeout` seconds (the
        channel is closed; the session stays)."""
        session = self._session(t)
        try:
            transport = session.transport()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            return Outcome(CONNECTION_FAILED, b"", f"ssh: {t.node} ({t.host} port {t.port}): {_reason(exc)}\n".encode())
        try:
            return _exec(transport, command, stdin, timeout)
        except TimeoutError:
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            session.drop(transport)
            return Outcome(
                CONNECTION_FAILED, b"", f"ssh: {t.node} ({t.host}): connection lost: {_reason(exc)}\n".encode()
            )

    def renew(self, t: SshTarget) -> None:
        """Close the node's session: its next command opens a fresh connection."""
        self._session(t).close()

    def opened(self, t: SshTarget) -> int:
        """How many connections this run made to `t` (each one key exchange)."""
        return self._session(t).opened

    def close_all(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            s.close()


def open_session(t: SshTarget) -> _Session:
    """A connection of its own to the node (not the run's session), open; the caller closes it.
    Raises paramiko/socket errors (connection_reason says why)."""
    session = _Session(t)
    session.transport()
    return session


def connection_reason(exc: BaseException) -> str:
    """Why a connection failed, in words like OpenSSH's."""
    return _reason(exc)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "Connection timed out"
    if isinstance(exc, paramiko.AuthenticationException):
        return f"Permission denied (publickey): {exc}"
    return str(exc) or type(exc).__name__


def _exec(transport: paramiko.Transport, command: str, stdin: bytes | None, timeout: float | None) -> Outcome:
    """Run `command` on a new channel; its exit code and output. Raises EOFError/SSHException when
    the connection drops, TimeoutError after `timeout` seconds."""
    channel = transport.open_session(timeout=30)
    try:
        channel.exec_command(command)
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        while True:
            got = False
            while channel.recv_ready():
                out += channel.recv(65536)
                got = True
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
                got = True
            drained = not channel.recv_ready() and not channel.recv_stderr_ready()
            if drained and (channel.closed or (channel.exit_status_ready() and channel.eof_received)):
                break
            if not transport.is_active():
                raise EOFError("the connection dropped")
            alive = _liveness(transport)
            if alive is not None and alive.unanswered_for() > KEEPALIVE_SECONDS * 3:
                transport.close()
                raise EOFError(f"Timeout, server not responding (no answer for {KEEPALIVE_SECONDS * 3} s)")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s")
            if got:
                continue
            if channel.eof_received:  # output ended (the fileno stays readable): wait for the exit status
                channel.status_event.wait(1.0)
            else:  # wait for output, EOF or close (paramiko signals them on the channel's fileno)
                select.select([channel], [], [], 1.0)
        killed_by = getattr(channel, "_nix_infra_exit_signal", None)
        if killed_by is not None:  # exit 255 as OpenSSH's; the session is fine
            err += f"remote command killed by signal {killed_by}\n".encode("utf-8", "replace")
            return Outcome(CONNECTION_FAILED, bytes(out), bytes(err))
        # paramiko reports -1 when the channel closed without an exit status (the session was cut)
        code = channel.recv_exit_status() if channel.exit_status_ready() else -1
        if code < 0:
            raise EOFError("the channel closed without an exit status")
        return Outcome(code, bytes(out), bytes(err))
    finally:
        channel.close()


SESSIONS = Sessions()
atexit.register(SESSIONS.close_all)
