"""The manifest: the JSON document Nix evaluates and the orchestrator reads.

Documented in docs/manifest.md (schema: docs/manifest.schema.json). This module
turns it into frozen dataclasses and never re-derives cluster logic.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from nix_infra.errors import NixInfraError
from nix_infra.process import run

SUPPORTED_VERSIONS = (1,)
OWNER_LABEL = "nix-infra/cluster"


@dataclass(frozen=True)
class PortSet:
    tcp: tuple[int, ...]
    udp: tuple[int, ...]


@dataclass(frozen=True)
class Volume:
    """One of a node's Hetzner volumes (lib's nodes.<n>.volumes.<name>)."""

    name: str
    size: int  # GB
    mountpoint: str
    filesystem: str
    labels: Mapping[str, str]


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
    # (defaults only for hand-made Nodes; the loader always sets both from the manifest)
    volumes: Mapping[str, Volume] = field(default_factory=dict)
    stateful: bool = False  # holds a volume or a stateful app: delete-protected, never destroyed by accident


@dataclass(frozen=True)
class HealthCheck:
    type: str
    path: str | None
    command: str | None
    interval_seconds: int
    timeout_seconds: int


@dataclass(frozen=True)
class App:
    name: str
    group: str
    port: int
    publish: int
    nodes: tuple[str, ...]
    env_prefix: str
    image: str | None
    unit: str
    secrets: tuple[str, ...]
    protocol: str
    path: str
    health_check: HealthCheck
    volume: str | None = None


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
    apps: Mapping[str, App]
    waves: tuple[tuple[str, ...], ...]
    etcd: EtcdCluster
    etcd_seed: Mapping[str, Any]
    secrets: tuple[str, ...]
    raw: Mapping[str, Any]

    @property
    def owner_labels(self) -> dict[str, str]:
        """The label every resource this cluster owns carries."""
        return {OWNER_LABEL: self.cluster}


# ---- the grammar of every value, as lib/check.nix and docs/manifest.schema.json say it ----------
# Each is used with fullmatch only (a `$` would also match before a final newline).

DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_LABEL_RULE = "a DNS label (lowercase letters, digits and '-', starting with a letter, not ending with '-', 1-63)"
SECRET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
SECRET_NAME_RULE = "a secret name (1-64 letters, digits, '.', '_', '-', not starting with '.' or '-')"
# systemd's unit name characters (unit_name_is_valid: [A-Za-z0-9:_.\@-]), not starting with '-', <= 255
UNIT_NAME = re.compile(r"(?=.{1,255}\Z)[A-Za-z0-9:_][-A-Za-z0-9:_.]*(@[-A-Za-z0-9:_.]+)?\.service")  # lib's isUnitName
UNIT_NAME_RULE = (
    "a systemd service name (letters, digits, ':', '_', '.', '-', not starting with '-' or '.', "
    "an optional @instance, ending in .service, at most 255 characters)"
)
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")
IPV4_RULE = "an IPv4 address such as 10.0.0.1 (no leading zeros)"
CIDR4 = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}/(3[0-2]|[12]?[0-9])")
CIDR6 = re.compile(r"[0-9a-fA-F:.]*:[0-9a-fA-F:.]*/(12[0-8]|1[01][0-9]|[1-9]?[0-9])")  # an IPv4 tail too
LABEL_KEY = re.compile(
    r"(([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
LABEL_KEY_RULE = "a label key (an optional DNS prefix and '/', then 1-63 alphanumerics, '-', '_', '.')"
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
LABEL_VALUE_RULE = "a label value (at most 63 alphanumerics, '-', '_', '.', starting and ending alphanumeric)"
SSH_KEY = re.compile(
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+=*( [^\x00-\x1f\x7f]*)?"
)
SERVER_TYPE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # lib's isHetznerName
IMAGE = re.compile(r"[^\x00-\x1f\x7f]{1,255}")  # a name the cloud API looks up: printable, one line
URL_PATH = re.compile(r"/[!-~]*")  # printable ASCII, no spaces: it ends up in proxy and health-check configs
ENV_PREFIX = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
SYSTEM_ATTR = re.compile(r"nixosConfigurations\.[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
# lib's check.isMountpoint: below /var/lib, or at or below /srv, /data, /mnt; never a platform directory
MOUNTPOINT = re.compile(
    r"(?!/var/lib/(nix-infra|systemd|nixos|private|containers)(/|$))"
    r"(/var/lib(/[A-Za-z0-9_][A-Za-z0-9._-]*)+|/(srv|data|mnt)(/[A-Za-z0-9_][A-Za-z0-9._-]*)*)"
)
MOUNTPOINT_RULE = (
    "a normalised absolute path such as /var/lib/postgresql (at most 255 characters): below /var/lib, "
    "or /srv, /data, /mnt or below them; not /var/lib/nix-infra, /var/lib/systemd, /var/lib/nixos, "
    "/var/lib/private, /var/lib/containers or under them"
)
VOLUME_SIZE_MIN, VOLUME_SIZE_MAX = 10, 10240  # GB, Hetzner's limits
FILESYSTEMS = ("ext4", "xfs")
ENDPOINT = re.compile(rf"https://{_OCTET}(\.{_OCTET}){{3}}:[0-9]{{1,5}}")
INITIAL_CLUSTER = re.compile(
    rf"([a-z]([-a-z0-9]{{0,61}}[a-z0-9])?=https://{_OCTET}(\.{_OCTET}){{3}}:[0-9]{{1,5}})"
    rf"(,[a-z]([-a-z0-9]{{0,61}}[a-z0-9])?=https://{_OCTET}(\.{_OCTET}){{3}}:[0-9]{{1,5}})*"
)
FLANNEL_CONFIG_KEY = "/coreos.com/network/config"
SEED_KEY = re.compile(
    r"/cluster/(nodes/[a-z]([-a-z0-9]{0,61}[a-z0-9])?"
    r"|(frontends|backends|services)/[a-z]([-a-z0-9]{0,61}[a-z0-9])?/meta_data)"
    r"|/coreos\.com/network/config"
)

NODE_TYPES = ("ctrl", "worker", "service", "ingress", "registry")
LOCATIONS = ("fsn1", "nbg1", "hel1", "ash", "hil", "sin")
# Hetzner's network zone of each location (lib/constants.nix locationZones)
LOCATION_ZONES = {
    "fsn1": "eu-central",
    "nbg1": "eu-central",
    "hel1": "eu-central",
    "ash": "us-east",
    "hil": "us-west",
    "sin": "ap-southeast",
}
ZONES = ("eu-central", "us-east", "us-west", "ap-southeast")
GROUPS = ("frontends", "backends", "services")
MAX_MANIFEST_BYTES = 64 << 20  # a 1000-node manifest is a few MiB
MAX_DEPTH = 32  # the manifest is about 6 levels deep; etcd seed values add a few

# the fields of each object; the schema allows no others (additionalProperties: false)
TOP_FIELDS = (
    "version", "cluster", "provider", "network", "labels", "sshKeys", "adminCidrs",
    "nodes", "apps", "waves", "etcd", "etcdSeed", "secrets",
)  # fmt: skip
PROVIDER_FIELDS = ("type", "location", "networkZone", "image")
NETWORK_FIELDS = ("ipRange", "subnet", "gateway", "zone")
ETCD_FIELDS = ("endpoints", "initialCluster", "members", "clientPort", "peerPort")
NODE_FIELDS = (
    "name", "type", "location", "serverType", "image", "privateIp", "labels", "system",
    "credentials", "credentialUnits", "wave", "consumes", "firewall", "apps", "volumes", "stateful",
)  # fmt: skip
VOLUME_FIELDS = ("size", "mountpoint", "filesystem", "labels")
APP_FIELDS = (
    "name", "group", "port", "publish", "nodes", "envPrefix", "image", "unit",
    "secrets", "protocol", "path", "healthCheck", "volume",
)  # fmt: skip
HEALTH_FIELDS = ("type", "path", "command", "intervalSeconds", "timeoutSeconds")


def is_dns_label(s: str) -> bool:
    return DNS_LABEL.fullmatch(s) is not None


def is_secret_name(s: str) -> bool:
    return SECRET_NAME.fullmatch(s) is not None


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, str | int | float | bool) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


class _Field:
    """One value of the manifest and its path; every check names the path and what is allowed."""

    def __init__(self, value: Any, path: str) -> None:
        self.value = value
        self.path = path

    def fail(self, allowed: str) -> NoReturn:
        raise NixInfraError(f"manifest: {self.path}: {_show(self.value)} is not {allowed}")

    def obj(self, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        if not isinstance(self.value, dict):
            raise NixInfraError(f"manifest: {self.path}: expected an object, got {_kind(self.value)}")
        if fields is not None:
            missing = [f for f in fields if f not in self.value]
            if missing:
                raise NixInfraError(f"manifest: field {self.path}.{missing[0]} is missing")
            unknown = sorted(k for k in self.value if k not in fields)
            if unknown:
                raise NixInfraError(
                    f"manifest: {self.path}.{unknown[0]}: unknown field; allowed fields are: {', '.join(fields)}"
                )
        return self.value

    def at(self, key: str) -> _Field:
        self.obj()
        if key not in self.value:
            raise NixInfraError(f"manifest: field {self.path}.{key} is missing")
        return _Field(self.value[key], f"{self.path}.{key}")

    def items(self) -> list[tuple[str, _Field]]:
        return [(k, _Field(v, f"{self.path}.{k}")) for k, v in self.obj().items()]

    def list(self, *, unique: bool = False, non_empty: bool = False) -> list[_Field]:
        if not isinstance(self.value, list):
            raise NixInfraError(f"manifest: {self.path}: expected a list, got {_kind(self.value)}")
        if non_empty and not self.value:
            raise NixInfraError(f"manifest: {self.path}: is empty; at least one item is needed")
        if unique:
            seen: list[Any] = []
            for item in self.value:
                if item in seen:
                    raise NixInfraError(f"manifest: {self.path}: {_show(item)} is listed twice")
                seen.append(item)
        return [_Field(v, f"{self.path}[{i}]") for i, v in enumerate(self.value)]

    def string(self, pattern: re.Pattern[str] | None = None, rule: str = "") -> str:
        if not isinstance(self.value, str):
            self.fail(rule or "a string")
        if pattern is not None and pattern.fullmatch(self.value) is None:
            self.fail(rule)
        return self.value

    def optional_string(self, pattern: re.Pattern[str] | None = None, rule: str = "") -> str | None:
        return None if self.value is None else self.string(pattern, rule)

    def enum(self, allowed: tuple[str, ...]) -> str:
        if not isinstance(self.value, str) or self.value not in allowed:
            self.fail(f"one of: {', '.join(allowed)}")
        return self.value

    def integer(self, low: int, high: int | None = None) -> int:
        v = self.value
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            self.fail(f"a whole number from {low}" + (f" to {high}" if high is not None else " up"))
        return v

    def port(self) -> int:
        return self.integer(1, 65535)

    def strings(self, pattern: re.Pattern[str], rule: str, *, unique: bool = False) -> tuple[str, ...]:
        return tuple(f.string(pattern, rule) for f in self.list(unique=unique))

    def names(self, pattern: re.Pattern[str], rule: str) -> None:
        """The keys of an object: each must match `pattern`."""
        for key in self.obj():
            if pattern.fullmatch(key) is None:
                raise NixInfraError(f"manifest: {self.path}: the key {_show(key)} is not {rule}")


def _flannel_config(f: _Field) -> None:
    """flannel's network config, as lib's mesh.overlayConfig writes it: every node's flannel reads it."""
    f.obj(("Backend", "Network", "SubnetLen"))
    f.at("Network").string(CIDR4, "an IPv4 CIDR such as 10.244.0.0/16")
    f.at("SubnetLen").integer(8, 30)
    backend = f.at("Backend")
    backend.obj(("ListenPort", "PersistentKeepaliveInterval", "Type"))
    backend.at("Type").enum(("wireguard",))
    backend.at("ListenPort").port()
    backend.at("PersistentKeepaliveInterval").integer(0, 65535)


def _labels(f: _Field) -> dict[str, str]:
    f.names(LABEL_KEY, LABEL_KEY_RULE)
    return {k: v.string(LABEL_VALUE, LABEL_VALUE_RULE) for k, v in f.items()}


def _ports(f: _Field) -> PortSet:
    f.obj(("tcp", "udp"))
    return PortSet(
        tcp=tuple(p.port() for p in f.at("tcp").list()),
        udp=tuple(p.port() for p in f.at("udp").list()),
    )


def _cidr4(f: _Field) -> str:
    value = f.string(CIDR4, "an IPv4 network such as 10.10.0.0/16")
    try:
        ipaddress.IPv4Network(value)
    except ValueError:
        f.fail("an IPv4 network without host bits set (such as 10.10.0.0/16)")
    return value


def _admin_cidr(f: _Field) -> str:
    rule = "an IPv4 or IPv6 CIDR such as 203.0.113.0/24"
    value = f.string(None, rule)
    if CIDR4.fullmatch(value) is None and CIDR6.fullmatch(value) is None:
        f.fail(rule)
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        f.fail(rule)
    return value


def _volume(key: str, f: _Field) -> Volume:
    f.obj(VOLUME_FIELDS)
    mountpoint = f.at("mountpoint").string(MOUNTPOINT, MOUNTPOINT_RULE)
    if len(mountpoint) > 255:
        f.at("mountpoint").fail(MOUNTPOINT_RULE)
    return Volume(
        name=key,
        size=f.at("size").integer(VOLUME_SIZE_MIN, VOLUME_SIZE_MAX),
        mountpoint=mountpoint,
        filesystem=f.at("filesystem").enum(FILESYSTEMS),
        labels=_labels(f.at("labels")),
    )


def _node(key: str, f: _Field) -> Node:
    f.obj(NODE_FIELDS)
    name = f.at("name").string(DNS_LABEL, DNS_LABEL_RULE)
    if name != key:
        f.at("name").fail(f"the node's key {key!r}")
    credentials = f.at("credentials").strings(SECRET_NAME, SECRET_NAME_RULE, unique=True)
    units_field = f.at("credentialUnits")
    units_field.names(SECRET_NAME, SECRET_NAME_RULE)
    credential_units = {k: v.strings(UNIT_NAME, UNIT_NAME_RULE) for k, v in units_field.items()}
    for k in credential_units:
        if k not in credentials:
            units_field.fail(f"keyed by the node's credentials ({k!r} is not one of them)")
    system = f.at("system").string(SYSTEM_ATTR, "nixosConfigurations.<node name>")
    fw = f.at("firewall")
    fw.obj(("public", "private"))
    volumes_field = f.at("volumes")
    volumes_field.names(DNS_LABEL, DNS_LABEL_RULE)
    volumes = {k: _volume(k, v) for k, v in sorted(volumes_field.items())}
    mounts = [v.mountpoint for v in volumes.values()]
    for v in volumes.values():
        if mounts.count(v.mountpoint) > 1:
            volumes_field.at(v.name).at("mountpoint").fail("a mountpoint of this volume alone (another volume has it)")
    stateful = f.at("stateful")
    if not isinstance(stateful.value, bool):
        stateful.fail("true or false")
    return Node(
        name=name,
        type=f.at("type").enum(NODE_TYPES),
        location=f.at("location").enum(LOCATIONS),
        server_type=f.at("serverType").optional_string(SERVER_TYPE, "a server type name such as cx22, or null"),
        image=f.at("image").string(IMAGE, "an image name (1-255 printable characters)"),
        private_ip=f.at("privateIp").string(IPV4, IPV4_RULE),
        labels=_labels(f.at("labels")),
        system=system,
        credentials=credentials,
        credential_units=credential_units,
        wave=f.at("wave").integer(0),
        consumes=tuple(g.enum(GROUPS) for g in f.at("consumes").list(unique=True)),
        apps=f.at("apps").strings(DNS_LABEL, DNS_LABEL_RULE, unique=True),
        public_ports=_ports(fw.at("public")),
        private_ports=_ports(fw.at("private")),
        volumes=volumes,
        stateful=stateful.value,
    )


def _app(key: str, f: _Field) -> App:
    f.obj(APP_FIELDS)
    name = f.at("name").string(DNS_LABEL, DNS_LABEL_RULE)
    if name != key:
        f.at("name").fail(f"the app's key {key!r}")
    h = f.at("healthCheck")
    h.obj(HEALTH_FIELDS)
    health = HealthCheck(
        type=h.at("type").enum(("http", "tcp", "command")),
        path=h.at("path").optional_string(URL_PATH, "a URL path starting with '/' (printable, no spaces), or null"),
        command=h.at("command").optional_string(re.compile(r"[^\x00]+"), "a shell command (no NUL), or null"),
        interval_seconds=h.at("intervalSeconds").integer(1),
        timeout_seconds=h.at("timeoutSeconds").integer(1),
    )
    return App(
        name=name,
        group=f.at("group").enum(GROUPS),
        port=f.at("port").port(),
        publish=f.at("publish").port(),
        nodes=tuple(n.string(DNS_LABEL, DNS_LABEL_RULE) for n in f.at("nodes").list(unique=True, non_empty=True)),
        env_prefix=f.at("envPrefix").string(ENV_PREFIX, "an environment prefix (A-Z, 0-9, '_', starting with A-Z)"),
        image=f.at("image").optional_string(IMAGE, "an OCI image reference (printable, one line), or null"),
        unit=f.at("unit").string(UNIT_NAME, UNIT_NAME_RULE),
        secrets=f.at("secrets").strings(SECRET_NAME, SECRET_NAME_RULE, unique=True),
        protocol=f.at("protocol").enum(("http", "tcp")),
        path=f.at("path").string(URL_PATH, "a URL path starting with '/' (printable ASCII, no spaces)"),
        health_check=health,
        volume=f.at("volume").optional_string(DNS_LABEL, f"a volume name ({DNS_LABEL_RULE}), or null"),
    )


def _refs(f: _Field, names: tuple[str, ...], known: Mapping[str, object], what: str) -> None:
    for i, name in enumerate(names):
        if name not in known:
            _Field(name, f"{f.path}[{i}]").fail(f"one of the manifest's {what} ({', '.join(known) or 'none'})")


def _depth_ok(data: Any, limit: int) -> bool:
    """Whether no value nests deeper than `limit` (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return True


def parse_manifest(data: Any) -> Manifest:
    """Check every field against docs/manifest.schema.json (and the cross references Python relies
    on), then turn manifest JSON data into a Manifest. Errors name the field and what is allowed."""
    if not isinstance(data, dict):
        raise NixInfraError(f"manifest: expected a JSON object, got {_kind(data)}")
    version = data.get("version")
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        raise NixInfraError(
            f"manifest: version {version!r} is not supported by this nix-infra "
            f"(it reads version {supported}); update nix-infra or the cluster flake's input"
        )
    if not _depth_ok(data, MAX_DEPTH):
        raise NixInfraError(f"manifest: nested more than {MAX_DEPTH} levels deep; a manifest is far flatter")
    r = _Top(data)
    cluster = r.at("cluster").string(DNS_LABEL, DNS_LABEL_RULE)
    provider = r.at("provider")
    provider.obj(PROVIDER_FIELDS)
    provider_type = provider.at("type").enum(("hetzner", "local"))
    location = provider.at("location").enum(LOCATIONS)
    provider.at("networkZone").enum(ZONES)
    provider.at("image").string(IMAGE, "an image name (1-255 printable characters)")
    net = r.at("network")
    net.obj(NETWORK_FIELDS)
    network = Network(
        ip_range=_cidr4(net.at("ipRange")),
        subnet=_cidr4(net.at("subnet")),
        gateway=net.at("gateway").string(IPV4, IPV4_RULE),
        zone=net.at("zone").enum(ZONES),
    )
    _labels(r.at("labels"))
    ssh_keys = tuple(
        k.string(SSH_KEY, "an OpenSSH public key line (type, base64, optional one-line comment)")
        for k in r.at("sshKeys").list(non_empty=True)
    )
    admin_cidrs = tuple(_admin_cidr(c) for c in r.at("adminCidrs").list())
    nodes_field = r.at("nodes")
    nodes_field.names(DNS_LABEL, DNS_LABEL_RULE)
    if not nodes_field.obj():
        raise NixInfraError("manifest: nodes: is empty; a cluster has at least one node")
    nodes = {key: _node(key, f) for key, f in sorted(nodes_field.items())}
    apps_field = r.at("apps")
    apps_field.names(DNS_LABEL, DNS_LABEL_RULE)
    apps = {key: _app(key, f) for key, f in sorted(apps_field.items())}
    waves_field = r.at("waves")
    waves = tuple(w.strings(DNS_LABEL, DNS_LABEL_RULE) for w in waves_field.list())
    for i, w in enumerate(waves_field.list()):
        w.list(non_empty=True)
        _refs(w, waves[i], nodes, "nodes")
    e = r.at("etcd")
    e.obj(ETCD_FIELDS)
    etcd = EtcdCluster(
        members=e.at("members").strings(DNS_LABEL, DNS_LABEL_RULE, unique=True),
        endpoints=e.at("endpoints").strings(ENDPOINT, "https://<IPv4>:<port>"),
        client_port=e.at("clientPort").port(),
        peer_port=e.at("peerPort").port(),
    )
    e.at("initialCluster").string(INITIAL_CLUSTER, "a list of name=https://<IPv4>:<port>, separated by ','")
    _refs(e.at("members"), etcd.members, nodes, "nodes")
    seed = r.at("etcdSeed")
    seed.names(SEED_KEY, "/cluster/nodes/<node>, /cluster/<group>/<app>/meta_data or /coreos.com/network/config")
    for key, value in seed.items():
        if key == FLANNEL_CONFIG_KEY:
            _flannel_config(value)
        else:
            value.obj()
    secrets = r.at("secrets").strings(SECRET_NAME, SECRET_NAME_RULE, unique=True)
    # the cross references the orchestrator follows (a dangling one would be a KeyError later)
    in_waves = [n for w in waves for n in w]
    for name, node in nodes.items():
        f = nodes_field.at(name)
        if in_waves.count(name) != 1:
            count = in_waves.count(name)
            raise NixInfraError(f"manifest: waves: node {name} is listed {count} times; each node is in one wave")
        _refs(f.at("apps"), node.apps, apps, "apps")
        _refs(f.at("credentials"), node.credentials, dict.fromkeys(secrets), "secrets")
    for name, app in apps.items():
        _refs(apps_field.at(name).at("nodes"), app.nodes, nodes, "nodes")
        if app.volume is not None:
            vf = apps_field.at(name).at("volume")
            if len(app.nodes) != 1:
                vf.fail(f"allowed on an app placed on more than one node ({', '.join(app.nodes)})")
            if app.volume not in nodes[app.nodes[0]].volumes:
                vf.fail(f"a volume of node {app.nodes[0]} ({', '.join(nodes[app.nodes[0]].volumes) or 'none'})")
    for name, node in nodes.items():
        if node.volumes and not node.stateful:
            raise NixInfraError(f"manifest: nodes.{name}.stateful: is false, but the node has volumes; it must be true")
    _consistent(r, cluster, network, nodes, nodes_field, waves, etcd, admin_cidrs)
    return Manifest(
        version=version,
        cluster=cluster,
        provider_type=provider_type,
        location=location,
        network=network,
        ssh_keys=ssh_keys,
        admin_cidrs=admin_cidrs,
        nodes=nodes,
        apps=apps,
        waves=waves,
        etcd=etcd,
        etcd_seed=dict(seed.obj()),
        secrets=secrets,
        raw=data,
    )


def _consistent(
    r: _Field,
    cluster: str,
    network: Network,
    nodes: Mapping[str, Node],
    nodes_field: _Field,
    waves: tuple[tuple[str, ...], ...],
    etcd: EtcdCluster,
    admin_cidrs: tuple[str, ...],
) -> None:
    """What lib guarantees and a hand-made manifest may break, checked before any change: the
    labels nix-infra owns (a wrong one makes provision disown its own servers), addresses inside
    the network, locations in its zone, members that are ctrl nodes, each node's wave."""
    net = ipaddress.IPv4Network(network.ip_range)
    if network.subnet != network.ip_range:
        r.at("network").at("subnet").fail(f"the network's ipRange ({network.ip_range}): nix-infra uses one subnet")
    if network.gateway != str(net.network_address + 1):
        r.at("network").at("gateway").fail(f"the first address of ipRange ({net.network_address + 1})")
    cluster_label = r.at("labels")
    if dict(cluster_label.obj()).get("nix-infra/cluster") != cluster:
        cluster_label.fail(f'labels with "nix-infra/cluster": "{cluster}"')
    wave_of = {n: i for i, w in enumerate(waves) for n in w}
    for name, node in nodes.items():
        f = nodes_field.at(name)
        owned = {"nix-infra/cluster": cluster, "nix-infra/node": name, "nix-infra/type": node.type}
        for key, want in owned.items():
            if node.labels.get(key) != want:
                f.at("labels").fail(f'labels with "{key}": "{want}" (nix-infra owns the nix-infra/ labels)')
        for key, value in node.volumes.items():
            want_volume = {**owned, "nix-infra/volume": key}
            for k, v in want_volume.items():
                if value.labels.get(k) != v:
                    f.at("volumes").at(key).at("labels").fail(f'labels with "{k}": "{v}"')
        ip = ipaddress.IPv4Address(node.private_ip)
        if ip not in net or ip in (net.network_address, net.network_address + 1, net.broadcast_address):
            f.at("privateIp").fail(
                f"an address inside the network {network.ip_range} (not its network, gateway or broadcast address)"
            )
        if LOCATION_ZONES[node.location] != network.zone:
            f.at("location").fail(f"a location in the network's zone {network.zone}")
        if node.wave != wave_of.get(name):
            f.at("wave").fail(f"the index of the wave that lists the node ({wave_of.get(name)})")
    for i, member in enumerate(etcd.members):
        if nodes[member].type != "ctrl":
            r.at("etcd").at("members").list()[i].fail(f"a ctrl node ({member} is a {nodes[member].type} node)")
    for i, cidr in enumerate(admin_cidrs):
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            r.at("adminCidrs").list()[i].fail("a network without host bits set (e.g. 203.0.113.0/24)")


class _Top(_Field):
    """The document itself: its fields are named without a prefix ("cluster", not ".cluster")."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data, "")
        self.obj(TOP_FIELDS)

    def at(self, key: str) -> _Field:
        return _Field(self.value[key], key)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str | bytes, source: str) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity, bounded nesting; errors name `source`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NixInfraError(f"{source} is not UTF-8 text (byte {exc.start} is invalid)") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except RecursionError:
        raise NixInfraError(f"{source} is not valid JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise NixInfraError(f"{source} is not valid JSON: {exc}") from None
    except ValueError as exc:  # duplicate keys, NaN, numbers too long to convert
        raise NixInfraError(f"{source} is not valid JSON: {exc}") from None


def load_manifest_file(path: Path) -> Manifest:
    """Read a manifest from a JSON file."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)  # bounded: `--manifest /dev/zero` is an error, not a hang
    except IsADirectoryError:
        raise NixInfraError(f"--manifest {path}: is a directory; expected a JSON file") from None
    except OSError as exc:
        raise NixInfraError(f"cannot read manifest {path}: {exc.strerror}") from exc
    if len(data) > MAX_MANIFEST_BYTES:
        raise NixInfraError(f"manifest {path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB; that is no manifest")
    return parse_manifest(parse_json(data, f"manifest {path}"))


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
    return parse_manifest(parse_json(result.stdout, f"the output of nix eval {flake}#nixInfra.manifest"))
