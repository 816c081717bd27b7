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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import etcd3
import etcd3.exceptions
import grpc
from etcd3.client import Endpoint, MultiEndpointEtcd3Client

from nix_infra.errors import NixInfraError

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

    def failure(self, exc: Exception) -> NixInfraError:
        detail = str(exc).strip() or type(exc).__name__
        if isinstance(exc, grpc.RpcError):
            details = exc.details() if hasattr(exc, "details") else None
            detail = f"{exc.code().name}: {details}" if hasattr(exc, "code") else str(exc)
        elif isinstance(exc, etcd3.exceptions.ConnectionFailedError):
            detail = "connection failed (is etcd running there, and does it trust this certificate?)"
        elif isinstance(exc, etcd3.exceptions.ConnectionTimeoutError):
            detail = "timed out"
        return NixInfraError(f"etcd at {self.url}: {detail}")

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


def is_owned_key(key: str) -> bool:
    """The static keys the orchestrator writes (and may delete when the manifest drops them)."""
    parts = key.split("/")
    if len(parts) == 4 and parts[:3] == ["", "cluster", "nodes"] and parts[3]:
        return True
    return (
        len(parts) == 5 and parts[1] == "cluster" and parts[2] in GROUPS and parts[3] != "" and parts[4] == "meta_data"
    )


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
    """The difference between the manifest's seed and the keys now under /cluster (pure).

    Instance keys are ignored on both sides; only owned keys are ever removed.
    """
    bad = sorted(k for k in desired if not is_owned_key(k))
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
    """Bring the static keys under /cluster to `desired`, writing only the difference.

    Each transaction holds at most `max_txn_ops` operations and succeeds only if
    none of its keys changed since they were read (an added key must still be
    absent), so a concurrent writer makes seeding stop with an error, not clobber.
    """
    start = time.monotonic()
    current = etcd.get_prefix(ROOT + "/")
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
                f"etcd at {etcd.url}: keys under {ROOT} changed while seeding ({count} of "
                f"{(len(ops) + max_txn_ops - 1) // max_txn_ops} transactions were written); run the seed again"
            )
        count += 1
    log.info("seeded %s in %d transactions", diff.counts(), count)
    return SeedResult(diff, count, time.monotonic() - start)
