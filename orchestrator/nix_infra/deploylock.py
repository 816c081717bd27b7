"""The cluster-wide deploy lock in etcd, and the record of each deploy.

Two operators, each with their own checkout, must not deploy one cluster at once: the repo's
run lock (nix_infra.lock) cannot see the other checkout, etcd can. The lock is the key
`/nix-infra/locks/deploy`, put under a lease that this process keeps alive; it is taken with a
transaction that succeeds only when the key does not exist. When the holder dies, its lease
expires (LEASE_SECONDS) and the key goes with it. `deploy --break-lock` takes over a key whose
holder is known to be gone; a holder that ran on this very machine (same machine id) and whose
process has ended is overruled without it (a SIGKILLed deploy does not make the next one wait for
its lease). Only the admin certificate (root role) may touch `/nix-infra/`:
node roles reach nothing outside their own keys under /cluster (docs/etcd.md).

Each deploy also leaves a small record under `/nix-infra/deploys/`: who, when, what; the
newest KEEP_RECORDS are kept.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from nix_infra.errors import NixInfraError
from nix_infra.lock import Holder

if TYPE_CHECKING:
    from nix_infra.etcd import Etcd
    from nix_infra.manifest import Manifest
    from nix_infra.options import Options

log = logging.getLogger(__name__)

DEPLOY_LOCK_KEY = "/nix-infra/locks/deploy"
DEPLOY_RECORDS = "/nix-infra/deploys/"
LEASE_SECONDS = 60
KEEP_RECORDS = 50
LOCK_TIMEOUT = 5.0  # seconds etcd may take to answer; an unreachable etcd delays a deploy that long


class DeployLocked(NixInfraError):
    """Another deploy holds the cluster's lock."""


def _holder_of(raw: bytes | None) -> str:
    holder = Holder.from_text(raw.decode("utf-8", "replace")) if raw is not None else None
    return holder.describe() if holder else "an unknown holder"


@contextmanager
def deploy_lock(
    etcd: Etcd, holder: Holder, what: dict[str, Any], *, break_lock: bool = False, ttl: int = LEASE_SECONDS
) -> Iterator[None]:
    """Hold the cluster's deploy lock for the block; refuse (naming the holder) when another has it."""
    client = etcd.client
    try:
        lease = client.lease(ttl)
    except Exception as exc:  # grpc and etcd3 raise many kinds
        raise etcd.failure(exc, "taking the deploy lock") from exc
    value = json.dumps(holder.to_json())
    tx = client.transactions
    try:
        if not etcd.transaction([tx.create(DEPLOY_LOCK_KEY) == 0], [tx.put(DEPLOY_LOCK_KEY, value, lease)]):
            raw, meta = client.get(DEPLOY_LOCK_KEY)
            held_by = Holder.from_text(raw.decode("utf-8", "replace")) if raw is not None else None
            gone = held_by is not None and held_by.is_gone()
            if not break_lock and not gone:
                raise DeployLocked(
                    f"another deploy of this cluster is running: {_holder_of(raw)} holds {DEPLOY_LOCK_KEY} in etcd. "
                    f"Wait for it to finish (the lock expires {ttl} s after its holder stops), or, if you know "
                    "it is gone, take the lock over with `nix-infra deploy --break-lock`."
                )
            revision = meta.mod_revision if meta is not None else 0
            compare = [tx.mod(DEPLOY_LOCK_KEY) == revision] if meta is not None else [tx.create(DEPLOY_LOCK_KEY) == 0]
            if not etcd.transaction(compare, [tx.put(DEPLOY_LOCK_KEY, value, lease)]):
                raise DeployLocked(f"{DEPLOY_LOCK_KEY} changed while breaking it; nothing was done, run deploy again")
            log.warning(
                "took over the deploy lock from %s (%s)",
                _holder_of(raw),
                "--break-lock" if break_lock else "that process has ended; it ran on this machine",
            )
    except BaseException:
        _revoke(lease)
        raise
    record = f"{DEPLOY_RECORDS}{holder.since}-{holder.host}-{holder.pid}"
    _record(etcd, record, {**holder.to_json(), **what, "result": "running"})
    stop = threading.Event()
    keeper = threading.Thread(target=_keep_alive, args=(lease, stop, ttl), daemon=True, name="deploy-lock")
    keeper.start()
    result = "interrupted"
    try:
        yield
        result = "finished"
    except NixInfraError:
        result = "failed"
        raise
    finally:
        stop.set()
        keeper.join(timeout=5)
        _record(etcd, record, {**holder.to_json(), **what, "result": result})
        _revoke(lease)  # deletes the lock key: it is attached to this lease only


def _keep_alive(lease: Any, stop: threading.Event, ttl: int) -> None:
    while not stop.wait(ttl / 3):
        try:
            lease.refresh()
        except Exception as exc:  # a ctrl node restarting etcd: try again; the lease outlives a few misses
            log.warning("deploy lock: could not renew its lease (%s); retrying", exc)


def _revoke(lease: Any) -> None:
    try:
        lease.revoke()
    except Exception as exc:  # it expires by itself
        log.warning("deploy lock: could not release it (%s); it expires by itself", exc)


def _record(etcd: Etcd, key: str, data: dict[str, Any]) -> None:
    """Write the deploy's record, keeping the newest KEEP_RECORDS; a failure here only warns."""
    try:
        etcd.put(key, json.dumps(data, sort_keys=True).encode())
        old = sorted(etcd.get_prefix(DEPLOY_RECORDS))[:-KEEP_RECORDS]
        for stale in old:
            etcd.delete(stale)
    except NixInfraError as exc:
        log.warning("deploy record %s not written: %s", key, exc)


def deploy_records(etcd: Etcd) -> list[dict[str, Any]]:
    """The recorded deploys, oldest first."""
    out = []
    for _, (raw, _rev) in sorted(etcd.get_prefix(DEPLOY_RECORDS).items()):
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if isinstance(data, dict):
            out.append(data)
    return out


def describe_targets(nodes: Sequence[str], flake: str) -> dict[str, Any]:
    return {"nodes": list(nodes), "flake": flake}


@contextmanager
def cluster_deploy_lock(
    opts: Options, manifest: Manifest, nodes: Sequence[str], command: str, break_lock: bool
) -> Iterator[None]:
    """deploy's cluster-wide lock, when the cluster has an etcd to hold it.

    A cluster without one yet (no ctrl node installed, no admin certificate) deploys under the
    repo's run lock only; so does one whose etcd cannot be reached (deploy is how an operator
    repairs it), with a warning saying so."""
    from nix_infra.controlplane import connect
    from nix_infra.deploy import ssh_target
    from nix_infra.lock import me
    from nix_infra.pki import Pki

    repo = opts.repo_dir()
    facts = opts.facts()
    installed = [m for m in manifest.etcd.members if (f := facts.read(m)) is not None and f.installed]
    if not installed or not Pki(repo).cert_path("admin").exists():
        log.info("no etcd to hold the cluster-wide deploy lock yet; the repo's run lock only")
        yield
        return
    settings = opts.ssh_settings()
    with ExitStack() as stack:
        try:
            etcd = stack.enter_context(
                connect(
                    repo,
                    manifest,
                    lambda node: ssh_target(manifest.nodes[node], facts, settings),
                    opts.identity,
                    timeout=LOCK_TIMEOUT,
                )
            )
            stack.enter_context(
                deploy_lock(etcd, me(command), describe_targets(nodes, opts.flake), break_lock=break_lock)
            )
        except DeployLocked:
            raise
        except NixInfraError as exc:
            log.warning(
                "no cluster-wide deploy lock (etcd not reachable: %s); deploying under the repo's lock only", exc
            )
        yield
