"""The manifest: the JSON document Nix evaluates and the orchestrator reads.

Documented in docs/manifest.md (schema: docs/manifest.schema.json). This module
turns it into frozen dataclasses and never re-derives cluster logic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nix_infra.errors import NixInfraError
from nix_infra.process import run

SUPPORTED_VERSIONS = (1,)
OWNER_LABEL = "nix-infra/cluster"


@dataclass(frozen=True)
class PortSet:
    tcp: tuple[int, ...]
    udp: tuple[int, ...]


@dataclass(frozen=True)
class Node:
    name: str
    type: str
    location: str
    server_type: str | None
    image: str
    private_ip: str
    labels: Mapping[str, str]
    system: str
    credentials: tuple[str, ...]
    credential_units: Mapping[str, tuple[str, ...]]
    wave: int
    consumes: tuple[str, ...]
    apps: tuple[str, ...]
    public_ports: PortSet
    private_ports: PortSet


@dataclass(frozen=True)
class Network:
    ip_range: str
    subnet: str
    gateway: str
    zone: str


@dataclass(frozen=True)
class EtcdCluster:
    """The control plane: ctrl members, their client endpoints and ports."""

    members: tuple[str, ...]
    endpoints: tuple[str, ...]
    client_port: int
    peer_port: int


@dataclass(frozen=True)
class Manifest:
    version: int
    cluster: str
    provider_type: str
    location: str
    network: Network
    ssh_keys: tuple[str, ...]
    admin_cidrs: tuple[str, ...]
    nodes: Mapping[str, Node]
    waves: tuple[tuple[str, ...], ...]
    etcd: EtcdCluster
    etcd_seed: Mapping[str, Any]
    secrets: tuple[str, ...]
    raw: Mapping[str, Any]

    @property
    def owner_labels(self) -> dict[str, str]:
        """The label every resource this cluster owns carries."""
        return {OWNER_LABEL: self.cluster}


class _Reader:
    """Reads fields from the manifest, naming the path of any that is missing or wrong."""

    def __init__(self, data: Any, path: str) -> None:
        self.data = data
        self.path = path

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(self.data, dict) or key not in self.data:
            raise NixInfraError(f"manifest: field {self.path}{key} is missing")
        value = self.data[key]
        if not isinstance(value, kind):
            raise NixInfraError(f"manifest: field {self.path}{key} has the wrong type")
        return value

    def sub(self, key: str) -> _Reader:
        return _Reader(self.get(key, dict), f"{self.path}{key}.")


def _ports(r: _Reader) -> PortSet:
    return PortSet(tcp=tuple(r.get("tcp", list)), udp=tuple(r.get("udp", list)))


def parse_manifest(data: Any) -> Manifest:
    """Check the version and turn manifest JSON data into a Manifest."""
    if not isinstance(data, dict):
        raise NixInfraError("manifest: expected a JSON object")
    version = data.get("version")
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        raise NixInfraError(
            f"manifest: version {version!r} is not supported by this nix-infra "
            f"(it reads version {supported}); update nix-infra or the cluster flake's input"
        )
    r = _Reader(data, "")
    provider = r.sub("provider")
    net = r.sub("network")
    nodes: dict[str, Node] = {}
    for name in sorted(r.get("nodes", dict)):
        n = r.sub("nodes").sub(name)
        fw = n.sub("firewall")
        nodes[name] = Node(
            name=n.get("name", str),
            type=n.get("type", str),
            location=n.get("location", str),
            server_type=n.get("serverType", (str, type(None))),
            image=n.get("image", str),
            private_ip=n.get("privateIp", str),
            labels=dict(n.get("labels", dict)),
            system=n.get("system", str),
            credentials=tuple(n.get("credentials", list)),
            credential_units={k: tuple(v) for k, v in n.get("credentialUnits", dict).items()},
            wave=n.get("wave", int),
            consumes=tuple(n.get("consumes", list)),
            apps=tuple(n.get("apps", list)),
            public_ports=_ports(fw.sub("public")),
            private_ports=_ports(fw.sub("private")),
        )
    return Manifest(
        version=version,
        cluster=r.get("cluster", str),
        provider_type=provider.get("type", str),
        location=provider.get("location", str),
        network=Network(
            ip_range=net.get("ipRange", str),
            subnet=net.get("subnet", str),
            gateway=net.get("gateway", str),
            zone=net.get("zone", str),
        ),
        ssh_keys=tuple(r.get("sshKeys", list)),
        admin_cidrs=tuple(r.get("adminCidrs", list)),
        nodes=nodes,
        waves=tuple(tuple(w) for w in r.get("waves", list)),
        etcd=EtcdCluster(
            members=tuple(r.sub("etcd").get("members", list)),
            endpoints=tuple(r.sub("etcd").get("endpoints", list)),
            client_port=r.sub("etcd").get("clientPort", int),
            peer_port=r.sub("etcd").get("peerPort", int),
        ),
        etcd_seed=dict(r.get("etcdSeed", dict)),
        secrets=tuple(r.get("secrets", list)),
        raw=data,
    )


def load_manifest_file(path: Path) -> Manifest:
    """Read a manifest from a JSON file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise NixInfraError(f"cannot read manifest {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NixInfraError(f"manifest {path} is not valid JSON: {exc}") from exc
    return parse_manifest(data)


def eval_manifest_argv(flake: str) -> list[str]:
    """The command that evaluates a cluster flake's manifest."""
    return [
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "eval",
        "--json",
        f"{flake}#nixInfra.manifest",
    ]


def load_manifest_flake(flake: str) -> Manifest:
    """Evaluate `<flake>#nixInfra.manifest` with nix and parse it."""
    result = run(eval_manifest_argv(flake), what=f"evaluating {flake}#nixInfra.manifest")
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise NixInfraError(f"nix eval of {flake}#nixInfra.manifest did not print JSON") from exc
    return parse_manifest(data)
