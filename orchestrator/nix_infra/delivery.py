"""Delivering credentials to nodes as systemd credentials, and restarting what loads them.

For each node, the values of its credentials are decrypted here, in memory,
and streamed over one SSH connection's stdin into a small script on the node
(data/deliver-credentials.sh) that runs `systemd-creds encrypt --name=NAME -
/var/lib/nix-infra/credentials/.NAME.cred.new` for each and checks that the new
file decrypts to the length and SHA-256 sent. No value is ever in argv, in a
file in the clear, or in a log. Nothing is committed before the whole stream
arrived: a cut connection changes nothing.

Then, on the node: an unchanged value keeps its old file (and mtime); the units
of every added or changed credential are recorded in a pending-restart file
(durable, so a cut after the commit still restarts them on the next delivery),
the new files are moved into place, credentials the node no longer needs are
removed, and the recorded units are `reset-failed` and `restart`ed, so a unit
that failed on its first boot for lack of its credential comes up.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from nix_infra.errors import NixInfraError
from nix_infra.manifest import Manifest, Node
from nix_infra.ssh import SshTarget, run_remote_script

log = logging.getLogger(__name__)

CREDENTIALS_DIR = "/var/lib/nix-infra/credentials"

# The node-side script (also used by the NixOS credentials check): see its header.
DELIVER_SCRIPT = (resources.files("nix_infra") / "data" / "deliver-credentials.sh").read_text()

# The etcd TLS material the platform delivers (controlplane.node_pki_credentials); no app
# secret may take one of these names, or delivery would have to pick one of two values.
PKI_PREFIX = "nix-infra-etcd-"
PLATFORM_PREFIX = "nix-infra-"  # lib reserves it: no app secret may start with it
PKI_CLIENT = ("nix-infra-etcd-ca", "nix-infra-etcd-client-cert", "nix-infra-etcd-client-key")
PKI_CTRL = (
    "nix-infra-etcd-server-cert",
    "nix-infra-etcd-server-key",
    "nix-infra-etcd-peer-cert",
    "nix-infra-etcd-peer-key",
)

# systemd's unit-name grammar (systemd.unit(5)): these characters, a known type suffix, <= 255.
UNIT_SUFFIXES = (
    "service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer", "slice", "scope",
)  # fmt: skip
_UNIT = re.compile(r"[A-Za-z0-9:_.\\@-]+\.(?:" + "|".join(UNIT_SUFFIXES) + r")")
UNIT_RULE = (
    "a systemd unit name: letters, digits and ':_.\\@-', not starting with '-', at most 255 characters, "
    f"ending in .{', .'.join(UNIT_SUFFIXES)}"
)


def is_unit_name(unit: str) -> bool:
    return len(unit) <= 255 and not unit.startswith("-") and _UNIT.fullmatch(unit) is not None


def check_unit_name(unit: str, where: str) -> str:
    """`unit` when it is a systemd unit name, else an error naming `where` it came from."""
    if not is_unit_name(unit):
        raise NixInfraError(f"{where}: {unit[:80]!r} is not {UNIT_RULE}")
    return unit


def check_unit_names(units: Iterable[str], where: str) -> tuple[str, ...]:
    return tuple(check_unit_name(u, where) for u in units)


@dataclass(frozen=True)
class DeliveryResult:
    node: str
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    removed: tuple[str, ...]
    restarted: tuple[str, ...]
    restart_failed: tuple[str, ...] = ()
    not_loaded: tuple[str, ...] = ()  # restart wanted, but the running system has no such unit yet
    message: str = field(default="", compare=False)  # the node-side tools' stderr, when a restart failed

    @property
    def touched(self) -> bool:
        """Whether this delivery changed anything on the node (files or units)."""
        return bool(self.changed or self.removed or self.restarted or self.restart_failed)

    @property
    def units(self) -> tuple[str, ...]:
        """The units this delivery (re)started or tried to."""
        return tuple(sorted({*self.restarted, *self.restart_failed}))

    def summary(self) -> str:
        text = f"credentials: {len(self.changed)} changed, {len(self.unchanged)} unchanged, {len(self.removed)} removed"
        if self.restarted:
            text += f"; restarted {', '.join(self.restarted)}"
        if self.restart_failed:
            text += f"; restart FAILED: {', '.join(self.restart_failed)}" + (
                f"\n{self.message}" if self.message else ""
            )
        return text


def deliver_command() -> str:
    """The node's side of a delivery, as the node's shell runs it (the frames come on its stdin)."""
    # --norc: bash started by sshd reads ~/.bashrc even when not interactive (seen costing 0.2 s)
    script = ["bash", "--norc", "--noprofile", "-c", DELIVER_SCRIPT, "deliver-credentials", CREDENTIALS_DIR]
    return shlex.join(script)


def frames(
    values: Mapping[str, bytes],
    units: Mapping[str, Sequence[str]] | None = None,
    keep: Iterable[str] = (),
) -> bytes:
    """The delivery stream: a `put NAME LENGTH SHA256` frame and the value per credential, a
    `units NAME UNIT...` line per credential that units load, and the `keep` line with the
    node's complete set (`values` plus `keep`: credentials to leave alone although not sent)."""
    out = bytearray()
    for name, value in sorted(values.items()):
        out += f"put {name} {len(value)} {hashlib.sha256(value).hexdigest()}\n".encode() + value
    for name, names in sorted((units or {}).items()):
        if name in values and names:
            out += f"units {name} {' '.join(names)}\n".encode()
    out += ("keep " + " ".join(sorted({*values, *keep})) + "\n").encode()
    return bytes(out)


def pki_credential_units(node: Node) -> dict[str, tuple[str, ...]]:
    """The units that load the platform's etcd TLS credentials on `node` (as modules/ wire them:
    etcd on ctrl nodes; flannel everywhere; confd where the node consumes groups; each app's
    registration unit)."""
    client = ["flannel.service"]
    if node.consumes:
        client.append("nix-infra-confd.service")
    client += [f"nix-infra-register-{app}.service" for app in node.apps]
    units: dict[str, tuple[str, ...]] = dict.fromkeys(PKI_CLIENT, tuple(sorted(client)))
    if node.type == "ctrl":
        units["nix-infra-etcd-ca"] = tuple(sorted({*client, "etcd.service"}))
        units.update(dict.fromkeys(PKI_CTRL, ("etcd.service",)))
    return units


def pki_credential_names(node: Node) -> tuple[str, ...]:
    return tuple(sorted(pki_credential_units(node)))


def credential_units(node: Node) -> dict[str, tuple[str, ...]]:
    """Credential name -> the units that load it: the manifest's credentialUnits (apps, the
    cache key) and the platform's etcd TLS material; every name checked."""
    units = {**pki_credential_units(node), **node.credential_units}
    for name, names in node.credential_units.items():
        check_unit_names(names, f"manifest: nodes.{node.name}.credentialUnits.{name}")
    return units


def check_credential_names(node: Node) -> None:
    """An app secret may not take a platform credential's name: delivery would silently give
    the app's credential the platform's value (or the other way round)."""
    clash = sorted(n for n in node.credentials if n.startswith(PKI_PREFIX))
    if clash:
        users = sorted({u for n in clash for u in node.credential_units.get(n, ())})
        raise NixInfraError(
            f"manifest: nodes.{node.name}.credentials: {', '.join(clash)} "
            f"{'is a platform credential name' if len(clash) == 1 else 'are platform credential names'} "
            f"(the node's etcd TLS material{'; wanted by ' + ', '.join(users) if users else ''}); "
            f"names starting with {PKI_PREFIX!r} are reserved, rename the app secret"
        )


def check_app_secrets(manifest: Manifest, node: Node) -> None:
    """No app on `node` may name a secret with the platform's prefix (`nix-infra-`): such a
    credential would be the platform's (the cache key, the etcd TLS material), loaded by the app."""
    apps: Mapping[str, Any] = manifest.raw.get("apps", {})
    for app in node.apps:
        spec = apps.get(app)
        secrets = spec.get("secrets", []) if isinstance(spec, dict) else []
        reserved = sorted(str(s) for s in secrets if str(s).startswith(PLATFORM_PREFIX))
        if reserved:
            raise NixInfraError(
                f"manifest: apps.{app}.secrets: {', '.join(reserved)}: names starting with {PLATFORM_PREFIX!r} "
                f"are the platform's credentials (on {node.name} the app would load the platform's value); "
                "rename the app secret"
            )


def check_node_names(node: Node, manifest: Manifest | None = None) -> None:
    """Everything of a node's credentials that becomes a name on the node: no app secret named
    like platform material, every unit that loads one a systemd unit name."""
    check_credential_names(node)
    credential_units(node)
    if manifest is not None:
        check_app_secrets(manifest, node)


def deliver(
    target: SshTarget,
    node: Node,
    values: Mapping[str, bytes],
    timeout: float = 240.0,
    *,
    keep: Iterable[str] = (),
) -> DeliveryResult:
    """Put exactly `values` as the node's credentials (leaving the ones named in `keep` alone,
    removing all others); reset and restart the units of those added or changed (and of any
    restart a previous delivery recorded but did not get to run)."""
    check_credential_names(node)
    units = credential_units(node)
    result = run_remote_script(
        target,
        deliver_command(),
        input_bytes=frames(values, units, keep),
        timeout=timeout,  # the restarts run in the same connection
        check=False,
        what=f"{node.name}: delivering {len(values)} credential(s)",
    )
    if result.returncode != 0:
        err = "\n".join(result.stderr.strip().splitlines()[-10:])[-1000:]
        raise NixInfraError(
            f"{node.name}: delivering credentials failed (exit {result.returncode}): {err or 'the node gave no reason'}"
        )
    status: dict[str, list[str]] = {
        k: [] for k in ("changed", "unchanged", "removed", "restarted", "restart-failed", "not-loaded")
    }
    for line in result.stdout.splitlines():
        kind, _, name = line.partition(" ")
        if kind in status and (kind in ("changed", "unchanged", "removed") or is_unit_name(name)):
            status[kind].append(name)
    failed = tuple(status["restart-failed"])
    return DeliveryResult(
        node.name,
        tuple(status["changed"]),
        tuple(status["unchanged"]),
        tuple(status["removed"]),
        tuple(status["restarted"]),
        failed,
        tuple(status["not-loaded"]),
        "\n".join(result.stderr.strip().splitlines()[-10:]) if failed else "",
    )


ValueSource = Callable[[str], bytes]


def node_values(node: Node, secret: ValueSource, extra: Mapping[str, bytes] | None = None) -> dict[str, bytes]:
    """The credential values of one node: its secrets (decrypted now) plus `extra` (e.g. PKI
    material). A name in both is an error, never a silent override."""
    check_credential_names(node)
    values = {name: secret(name) for name in node.credentials}
    clash = sorted(set(values) & set(extra or {}))
    if clash:
        raise NixInfraError(
            f"{node.name}: credential {', '.join(clash)} is both an app secret and platform material; "
            "rename the app secret"
        )
    values.update(extra or {})
    return values
