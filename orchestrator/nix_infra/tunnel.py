"""An SSH port forward to a service on a node (etcd on a ctrl node), with the pinned host key."""

from __future__ import annotations

import logging
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from nix_infra.errors import NixInfraError
from nix_infra.ssh import SshTarget, ssh_options

log = logging.getLogger(__name__)


def forward_argv(t: SshTarget, local_port: int, remote_host: str, remote_port: int) -> list[str]:
    """`ssh -N -L 127.0.0.1:LOCAL:REMOTE_HOST:REMOTE_PORT`: fails at once if the forward cannot be set up."""
    return [
        "ssh",
        *ssh_options(t, forwarding=True),
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        f"127.0.0.1:{local_port}:{remote_host}:{remote_port}",
        t.destination,
    ]


def _free_local_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def forward(t: SshTarget, remote_port: int, remote_host: str = "127.0.0.1", timeout: float = 20.0) -> Iterator[int]:
    """Forward a free local port to `remote_host:remote_port` as seen from the node; yields the local port.

    The one long-running ssh process of the orchestrator: it is not a command with an
    exit code to check but a channel, so it runs beside process.run(), logged the same way.
    """
    local_port = _free_local_port()
    argv = forward_argv(t, local_port, remote_host, remote_port)
    log.debug("$ %s", shlex.join(argv))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise NixInfraError(
                    f"{t.node}: SSH port forward to {remote_host}:{remote_port} failed (exit {proc.returncode}): "
                    f"{err.splitlines()[-1] if err else 'no message'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", local_port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise NixInfraError(f"{t.node}: SSH port forward not ready after {timeout:.0f} s") from None
                time.sleep(0.05)
        yield local_port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
