"""Per-node facts learned at provision time, and the cluster's pinned host keys.

facts/<node>.json     {"node", "hostKey", "publicIpv4", "publicIpv6", "sshPort", "installed",
                       "volumes": {<volume>: {"id", "linuxDevice"}} (only when the node has volumes)}
facts/known_hosts     one line per node: "<hosts> <key> nix-infra:<node>"

Host keys are generated on the operator's machine (cryptography's Ed25519),
so the key is known, and pinned, before the first connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nix_infra.errors import NixInfraError
from nix_infra.files import remove_stale_temp_files, write_atomically
from nix_infra.manifest import DNS_LABEL_RULE, IPV4, is_dns_label, parse_json

MARK = "nix-infra:"


@dataclass(frozen=True)
class HostKey:
    """A freshly generated SSH host key; `private_openssh` lives in memory only."""

    private_openssh: str
    public: str  # "ssh-ed25519 AAAA..."


def generate_host_key() -> HostKey:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return HostKey(private_openssh=private, public=public.decode())


@dataclass(frozen=True)
class VolumeFact:
    """A Hetzner volume of the node: its id (the device is /dev/disk/by-id/scsi-0HC_Volume_<id>)."""

    id: int
    linux_device: str

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "linuxDevice": self.linux_device}


def volume_device(volume_id: int) -> str:
    return f"/dev/disk/by-id/scsi-0HC_Volume_{volume_id}"


@dataclass(frozen=True)
class NodeFacts:
    node: str
    host_key: str
    public_ipv4: str | None  # None while the server is being created (the key is known first)
    public_ipv6: str | None = None
    ssh_port: int = 22
    # False from provision until NixOS is installed (the host key is then the bootstrap one)
    installed: bool = True
    # the node's Hetzner volumes by name (provision records them; the NixOS side mounts them)
    volumes: Mapping[str, VolumeFact] = field(default_factory=dict)
    # the final host key of an install under way (recorded before nixos-anywhere starts): until
    # the node answered with one of them, both keys are pinned
    pending_host_key: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "node": self.node,
            "hostKey": self.host_key,
            "publicIpv4": self.public_ipv4,
            "publicIpv6": self.public_ipv6,
            "sshPort": self.ssh_port,
            "installed": self.installed,
            **({"pendingHostKey": self.pending_host_key} if self.pending_host_key is not None else {}),
        }
        if self.volumes:
            out["volumes"] = {name: v.to_json() for name, v in sorted(self.volumes.items())}
        return out

    @classmethod
    def from_json(cls, data: object, node: str | None = None) -> NodeFacts:
        """Facts as read from facts/<node>.json: every field is checked, since each ends up in
        known_hosts lines and ssh arguments. A ValueError names the field and what is allowed."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object with {', '.join(FACT_FIELDS)}")
        unknown = sorted(str(k) for k in data if k not in FACT_FIELDS)
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}; allowed fields are: {', '.join(FACT_FIELDS)}")
        for required in ("node", "hostKey"):
            if required not in data:
                raise ValueError(f"field {required} is missing")
        name = data["node"]
        if not isinstance(name, str) or not is_dns_label(name):
            raise ValueError(f"node: {name!r} is not a node name ({DNS_LABEL_RULE})")
        if node is not None and name != node:
            raise ValueError(f"node: {name!r} is not the node this file is for ({node!r})")
        host_key = data["hostKey"]
        if not isinstance(host_key, str) or HOST_KEY.fullmatch(host_key) is None:
            raise ValueError("hostKey: not an OpenSSH public key line ('ssh-ed25519 AAAA...')")
        ipv4 = data.get("publicIpv4")
        if ipv4 is not None and (not isinstance(ipv4, str) or IPV4.fullmatch(ipv4) is None):
            raise ValueError(f"publicIpv4: {ipv4!r} is not an IPv4 address or null")
        ipv6 = data.get("publicIpv6")
        if ipv6 is not None and (not isinstance(ipv6, str) or not _is_ipv6(ipv6)):
            raise ValueError(f"publicIpv6: {ipv6!r} is not an IPv6 address or network, or null")
        port = data.get("sshPort", 22)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"sshPort: {port!r} is not a port (1-65535)")
        installed = data.get("installed", True)
        if not isinstance(installed, bool):
            raise ValueError(f"installed: {installed!r} is not true or false")
        volumes = _volumes(data.get("volumes", {}))
        pending = data.get("pendingHostKey")
        if pending is not None and (not isinstance(pending, str) or HOST_KEY.fullmatch(pending) is None):
            raise ValueError("pendingHostKey: not an OpenSSH public key line ('ssh-ed25519 AAAA...') or null")
        return cls(
            node=name,
            host_key=host_key,
            public_ipv4=ipv4,
            public_ipv6=ipv6,
            ssh_port=port,
            # absent means installed: a missing field must never get a server wiped
            installed=installed,
            volumes=volumes,
            pending_host_key=pending,
        )


def _volumes(data: object) -> dict[str, VolumeFact]:
    """facts' `volumes`: name -> {id, linuxDevice}; the id ends up in a device path and a mount."""
    if not isinstance(data, dict):
        raise ValueError("volumes: expected an object of volume name -> {id, linuxDevice}")
    out = {}
    for name, v in data.items():
        if not isinstance(name, str) or not is_dns_label(name):
            raise ValueError(f"volumes: {name!r} is not a volume name ({DNS_LABEL_RULE})")
        if not isinstance(v, dict) or sorted(v) != ["id", "linuxDevice"]:
            raise ValueError(f"volumes.{name}: expected exactly the fields id, linuxDevice")
        vid = v["id"]
        if isinstance(vid, bool) or not isinstance(vid, int) or not 1 <= vid < 2**63:
            raise ValueError(f"volumes.{name}.id: {vid!r} is not a volume id (a positive whole number)")
        if v["linuxDevice"] != volume_device(vid):
            raise ValueError(f"volumes.{name}.linuxDevice: {v['linuxDevice']!r} is not {volume_device(vid)!r}")
        out[name] = VolumeFact(id=vid, linux_device=volume_device(vid))
    return out


FACT_FIELDS = ("node", "hostKey", "publicIpv4", "publicIpv6", "sshPort", "installed", "volumes", "pendingHostKey")
HOST_KEY = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+=*( [!-~]+)*")


def _is_ipv6(value: str) -> bool:
    if re.fullmatch(r"[0-9A-Fa-f:]+(/[0-9]{1,3})?", value) is None:
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


_LOCK = threading.Lock()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One writer at a time: threads of this process, and other nix-infra processes (flock)."""
    directory.mkdir(parents=True, exist_ok=True)
    with _LOCK, open(directory / ".nix-infra.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        remove_stale_temp_files(
            [directory], recursive=False
        )  # every writer here holds this lock: any temp file is litter
        yield


class FactsStore:
    """facts/ of a cluster repo. Updates of known_hosts are read-modify-write, so they are locked."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.known_hosts = directory / "known_hosts"

    def read(self, node: str) -> NodeFacts | None:
        if not is_dns_label(node):  # the name becomes a path: never one outside facts/
            raise NixInfraError(f"facts: {node!r} is not a node name ({DNS_LABEL_RULE})")
        path = self.directory / f"{node}.json"
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            raise NixInfraError(f"{path} is a directory; expected a facts file (JSON)") from None
        except OSError as exc:
            raise NixInfraError(f"{path}: cannot be read ({exc.strerror})") from None
        try:
            return NodeFacts.from_json(parse_json(raw, str(path)), node)
        except ValueError as exc:
            raise NixInfraError(f"{path} is not a valid facts file: {exc}") from None

    def write(self, facts: NodeFacts) -> None:
        with _locked(self.directory):
            self._write(facts)

    def _write(self, facts: NodeFacts) -> None:
        # known_hosts first: facts with an address then always have their pinned key,
        # even if this process is killed between the two writes
        if facts.public_ipv4 is not None:
            keys = [facts.host_key, *([facts.pending_host_key] if facts.pending_host_key else [])]
            self._pin(facts.node, [self._host(facts)], *keys)
        write_atomically(self.directory / f"{facts.node}.json", (json.dumps(facts.to_json(), indent=2) + "\n").encode())

    @staticmethod
    def _host(facts: NodeFacts) -> str:
        assert facts.public_ipv4 is not None
        return facts.public_ipv4 if facts.ssh_port == 22 else f"[{facts.public_ipv4}]:{facts.ssh_port}"

    def is_pinned(self, facts: NodeFacts) -> bool:
        """Whether known_hosts holds exactly this node's address and key."""
        if facts.public_ipv4 is None or not self.known_hosts.exists():
            return False
        key = " ".join(facts.host_key.split()[:2])
        return f"{self._host(facts)} {key} {MARK}{facts.node}" in self.known_hosts.read_text().splitlines()

    def pin(self, node: str, hosts: list[str], public_key: str) -> None:
        """Make `public_key` the only key known_hosts accepts for `node`'s hosts."""
        with _locked(self.directory):
            self._pin(node, hosts, public_key)

    def _pin(self, node: str, hosts: list[str], *public_keys: str) -> None:
        """The node's lines become one per key (two only while an install's new key is pending)."""
        lines = self.known_hosts.read_text().splitlines() if self.known_hosts.exists() else []
        kept = [line for line in lines if not line.endswith(f" {MARK}{node}")]
        for public_key in dict.fromkeys(public_keys):
            key = " ".join(public_key.split()[:2])
            kept.append(f"{','.join(hosts)} {key} {MARK}{node}")
        write_atomically(self.known_hosts, ("\n".join(sorted(kept)) + "\n").encode())

    def nodes(self) -> list[str]:
        """Every node with a facts file or a known_hosts pin."""
        found = {p.stem for p in self.directory.glob("*.json") if is_dns_label(p.stem)}
        if self.known_hosts.exists():
            for line in self.known_hosts.read_text().splitlines():
                mark = line.rsplit(" ", 1)[-1]
                if mark.startswith(MARK) and is_dns_label(mark.removeprefix(MARK)):
                    found.add(mark.removeprefix(MARK))
        return sorted(found)

    def knows(self, node: str) -> bool:
        """Whether anything of `node` is recorded: its facts file or its pinned host key."""
        return node in self.nodes()

    def forget(self, node: str) -> None:
        with _locked(self.directory):
            self._forget(node)

    def _forget(self, node: str) -> None:
        if self.known_hosts.exists():
            lines = self.known_hosts.read_text().splitlines()
            kept = "".join(f"{line}\n" for line in lines if not line.endswith(f" {MARK}{node}"))
            write_atomically(self.known_hosts, kept.encode())
        (self.directory / f"{node}.json").unlink(missing_ok=True)
