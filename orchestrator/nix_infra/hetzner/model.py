"""Desired and actual Hetzner state as frozen dataclasses.

`desired_state(manifest)` is pure: the resources the manifest asks for.
`read_actual(client, cluster)` is a snapshot of the project as the API shows
it (owned resources, plus what a plan must know of foreign ones: their names
and SSH-key fingerprints, never to change them).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hcloud import Client

from nix_infra.errors import NixInfraError
from nix_infra.hetzner.client import api_errors
from nix_infra.manifest import OWNER_LABEL, Manifest

ANYWHERE = ("0.0.0.0/0", "::/0")
Labels = tuple[tuple[str, str], ...]


def labels_tuple(labels: Mapping[str, str] | None) -> Labels:
    return tuple(sorted((labels or {}).items()))


def normalize_cidr(cidr: str) -> str:
    try:
        return str(ipaddress.ip_network(cidr, strict=False))
    except ValueError:
        return cidr


def ssh_fingerprint(public_key: str) -> str:
    """The MD5 fingerprint Hetzner shows for an OpenSSH public key ("aa:bb:...")."""
    try:
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (IndexError, ValueError, binascii.Error) as exc:
        raise NixInfraError(f"sshKeys: not an OpenSSH public key: {public_key[:40]}...") from exc
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


@dataclass(frozen=True, order=True)
class Rule:
    direction: str
    protocol: str
    port: str | None
    sources: tuple[str, ...]
    description: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "protocol": self.protocol,
            "port": self.port,
            "source_ips": list(self.sources),
            "description": self.description,
        }


# ---- desired --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DesiredSshKey:
    name: str
    public_key: str
    fingerprint: str


@dataclass(frozen=True)
class DesiredNetwork:
    name: str
    ip_range: str
    subnet: str
    zone: str


@dataclass(frozen=True)
class DesiredFirewall:
    name: str
    rules: tuple[Rule, ...]
    selector: str


@dataclass(frozen=True)
class DesiredServer:
    name: str
    node: str
    server_type: str
    image: str
    location: str
    labels: Labels
    private_ip: str
    protect: bool = False  # a stateful node: delete and rebuild protection


@dataclass(frozen=True)
class DesiredVolume:
    """A node's Hetzner volume: <cluster>-<node>-<volume>, always delete-protected."""

    name: str
    node: str
    volume: str
    server: str  # the node's server name
    size: int
    location: str
    filesystem: str
    labels: Labels


@dataclass(frozen=True)
class Desired:
    cluster: str
    owner: Labels
    ssh_keys: tuple[DesiredSshKey, ...]
    network: DesiredNetwork
    firewalls: tuple[DesiredFirewall, ...]
    servers: tuple[DesiredServer, ...]
    volumes: tuple[DesiredVolume, ...] = ()

    @property
    def selector(self) -> str:
        return f"{OWNER_LABEL}={self.cluster}"


def server_name(cluster: str, node: str) -> str:
    """Servers are named <cluster>-<node>, so two clusters can share a project."""
    return f"{cluster}-{node}"


def volume_name(cluster: str, node: str, volume: str) -> str:
    """Volumes are named <cluster>-<node>-<volume> (lib checks the length)."""
    return f"{cluster}-{node}-{volume}"


VOLUME_LABEL = "nix-infra/volume"
NODE_LABEL = "nix-infra/node"


def placement_group_name(cluster: str, index: int) -> str:
    return f"{cluster}-spread-{index}"


def desired_state(m: Manifest) -> Desired:
    """What the manifest asks of Hetzner. Pure."""
    if m.provider_type != "hetzner":
        raise NixInfraError(f'provider.type is {m.provider_type!r}; Hetzner provisioning needs "hetzner"')
    owner = labels_tuple(m.owner_labels)
    keys = []
    for key in m.ssh_keys:
        fp = ssh_fingerprint(key)
        keys.append(DesiredSshKey(name=f"{m.cluster}-{fp.replace(':', '')[:12]}", public_key=key, fingerprint=fp))
    firewalls = []
    for node_type in sorted({n.type for n in m.nodes.values()}):
        nodes = [n for n in m.nodes.values() if n.type == node_type]
        rules: set[Rule] = set()
        for proto in ("tcp", "udp"):
            ports = sorted({p for n in nodes for p in getattr(n.public_ports, proto)})
            for port in ports:
                if proto == "tcp" and port == 22:
                    if m.admin_cidrs:
                        rules.add(
                            Rule(
                                "in",
                                "tcp",
                                "22",
                                tuple(sorted(normalize_cidr(c) for c in m.admin_cidrs)),
                                "ssh from provider.adminCidrs",
                            )
                        )
                else:
                    rules.add(Rule("in", proto, str(port), ANYWHERE, f"public {proto} {port}"))
        firewalls.append(
            DesiredFirewall(
                name=f"{m.cluster}-{node_type}",
                rules=tuple(sorted(rules)),
                selector=f"{OWNER_LABEL}={m.cluster},nix-infra/type={node_type}",
            )
        )
    servers = []
    for node in m.nodes.values():
        if node.server_type is None:
            raise NixInfraError(f"nodes.{node.name}.serverType is missing; Hetzner needs a server type")
        servers.append(
            DesiredServer(
                name=server_name(m.cluster, node.name),
                node=node.name,
                server_type=node.server_type,
                image=node.image,
                location=node.location,
                labels=labels_tuple(node.labels),
                private_ip=node.private_ip,
                protect=node.stateful,
            )
        )
    volumes = [
        DesiredVolume(
            name=volume_name(m.cluster, node.name, v.name),
            node=node.name,
            volume=v.name,
            server=server_name(m.cluster, node.name),
            size=v.size,
            location=node.location,
            filesystem=v.filesystem,
            labels=labels_tuple(v.labels),
        )
        for node in m.nodes.values()
        for v in node.volumes.values()
    ]
    return Desired(
        cluster=m.cluster,
        owner=owner,
        ssh_keys=tuple(keys),
        network=DesiredNetwork(
            name=m.cluster, ip_range=m.network.ip_range, subnet=m.network.subnet, zone=m.network.zone
        ),
        firewalls=tuple(firewalls),
        servers=tuple(sorted(servers, key=lambda s: s.name)),
        volumes=tuple(sorted(volumes, key=lambda v: v.name)),
    )


# ---- actual ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActualSshKey:
    id: int
    name: str
    fingerprint: str
    labels: Labels


@dataclass(frozen=True)
class ActualNetwork:
    id: int
    name: str
    ip_range: str
    subnets: tuple[tuple[str, str], ...]  # (ip_range, network_zone)
    labels: Labels


@dataclass(frozen=True)
class ActualFirewall:
    id: int
    name: str
    rules: tuple[Rule, ...]
    selectors: tuple[str, ...]
    server_ids: tuple[int, ...]
    labels: Labels


@dataclass(frozen=True)
class ActualPlacementGroup:
    id: int
    name: str
    server_ids: tuple[int, ...]
    labels: Labels


@dataclass(frozen=True)
class ActualServer:
    id: int
    name: str
    status: str
    server_type: str
    location: str
    image: str | None
    labels: Labels
    private_nets: tuple[tuple[int, str], ...]  # (network id, ip)
    placement_group_id: int | None
    public_ipv4: str | None = None
    public_ipv6: str | None = None
    protect_delete: bool = False
    protect_rebuild: bool = False

    @property
    def node(self) -> str | None:
        return dict(self.labels).get(NODE_LABEL)


@dataclass(frozen=True)
class ActualVolume:
    id: int
    name: str
    size: int
    location: str
    server_id: int | None
    labels: Labels
    protect_delete: bool
    linux_device: str | None

    @property
    def node(self) -> str | None:
        return dict(self.labels).get(NODE_LABEL)

    @property
    def volume(self) -> str | None:
        return dict(self.labels).get(VOLUME_LABEL)


@dataclass(frozen=True)
class Actual:
    """One cluster's view of a project: owned resources and the names others hold."""

    ssh_keys: tuple[ActualSshKey, ...]  # every key: matched by fingerprint
    networks: tuple[ActualNetwork, ...]  # owned
    firewalls: tuple[ActualFirewall, ...]  # owned
    placement_groups: tuple[ActualPlacementGroup, ...]  # owned
    servers: tuple[ActualServer, ...]  # owned
    foreign_names: frozenset[tuple[str, str]]  # (kind, name) held by resources we do not own
    volumes: tuple[ActualVolume, ...] = ()  # owned


def _id(value: int | None) -> int:
    if value is None:
        raise NixInfraError("the Hetzner API answered a resource without an id")
    return value


def _str(value: str | None) -> str:
    return value or ""


def _owned(labels: Mapping[str, str] | None, cluster: str) -> bool:
    return (labels or {}).get(OWNER_LABEL) == cluster


def read_actual(client: Client, cluster: str) -> Actual:
    """Snapshot a project (every list paginated by the hcloud client)."""
    with api_errors("reading the Hetzner project"):
        return _read_actual(client, cluster)


def _read_actual(client: Client, cluster: str) -> Actual:
    foreign: set[tuple[str, str]] = set()
    keys = []
    for k in client.ssh_keys.get_all():
        keys.append(ActualSshKey(_id(k.id), _str(k.name), _str(k.fingerprint), labels_tuple(k.labels)))
        if not _owned(k.labels, cluster):
            foreign.add(("ssh_key", _str(k.name)))
    networks = []
    for n in client.networks.get_all():
        if not _owned(n.labels, cluster):
            foreign.add(("network", _str(n.name)))
            continue
        networks.append(
            ActualNetwork(
                _id(n.id),
                _str(n.name),
                _str(n.ip_range),
                tuple((_str(s.ip_range), _str(s.network_zone)) for s in n.subnets or []),
                labels_tuple(n.labels),
            )
        )
    firewalls = []
    for f in client.firewalls.get_all():
        if not _owned(f.labels, cluster):
            foreign.add(("firewall", _str(f.name)))
            continue
        rules = tuple(
            sorted(
                Rule(
                    _str(r.direction),
                    _str(r.protocol),
                    r.port,
                    tuple(sorted(normalize_cidr(c) for c in (r.source_ips or []))),
                    r.description,
                )
                for r in f.rules or []
            )
        )
        selectors = tuple(
            sorted(
                _str(a.label_selector.selector)
                for a in f.applied_to or []
                if a.type == "label_selector" and a.label_selector is not None
            )
        )
        server_ids = tuple(
            sorted(_id(a.server.id) for a in f.applied_to or [] if a.type == "server" and a.server is not None)
        )
        firewalls.append(ActualFirewall(_id(f.id), _str(f.name), rules, selectors, server_ids, labels_tuple(f.labels)))
    groups = []
    for g in client.placement_groups.get_all():
        if not _owned(g.labels, cluster):
            foreign.add(("placement_group", _str(g.name)))
            continue
        groups.append(
            ActualPlacementGroup(_id(g.id), _str(g.name), tuple(sorted(g.servers or [])), labels_tuple(g.labels))
        )
    servers = []
    for s in client.servers.get_all():
        if not _owned(s.labels, cluster):
            foreign.add(("server", _str(s.name)))
            continue
        servers.append(
            ActualServer(
                id=_id(s.id),
                name=_str(s.name),
                status=_str(s.status),
                server_type=_str(s.server_type.name) if s.server_type else "",
                location=_str(s.location.name) if s.location else "",
                image=s.image.name if s.image else None,
                labels=labels_tuple(s.labels),
                private_nets=tuple((_id(p.network.id), p.ip) for p in s.private_net or []),
                placement_group_id=s.placement_group.id if s.placement_group else None,
                public_ipv4=s.public_net.ipv4.ip if s.public_net and s.public_net.ipv4 else None,
                public_ipv6=s.public_net.ipv6.ip if s.public_net and s.public_net.ipv6 else None,
                protect_delete=bool(s.protection["delete"]) if s.protection else False,
                protect_rebuild=bool(s.protection["rebuild"]) if s.protection else False,
            )
        )
    volumes = []
    for v in client.volumes.get_all():
        if not _owned(v.labels, cluster):
            foreign.add(("volume", _str(v.name)))
            continue
        volumes.append(
            ActualVolume(
                id=_id(v.id),
                name=_str(v.name),
                size=v.size or 0,
                location=_str(v.location.name) if v.location else "",
                server_id=v.server.id if v.server else None,
                labels=labels_tuple(v.labels),
                protect_delete=bool(v.protection["delete"]) if v.protection else False,
                linux_device=v.linux_device,
            )
        )
    return Actual(
        tuple(keys),
        tuple(networks),
        tuple(firewalls),
        tuple(groups),
        tuple(servers),
        frozenset(foreign),
        tuple(volumes),
    )
