"""Delivering credentials to nodes as systemd credentials, and restarting what loads them.

For each node, the values of its credentials are decrypted here, in memory,
and streamed over one SSH connection's stdin into a small script on the node
that runs `systemd-creds encrypt --name=NAME - /var/lib/nix-infra/credentials/NAME.cred`
for each. No value is ever in argv, in a file in the clear, or in a log. The
script compares the new credential with the old one by decrypting both into a
pipe (`cmp`): an unchanged value keeps its old file (and mtime) and restarts
nothing. Credentials the node no longer needs are removed.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from nix_infra.errors import NixInfraError
from nix_infra.manifest import Node
from nix_infra.process import run
from nix_infra.ssh import SshTarget, run_remote, ssh_script_argv

log = logging.getLogger(__name__)

CREDENTIALS_DIR = "/var/lib/nix-infra/credentials"

# The node-side script (also used by the NixOS credentials check): see its header.
DELIVER_SCRIPT = (resources.files("nix_infra") / "data" / "deliver-credentials.sh").read_text()


@dataclass(frozen=True)
class DeliveryResult:
    node: str
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    removed: tuple[str, ...]
    restarted: tuple[str, ...]


def deliver_argv(target: SshTarget) -> list[str]:
    # --norc: bash started by sshd reads ~/.bashrc even when not interactive (seen costing 0.2 s)
    script = ["bash", "--norc", "--noprofile", "-c", DELIVER_SCRIPT, "deliver-credentials", CREDENTIALS_DIR]
    return ssh_script_argv(target, shlex.join(script))


def frames(values: Mapping[str, bytes]) -> bytes:
    out = bytearray()
    for name, value in sorted(values.items()):
        out += f"put {name} {len(value)}\n".encode() + value
    out += ("keep " + " ".join(sorted(values)) + "\n").encode()
    return bytes(out)


def units_to_restart(node: Node, changed: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted({unit for name in changed for unit in node.credential_units.get(name, ())}))


def deliver(target: SshTarget, node: Node, values: Mapping[str, bytes], timeout: float = 120.0) -> DeliveryResult:
    """Put exactly `values` as the node's credentials; restart the units of those that changed."""
    result = run(
        deliver_argv(target),
        input_bytes=frames(values),
        timeout=timeout,
        check=False,
        what=f"{node.name}: delivering {len(values)} credential(s)",
    )
    if result.returncode != 0:
        err = result.stderr.strip()
        raise NixInfraError(f"{node.name}: delivering credentials failed (exit {result.returncode}): {err[-500:]}")
    status: dict[str, list[str]] = {"changed": [], "unchanged": [], "removed": []}
    for line in result.stdout.splitlines():
        kind, _, name = line.partition(" ")
        if kind in status:
            status[kind].append(name)
    restart = units_to_restart(node, status["changed"])
    if restart:
        run_remote(target, ["systemctl", "try-restart", *restart], timeout=120)
    return DeliveryResult(
        node.name, tuple(status["changed"]), tuple(status["unchanged"]), tuple(status["removed"]), restart
    )


ValueSource = Callable[[str], bytes]


def node_values(node: Node, secret: ValueSource, extra: Mapping[str, bytes] | None = None) -> dict[str, bytes]:
    """The credential values of one node: its secrets (decrypted now) plus `extra` (e.g. PKI material)."""
    values = {name: secret(name) for name in node.credentials}
    values.update(extra or {})
    return values
