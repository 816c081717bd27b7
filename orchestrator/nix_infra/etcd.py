"""The cluster's etcd: connecting with TLS client certificates, and seeding the static mesh data.

The data model is docs/etcd.md. The orchestrator owns the static keys

    /cluster/nodes/<node>
    /cluster/<group>/<app>/meta_data

and never touches `/cluster/<group>/<app>/instances/<node>`, which nodes write
themselves under leases. Seeding reads what is under /cluster, computes the
difference with the manifest's `etcdSeed` and writes only that, in
transactions that each check the keys they change were not changed meanwhile.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import etcd3
import etcd3.exceptions
import grpc
from etcd3.client import Endpoint, MultiEndpointEtcd3Client

from nix_infra.errors import NixInfraError
from nix_infra.manifest import Manifest

log = logging.getLogger(__name__)

ROOT = "/cluster"
GROUPS = ("frontends", "backends", "services")
# etcd's default --max-txn-ops: no transaction may hold more operations (or compares).
MAX_TXN_OPS = 128


@dataclass(frozen=True)
class TlsMaterial:
    """CA certificate, client certificate and key, as PEM bytes held in memory."""

    ca: bytes
    cert: bytes
    key: bytes = field(repr=False)


def parse_endpoint(url: str) -> tuple[str, int]:
    """`https://host:port` (or `host:port`) → (host, port); anything else is refused with the form."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
        raise NixInfraError(f"etcd endpoint {url!r}: expected https://HOST:PORT (the cluster's etcd speaks TLS only)")
    try:
        port = parts.port or 2379
    except ValueError:
        raise NixInfraError(f"etcd endpoint {url!r}: the port is not a number from 1 to 65535") from None
    return parts.hostname, port


class Etcd:
    """A connected etcd client; every error becomes a NixInfraError naming the endpoint."""

    def __init__(self, url: str, tls: TlsMaterial, *, timeout: float = 10.0, server_name: str | None = None) -> None:
        self.url = url
        host, port = parse_endpoint(url)
        creds = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert)
        opts = [("grpc.ssl_target_name_override", server_name)] if server_name else None
        self.client = MultiEndpointEtcd3Client(
            endpoints=[Endpoint(host, port, secure=True, creds=creds, opts=opts)], timeout=timeout
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Etcd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def failure(self, exc: Exception, what: str = "") -> NixInfraError:
        detail = str(exc).strip() or type(exc).__name__
        if isinstance(exc, grpc.RpcError):
            details = exc.details() if hasattr(exc, "details") else None
            detail = f"{exc.code().name}: {details}" if hasattr(exc, "code") else str(exc)
        elif isinstance(exc, etcd3.exceptions.ConnectionFailedError):
            detail = "connection failed (is etcd running there, and does it trust this certificate?)"
        elif isinstance(exc, etcd3.exceptions.ConnectionTimeoutError):
            detail = "timed out"
        return NixInfraError(f"etcd at {self.url}: {what + ': ' if what else ''}{detail}")

    def get_prefix(self, prefix: str) -> dict[str, tuple[bytes, int]]:
        """Every key under `prefix` → (value, mod_revision)."""
        try:
            return {
                meta.key.decode(): (value, meta.mod_revision)
                for value, meta in self.client.get_prefix(prefix, sort_order="ascend")
            }
        except Exception as exc:  # grpc and etcd3 raise many kinds; each is reported with the endpoint
            raise self.failure(exc) from exc

    def put(self, key: str, value: bytes) -> None:
        try:
            self.client.put(key, value)
        except Exception as exc:
            raise self.failure(exc) from exc

    def delete(self, key: str, prefix: bool = False) -> int:
        try:
            if prefix:
                return int(self.client.delete_prefix(key).deleted)
            return 1 if self.client.delete(key) else 0
        except Exception as exc:
            raise self.failure(exc) from exc

    def put_keeping_lease(self, key: str, value: bytes) -> None:
        """Change an existing key's value and keep the lease it is attached to (etcd's ignore_lease)."""
        from etcd3 import etcdrpc

        request = etcdrpc.PutRequest(key=key.encode(), value=value, ignore_lease=True)
        try:
            self.client.kvstub.Put(request, self.client.timeout)
        except Exception as exc:
            if isinstance(exc, grpc.RpcError) and "key not found" in (exc.details() or ""):
                raise NixInfraError(
                    f"{key} does not exist: an instance key is created only by its node's registration, "
                    "under a lease (a key put without one would outlive its node)"
                ) from None
            raise self.failure(exc) from exc

    def watch(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Events under `prefix` as they happen: {"type": "put"|"delete", "key", "value"}."""
        try:
            events, cancel = self.client.watch_prefix(prefix)
        except Exception as exc:
            raise self.failure(exc) from exc
        try:
            for event in events:
                kind = "delete" if isinstance(event, etcd3.events.DeleteEvent) else "put"
                yield {"type": kind, "key": event.key.decode(), "value": decode_value(event.value)}
        finally:
            cancel()

    def transaction(self, compare: list[Any], success: list[Any]) -> bool:
        try:
            ok, _ = self.client.transaction(compare=compare, success=success, failure=[])
            return bool(ok)
        except Exception as exc:
            raise self.failure(exc) from exc

    # ---- auth (gRPC Auth service through the stubs cslab-etcd3 ships; it has no auth helpers) ----

    def auth_enabled(self) -> bool:
        """Whether etcd enforces auth: a login with no name tells (etcd 3.4 has no AuthStatus call)."""
        from etcd3 import etcdrpc

        try:
            self.client.authstub.Authenticate(etcdrpc.AuthenticateRequest(name="", password=""), self.client.timeout)
        except grpc.RpcError as exc:
            details = exc.details() if hasattr(exc, "details") else ""
            if "not enabled" in (details or ""):
                return False
            if "authentication failed" in (details or ""):
                return True
            raise self.failure(exc, "checking whether auth is enabled") from exc
        except Exception as exc:
            raise self.failure(exc, "checking whether auth is enabled") from exc
        return True

    def auth_state(self, want: AuthSpec) -> AuthState:
        """The users and roles nix-infra owns as etcd holds them: those `want` names, and node roles."""
        from etcd3 import etcdrpc

        enabled = self.auth_enabled()
        all_users = list(self._call("listing users", "UserList", etcdrpc.AuthUserListRequest()).users)
        all_roles = list(self._call("listing roles", "RoleList", etcdrpc.AuthRoleListRequest()).roles)
        roles: dict[str, frozenset[Perm]] = {}
        for role in all_roles:
            if role == ROOT_ROLE or role.startswith(NODE_ROLE_PREFIX) or role in want.roles:
                resp = self._call(f"reading role {role}", "RoleGet", etcdrpc.AuthRoleGetRequest(role=role))
                roles[role] = frozenset(
                    Perm(_text(p.key), _text(p.range_end), _PERM_NAMES.get(p.permType, str(p.permType)))
                    for p in resp.perm
                )
        users: dict[str, frozenset[str]] = {}
        for user in all_users:
            if user in want.users or node_role(user) in roles:
                resp = self._call(f"reading user {user}", "UserGet", etcdrpc.AuthUserGetRequest(name=user))
                users[user] = frozenset(resp.roles)
        return AuthState(enabled, users, roles)

    def _call(self, what: str, method: str, request: Any) -> Any:
        """One call of etcd's gRPC Auth service; a failure names what was being done."""
        try:
            return getattr(self.client.authstub, method)(request, self.client.timeout)
        except Exception as exc:
            raise self.failure(exc, what) from exc

    def auth_steps(self, diff: AuthDiff) -> list[tuple[str, str, Any]]:
        """The calls that make the changes of `diff`, in its order: (what, Auth method, request)."""
        from etcd3 import etcdrpc

        kinds = {name: value for value, name in _PERM_NAMES.items()}
        steps: list[tuple[str, str, Any]] = []
        for r in diff.add_roles:
            steps.append((f"adding role {r}", "RoleAdd", etcdrpc.AuthRoleAddRequest(name=r)))
        for r, p in diff.grant:
            perm = etcdrpc.auth_pb2.Permission(permType=kinds[p.kind], key=_raw(p.key), range_end=_raw(p.range_end))
            steps.append(
                (
                    f"granting {r} {p.describe()}",
                    "RoleGrantPermission",
                    etcdrpc.AuthRoleGrantPermissionRequest(name=r, perm=perm),
                )
            )
        for u in diff.add_users:
            request = etcdrpc.AuthUserAddRequest(name=u)
            request.MergeFromString(_NO_PASSWORD_OPTIONS)
            steps.append((f"adding user {u}", "UserAdd", request))
        for u, r in diff.grant_roles:
            steps.append(
                (f"granting role {r} to user {u}", "UserGrantRole", etcdrpc.AuthUserGrantRoleRequest(user=u, role=r))
            )
        for u, r in diff.revoke_roles:
            steps.append(
                (
                    f"revoking role {r} from user {u}",
                    "UserRevokeRole",
                    etcdrpc.AuthUserRevokeRoleRequest(name=u, role=r),
                )
            )
        for r, p in diff.revoke:
            request = etcdrpc.AuthRoleRevokePermissionRequest(role=r, key=_raw(p.key), range_end=_raw(p.range_end))
            steps.append((f"revoking {r} {p.describe()}", "RoleRevokePermission", request))
        for u in diff.delete_users:
            steps.append((f"deleting user {u}", "UserDelete", etcdrpc.AuthUserDeleteRequest(name=u)))
        for r in diff.delete_roles:
            steps.append((f"deleting role {r}", "RoleDelete", etcdrpc.AuthRoleDeleteRequest(role=r)))
        if diff.enable:
            steps.append(("enabling auth", "AuthEnable", etcdrpc.AuthEnableRequest()))
        return steps

    def apply_auth(self, diff: AuthDiff) -> int:
        """Make the changes of `diff`, one call each, in its order; returns how many calls were made."""
        steps = self.auth_steps(diff)
        for what, method, request in steps:
            self._call(what, method, request)
        return len(steps)


def decode_value(raw: bytes) -> Any:
    """A stored value as data: JSON when it parses, else the text."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def canonical(value: Any) -> bytes:
    """The one byte form of a JSON value: sorted keys, compact separators, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def is_instance_key(key: str) -> bool:
    """`/cluster/<group>/<app>/instances/...`: written by nodes under leases, never by the orchestrator."""
    parts = key.split("/")
    return len(parts) >= 5 and parts[1] == "cluster" and parts[4] == "instances"


# flannel's network config: seeded (added, changed) by the orchestrator, read by the nodes; never removed,
# since flannel on every node needs it (lib/mesh.nix overlayConfig)
FLANNEL_CONFIG_KEY = "/coreos.com/network/config"


def is_seeded_key(key: str) -> bool:
    """The keys a manifest's etcdSeed may hold: the owned keys under /cluster and flannel's config."""
    return key == FLANNEL_CONFIG_KEY or is_owned_key(key)


def is_owned_key(key: str) -> bool:
    """The static keys under /cluster the orchestrator writes (and may delete when the manifest drops them)."""
    parts = key.split("/")
    if len(parts) == 4 and parts[:3] == ["", "cluster", "nodes"] and parts[3]:
        return True
    return (
        len(parts) == 5 and parts[1] == "cluster" and parts[2] in GROUPS and parts[3] != "" and parts[4] == "meta_data"
    )


def operator_put(etcd: Etcd, key: str, value: bytes, *, force: bool = False) -> None:
    """`nix-infra etcd put`: instance keys only with `force`, and then under the lease they have."""
    if not is_instance_key(key):
        etcd.put(key, value)
        return
    if not force:
        raise NixInfraError(
            f"{key} is an instance key: its node's registration writes it under a lease and puts its own value "
            "back; pass --force to change it anyway (it keeps its lease)"
        )
    etcd.put_keeping_lease(key, value)


def operator_delete(
    etcd: Etcd,
    key: str,
    *,
    prefix: bool = False,
    force: bool = False,
    confirm: Callable[[int], None] | None = None,
) -> int:
    """`nix-infra etcd del`: refuses instance keys (also under a prefix) unless `force`; returns how many went.

    With `prefix`, `confirm` is called with the number of keys about to go, after the checks and
    before anything is deleted (it raises to stop)."""
    under = etcd.get_prefix(key) if prefix else {}
    if not force:
        found = [k for k in under if is_instance_key(k)] if prefix else []
        if not prefix and is_instance_key(key):
            found = [key]
        if found:
            more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
            raise NixInfraError(
                f"{', '.join(found[:3])}{more}: instance keys, written by their nodes' registration under a lease "
                "(a healthy instance puts its key back within an interval; a dead one's goes at lease expiry); "
                "pass --force to delete anyway"
            )
    if prefix and confirm is not None:
        confirm(len(under))
    return etcd.delete(key, prefix=prefix)


@dataclass(frozen=True)
class SeedDiff:
    """What seeding changes: keys to add, keys whose value changes, owned keys to remove."""

    add: Mapping[str, bytes]
    change: Mapping[str, bytes]
    remove: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.add or self.change or self.remove)

    def counts(self) -> dict[str, int]:
        return {"added": len(self.add), "changed": len(self.change), "removed": len(self.remove)}


def seed_diff(desired: Mapping[str, Any], current: Mapping[str, bytes]) -> SeedDiff:
    """The difference between the manifest's seed and the keys now under /cluster and flannel's config (pure).

    Instance keys are ignored on both sides; only owned keys under /cluster are ever removed.
    """
    bad = sorted(k for k in desired if not is_seeded_key(k))
    if bad:
        raise NixInfraError(f"manifest: etcdSeed has keys nix-infra does not own: {', '.join(bad[:5])}")
    want = {k: canonical(v) for k, v in desired.items()}
    add = {k: v for k, v in want.items() if k not in current}
    change = {k: v for k, v in want.items() if k in current and current[k] != v}
    remove = tuple(sorted(k for k in current if is_owned_key(k) and k not in want))
    return SeedDiff(add=dict(sorted(add.items())), change=dict(sorted(change.items())), remove=remove)


@dataclass(frozen=True)
class SeedResult:
    diff: SeedDiff
    transactions: int
    seconds: float


def seed(
    etcd: Etcd,
    desired: Mapping[str, Any],
    *,
    dry_run: bool = False,
    max_txn_ops: int = MAX_TXN_OPS,
) -> SeedResult:
    """Bring the static keys under /cluster and flannel's config to `desired`, writing only the difference.

    Each transaction holds at most `max_txn_ops` operations and succeeds only if
    none of its keys changed since they were read (an added key must still be
    absent), so a concurrent writer makes seeding stop with an error, not clobber.
    """
    start = time.monotonic()
    current = etcd.get_prefix(ROOT + "/")
    if FLANNEL_CONFIG_KEY in desired:
        current.update(etcd.get_prefix(FLANNEL_CONFIG_KEY))  # the range of the key and longer ones: keep only it
        current = {k: v for k, v in current.items() if k.startswith(ROOT + "/") or k == FLANNEL_CONFIG_KEY}
    diff = seed_diff(desired, {k: v for k, (v, _) in current.items() if not is_instance_key(k)})
    if dry_run or diff.empty:
        return SeedResult(diff, 0, time.monotonic() - start)
    tx = etcd.client.transactions
    ops: list[tuple[Any, Any]] = []
    for key, value in diff.add.items():
        ops.append((tx.version(key) == 0, tx.put(key, value)))
    for key, value in diff.change.items():
        ops.append((tx.mod(key) == current[key][1], tx.put(key, value)))
    for key in diff.remove:
        ops.append((tx.mod(key) == current[key][1], tx.delete(key)))
    count = 0
    for i in range(0, len(ops), max_txn_ops):
        batch = ops[i : i + max_txn_ops]
        if not etcd.transaction([c for c, _ in batch], [o for _, o in batch]):
            raise NixInfraError(
                f"etcd at {etcd.url}: seeded keys (under {ROOT} or flannel's config) changed while seeding ({count} of "
                f"{(len(ops) + max_txn_ops - 1) // max_txn_ops} transactions were written); run the seed again"
            )
        count += 1
    log.info("seeded %s in %d transactions", diff.counts(), count)
    return SeedResult(diff, count, time.monotonic() - start)


# ---- authorization (etcd RBAC) ---------------------------------------------------------------------
#
# With --client-cert-auth and auth enabled, etcd takes the client certificate's
# CN as the user. nix-infra owns: the user and role `root` (etcd's `auth enable`
# needs them), the admin user (its own certificate's CN, with the root role),
# and per node the user <node> (its client certificate's CN) with exactly one
# role, `nix-infra-node-<node>`. Anything else is left alone. etcd has no
# transactions for auth changes, so they are applied in an order that is safe
# to interrupt: grants before revokes, users and roles before `auth enable`,
# and the admin's root role before anything else.

ROOT_USER = "root"
ROOT_ROLE = "root"
NODE_ROLE_PREFIX = "nix-infra-node-"
# confd asks for the key range of its resource key "/cluster" (range end "/clustes"),
# flannel for "<prefix>/subnets" without a slash; a grant must cover exactly such ranges.
MESH_READ_PREFIX = ROOT
FLANNEL_PREFIX = "/coreos.com/network"
# UserAddOptions{no_password: true} (etcd >= 3.4), which cslab-etcd3's generated
# messages predate: field 3, a message holding field 1 = true. Such a user can
# only be a certificate's CN; nobody can log in as it with a password.
_NO_PASSWORD_OPTIONS = b"\x1a\x02\x08\x01"
_PERM_NAMES = {0: "read", 1: "write", 2: "readwrite"}


def _text(raw: bytes) -> str:
    return raw.decode(errors="surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode(errors="surrogateescape")


def _range_end(prefix: str) -> str:
    """The end of the key range of every key starting with `prefix` (etcd's --prefix)."""
    raw = bytearray(prefix.encode())
    for i in reversed(range(len(raw))):
        if raw[i] < 0xFF:
            raw[i] += 1
            return _text(bytes(raw[: i + 1]))
    return "\0"


@dataclass(frozen=True, order=True)
class Perm:
    """One key permission of a role: `key` alone (range_end "") or the range [key, range_end)."""

    key: str
    range_end: str
    kind: str  # read | write | readwrite

    @classmethod
    def exact(cls, kind: str, key: str) -> Perm:
        return cls(key, "", kind)

    @classmethod
    def prefix(cls, kind: str, prefix: str) -> Perm:
        return cls(prefix, _range_end(prefix), kind)

    def describe(self) -> str:
        if not self.range_end:
            return f"{self.kind} {self.key}"
        if self.range_end == _range_end(self.key):
            return f"{self.kind} {self.key}*"
        return f"{self.kind} [{self.key}, {self.range_end})"


def node_role(node: str) -> str:
    return NODE_ROLE_PREFIX + node


def node_permissions(node: str, instance_keys: Iterable[str]) -> frozenset[Perm]:
    """What a node's certificate may do: read the mesh, write its own instance keys and flannel's leases.

    - read every key under /cluster (confd's resource key; it holds no secrets);
    - read and write exactly /cluster/<group>/<app>/instances/<node> for each app it hosts;
    - flannel: read its config (the orchestrator seeds it; modules/overlay.nix
      turns off the NixOS unit's own write) and the subnet leases, and write
      any lease under <prefix>/subnets/ (flannel picks the subnet, so etcd
      cannot narrow it to the node's own; docs/etcd.md).
    """
    perms = {Perm.prefix("read", MESH_READ_PREFIX)}
    perms |= {Perm.exact("readwrite", key) for key in instance_keys}
    perms |= {
        Perm.exact("read", FLANNEL_CONFIG_KEY),
        Perm.prefix("read", f"{FLANNEL_PREFIX}/subnets"),
        Perm.prefix("write", f"{FLANNEL_PREFIX}/subnets/"),
    }
    return frozenset(perms)


@dataclass(frozen=True)
class AuthSpec:
    """The users and roles nix-infra wants: user -> its roles, role -> its permissions."""

    admin: str
    users: Mapping[str, frozenset[str]]
    roles: Mapping[str, frozenset[Perm]]


def desired_auth(nodes: Mapping[str, Iterable[str]], admin: str) -> AuthSpec:
    """The wanted RBAC state from each node's instance keys (pure).

    `nodes` maps a node name to the instance keys it writes. A node may not be
    called like the root user or the admin, whose certificate CN it would share.
    """
    users: dict[str, frozenset[str]] = {ROOT_USER: frozenset({ROOT_ROLE}), admin: frozenset({ROOT_ROLE})}
    roles: dict[str, frozenset[Perm]] = {ROOT_ROLE: frozenset()}
    for node, keys in sorted(nodes.items()):
        if node in users:
            raise NixInfraError(
                f"manifest: node {node!r}: the name is reserved for etcd's {'root' if node == ROOT_USER else 'admin'} "
                "user (a node's certificate CN is its etcd user); rename the node"
            )
        keys = list(keys)
        for key in keys:
            if not is_instance_key(key) or key.rsplit("/", 1)[1] != node:
                raise NixInfraError(f"manifest: node {node!r}: {key!r} is not one of its instance keys")
        users[node] = frozenset({node_role(node)})
        roles[node_role(node)] = node_permissions(node, keys)
    return AuthSpec(admin, users, roles)


def manifest_auth(manifest: Manifest, admin: str) -> AuthSpec:
    """desired_auth for a manifest: every node with the instance keys of the apps it hosts."""
    apps = manifest.raw.get("apps", {})
    nodes: dict[str, list[str]] = {}
    for node in manifest.nodes.values():
        keys = []
        for app in node.apps:
            group = apps.get(app, {}).get("group") if isinstance(apps, Mapping) else None
            if group not in GROUPS:
                raise NixInfraError(f"manifest: node {node.name!r} hosts app {app!r}, which has no mesh group")
            keys.append(f"{ROOT}/{group}/{app}/instances/{node.name}")
        nodes[node.name] = keys
    return desired_auth(nodes, admin)


@dataclass(frozen=True)
class AuthState:
    """What etcd holds of the users and roles nix-infra owns (others are not read)."""

    enabled: bool
    users: Mapping[str, frozenset[str]]
    roles: Mapping[str, frozenset[Perm]]


@dataclass(frozen=True)
class AuthDiff:
    """The auth changes, in the order they are applied."""

    add_roles: tuple[str, ...] = ()
    grant: tuple[tuple[str, Perm], ...] = ()
    add_users: tuple[str, ...] = ()
    grant_roles: tuple[tuple[str, str], ...] = ()
    revoke_roles: tuple[tuple[str, str], ...] = ()
    revoke: tuple[tuple[str, Perm], ...] = ()
    delete_users: tuple[str, ...] = ()
    delete_roles: tuple[str, ...] = ()
    enable: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.add_roles
            or self.grant
            or self.add_users
            or self.grant_roles
            or self.revoke_roles
            or self.revoke
            or self.delete_users
            or self.delete_roles
            or self.enable
        )

    def lines(self) -> list[str]:
        """One line per change: `+`/`-` and what (as `etcd seed --dry-run` prints it)."""
        out = [f"+ role {r}" for r in self.add_roles]
        out += [f"+ permission {r} {p.describe()}" for r, p in self.grant]
        out += [f"+ user {u}" for u in self.add_users]
        out += [f"+ user {u} role {r}" for u, r in self.grant_roles]
        out += [f"- user {u} role {r}" for u, r in self.revoke_roles]
        out += [f"- permission {r} {p.describe()}" for r, p in self.revoke]
        out += [f"- user {u}" for u in self.delete_users]
        out += [f"- role {r}" for r in self.delete_roles]
        if self.enable:
            out.append("+ auth enable")
        return out


def _admin_first(items: Iterable[str], first: Iterable[str]) -> tuple[str, ...]:
    head = [x for x in first if x in items]
    return tuple(head + sorted(x for x in items if x not in head))


def auth_diff(want: AuthSpec, have: AuthState) -> AuthDiff:
    """What to change so that the owned users and roles are exactly `want` (pure).

    The root and admin users must hold the root role (other roles they have are
    left); a node user holds exactly its node role. A node role whose node is
    gone is deleted, and so is its user unless it holds roles nix-infra does not own.
    """
    add_roles = _admin_first([r for r in want.roles if r not in have.roles], [ROOT_ROLE])
    grant: list[tuple[str, Perm]] = []
    revoke: list[tuple[str, Perm]] = []
    for role, perms in sorted(want.roles.items()):
        if role == ROOT_ROLE:  # may do everything; etcd shows it as one synthetic permission
            continue
        current = {(p.key, p.range_end): p for p in have.roles.get(role, frozenset())}
        wanted = {(p.key, p.range_end): p for p in perms}
        grant += [(role, p) for k, p in sorted(wanted.items()) if current.get(k) != p]
        revoke += [(role, p) for k, p in sorted(current.items()) if k not in wanted]
    add_users = _admin_first([u for u in want.users if u not in have.users], [want.admin, ROOT_USER])
    grant_roles: list[tuple[str, str]] = []
    revoke_roles: list[tuple[str, str]] = []
    for user in _admin_first(list(want.users), [want.admin, ROOT_USER]):
        roles = want.users[user]
        held = have.users.get(user, frozenset())
        grant_roles += [(user, r) for r in sorted(roles - held)]
        if user not in (want.admin, ROOT_USER):  # a node user holds exactly its role
            revoke_roles += [(user, r) for r in sorted(held - roles)]
    stale_roles = sorted(r for r in have.roles if r.startswith(NODE_ROLE_PREFIX) and r not in want.roles)
    delete_users: list[str] = []
    for role in stale_roles:
        user = role.removeprefix(NODE_ROLE_PREFIX)
        if user in want.users or user not in have.users:
            continue
        if have.users[user] <= {role}:
            delete_users.append(user)
        else:
            revoke_roles.append((user, role))
    return AuthDiff(
        add_roles=add_roles,
        grant=tuple(grant),
        add_users=add_users,
        grant_roles=tuple(grant_roles),
        revoke_roles=tuple(revoke_roles),
        revoke=tuple(revoke),
        delete_users=tuple(delete_users),
        delete_roles=tuple(stale_roles),
        enable=not have.enabled,
    )


@dataclass(frozen=True)
class AuthResult:
    diff: AuthDiff
    calls: int


def sync_auth(etcd: Etcd, want: AuthSpec, *, dry_run: bool = False) -> AuthResult:
    """Bring the users and roles nix-infra owns to `want`, then enable auth; safe to re-run from any point.

    The admin user gets the root role before auth is enabled, and keeps it, so
    a run interrupted anywhere leaves the orchestrator able to finish it.
    """
    have = etcd.auth_state(want)
    diff = auth_diff(want, have)
    if dry_run or diff.empty:
        return AuthResult(diff, 0)
    calls = etcd.apply_auth(diff)
    log.info("etcd auth: %d change(s)", calls)
    return AuthResult(diff, calls)
