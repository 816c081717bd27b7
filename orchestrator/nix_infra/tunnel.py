"""A port forward to a service on a node (etcd on a ctrl node), in process, with the pinned host key.

A local listening socket on 127.0.0.1 whose every connection becomes a `direct-tcpip` channel of an
SSH connection of its own to the node (nix_infra.session: pinned, isolated; paramiko), so no ssh
process runs beside the orchestrator. Its own connection, not the node's session of the run: a
deploy renews that one after the node's switch, and a tunnel (the deploy lock's etcd lease) must
outlive it.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paramiko

from nix_infra.errors import NixInfraError
from nix_infra.session import connection_reason, open_session
from nix_infra.ssh import SshTarget

log = logging.getLogger(__name__)


def _bridge(client: socket.socket, channel: paramiko.Channel, stop: threading.Event) -> None:
    """Copy bytes both ways until either side ends (or the tunnel closes); then close both."""
    both: list[Any] = [client, channel]  # select takes any object with fileno()
    try:
        while not stop.is_set():
            readable, _, _ = select.select(both, [], [], 0.5)
            if client in readable:
                data = client.recv(65536)
                if not data:
                    break
                channel.sendall(data)
            if channel in readable:
                data = channel.recv(65536)
                if not data:
                    break
                client.sendall(data)
    except (OSError, EOFError, paramiko.SSHException) as exc:
        log.debug("port forward connection ended: %s", exc)
    finally:
        channel.close()
        client.close()


@contextmanager
def forward(t: SshTarget, remote_port: int, remote_host: str = "127.0.0.1", timeout: float = 20.0) -> Iterator[int]:
    """Forward a free local port to `remote_host:remote_port` as seen from the node; yields the local port.

    Raises NixInfraError when the node cannot be reached (or its host key is not the pinned one);
    a connection the node refuses to forward is closed at once (the client sees it fail)."""
    try:
        session = open_session(t)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise NixInfraError(
            f"{t.node}: SSH port forward to {remote_host}:{remote_port} failed: {connection_reason(exc)}"
        ) from exc
    transport = session.transport()
    listener = socket.socket()
    stop = threading.Event()
    bridges: list[threading.Thread] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                client, peer = listener.accept()
            except OSError:
                return
            try:
                channel = transport.open_channel("direct-tcpip", (remote_host, remote_port), peer[:2], timeout=timeout)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                log.debug("%s: forwarding to %s:%s refused: %s", t.node, remote_host, remote_port, exc)
                client.close()
                continue
            bridge = threading.Thread(target=_bridge, args=(client, channel, stop), daemon=True)
            bridges.append(bridge)
            bridge.start()

    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        local_port = int(listener.getsockname()[1])
        server = threading.Thread(target=serve, name=f"forward-{t.node}", daemon=True)
        server.start()
        yield local_port
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        for bridge in bridges:
            bridge.join(timeout=5)
        session.close()
