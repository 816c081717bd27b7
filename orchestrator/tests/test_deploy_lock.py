"""Issue 13, case 8: the cluster-wide deploy lock in etcd, and the record of each deploy."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nix_infra.deploylock import DEPLOY_LOCK_KEY, DeployLocked, deploy_lock, deploy_records
from nix_infra.errors import NixInfraError
from nix_infra.etcd import Etcd
from nix_infra.lock import Holder, me

from .conftest import example_manifest_data
from .etcd_server import ClusterPki, EtcdServer, make_cluster_pki
from .test_register_instance import wait_for_renewal

DEADLINE = 60.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> ClusterPki:
    return make_cluster_pki(tmp_path_factory.mktemp("repo"), example_manifest_data())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: ClusterPki) -> Iterator[EtcdServer]:
    s = EtcdServer(tmp_path_factory.mktemp("etcd"), cluster, "ctrl001").start()
    yield s
    s.stop()


@pytest.fixture
def admin(server: EtcdServer, cluster: ClusterPki) -> Iterator[Etcd]:
    with Etcd(server.url, cluster.tls("admin")) as client:
        client.delete("/nix-infra/", prefix=True)
        yield client


def holder(pid: int, host: str = "laptop-a") -> Holder:
    return Holder(pid, host, "alice", "nix-infra deploy", "2026-11-30T15:00:00Z")


def lock_value(etcd: Etcd) -> dict[str, Any] | None:
    found = etcd.get_prefix(DEPLOY_LOCK_KEY)
    return json.loads(found[DEPLOY_LOCK_KEY][0]) if DEPLOY_LOCK_KEY in found else None


def test_a_second_deploy_is_refused_naming_the_holder_and_break_lock_takes_over(admin: Etcd) -> None:
    with deploy_lock(admin, holder(111), {"nodes": ["ctrl001"]}):
        assert lock_value(admin) == {**holder(111).to_json()}
        with pytest.raises(DeployLocked) as refused, deploy_lock(admin, holder(222, "laptop-b"), {}):
            pass
        message = refused.value.message
        assert "pid 111 on laptop-a" in message and "since 2026-11-30T15:00:00Z" in message
        assert "--break-lock" in message
        value = lock_value(admin)
        assert value is not None and value["pid"] == 111  # the refused one changed nothing
        with deploy_lock(admin, holder(333, "laptop-c"), {}, break_lock=True):
            value = lock_value(admin)
            assert value is not None and value["pid"] == 333
    assert lock_value(admin) is None  # released at the end


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def put_held(etcd: Etcd, who: Holder) -> None:
    """The lock as a SIGKILLed deploy leaves it: held under a lease that has minutes left."""
    lease = etcd.client.lease(600)
    etcd.client.put(DEPLOY_LOCK_KEY, json.dumps(who.to_json()), lease)


def test_a_dead_holder_on_this_machine_is_overruled_without_break_lock(admin: Etcd) -> None:
    """A SIGKILLed deploy's lock would refuse the next deploy until its lease expires; when it ran
    on this machine and its process is gone, the next deploy takes the lock over at once."""
    dead = dataclasses.replace(me("nix-infra deploy"), pid=dead_pid())
    put_held(admin, dead)
    with deploy_lock(admin, holder(5, "vm"), {}):
        value = lock_value(admin)
        assert value is not None and value["pid"] == 5
    assert lock_value(admin) is None


@pytest.mark.parametrize(
    "who",
    [
        pytest.param(lambda: dataclasses.replace(me("x"), pid=os.getpid()), id="alive-here"),
        pytest.param(lambda: dataclasses.replace(me("x"), pid=dead_pid(), machine=""), id="no-machine-id"),
        pytest.param(
            lambda: dataclasses.replace(
                me("x"), pid=dead_pid(), machine="00000000-0000-4000-8000-000000000000/4026531836"
            ),
            id="another-boot-or-machine",
        ),
        pytest.param(
            lambda: dataclasses.replace(me("x"), pid=dead_pid(), machine=me("x").machine.split("/")[0] + "/1"),
            id="another-pid-namespace",
        ),
    ],
)
def test_a_holder_not_known_to_be_dead_still_refuses(admin: Etcd, who: Callable[[], Holder]) -> None:
    put_held(admin, who())
    with pytest.raises(DeployLocked, match="--break-lock"), deploy_lock(admin, holder(6), {}):
        pass


def test_each_deploy_is_recorded_with_its_result(admin: Etcd) -> None:
    with deploy_lock(admin, holder(1), {"nodes": ["worker001"], "flake": "."}):
        assert deploy_records(admin)[-1]["result"] == "running"
    with pytest.raises(NixInfraError), deploy_lock(admin, holder(2), {"nodes": []}):
        raise NixInfraError("deploy failed on worker001")
    records = deploy_records(admin)
    assert [(r["pid"], r["result"]) for r in records] == [(1, "finished"), (2, "failed")]
    assert records[0]["nodes"] == ["worker001"] and records[0]["user"] == "alice"


TTL = 10  # the dead holder's lock: long enough that a holder slowed by load keeps it, short to wait out


def lock_lease(server: EtcdServer) -> str:
    """The lease the deploy lock key is attached to, as etcdctl names leases (hex)."""
    kvs = json.loads(server.etcdctl("get", DEPLOY_LOCK_KEY, "-w", "json")).get("kvs", [])
    assert kvs and kvs[0].get("lease"), f"{DEPLOY_LOCK_KEY} is not held under a lease: {kvs}"
    return format(int(kvs[0]["lease"]), "x")


def test_the_lock_expires_when_its_holder_dies(
    admin: Etcd, server: EtcdServer, cluster: ClusterPki, tmp_path: Path
) -> None:
    ca, cert, key = cluster.write_files("admin", tmp_path / "tls")
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from nix_infra.etcd import Etcd, TlsMaterial\n"
        "from nix_infra.deploylock import deploy_lock\n"
        "from nix_infra.lock import me\n"
        "tls = TlsMaterial(*(Path(p).read_bytes() for p in sys.argv[2:5]))\n"
        f"with Etcd(sys.argv[1], tls) as etcd, deploy_lock(etcd, me('nix-infra deploy'), {{}}, ttl={TTL}):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, server.url, str(ca), str(cert), str(key)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
        wait_for_renewal(server, lock_lease(server))  # the keep-alive holds it
        value = lock_value(admin)
        assert value is not None and value["pid"] == proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + DEADLINE
        while lock_value(admin) is not None:
            assert time.monotonic() < deadline, "the dead holder's lock did not expire"
            time.sleep(0.2)
        with deploy_lock(admin, holder(4), {}):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_only_the_admin_reaches_the_lock_and_the_records(admin: Etcd, server: EtcdServer, cluster: ClusterPki) -> None:
    """A node's certificate can neither take, read nor drop the deploy lock (auth on, as after seeding)."""
    from nix_infra.etcd import manifest_auth, sync_auth
    from nix_infra.pki import ADMIN_CN

    from .test_etcd_auth import refused, reset

    sync_auth(admin, manifest_auth(cluster.manifest, ADMIN_CN))
    try:
        with (
            deploy_lock(admin, holder(5), {}),
            Etcd(server.url, cluster.tls("nodes/ctrl001/client"), timeout=5) as node,
        ):
            for action in ("put", "del", "get"):
                assert refused(node, action, DEPLOY_LOCK_KEY), action
            assert refused(node, "get", "/nix-infra/deploys/")
    finally:
        reset(admin)


def test_held_for_a_click_command_it_records_the_commands_failure(admin: Etcd) -> None:
    """deploy holds the lock as a resource of its click context: the context's exception reaches it."""
    import click

    @click.command()
    def failing() -> None:
        click.get_current_context().with_resource(deploy_lock(admin, holder(7), {}))
        assert lock_value(admin) is not None
        raise NixInfraError("deploy failed on worker001")

    with pytest.raises(NixInfraError):
        failing.main([], standalone_mode=False)
    assert lock_value(admin) is None
    assert [(r["pid"], r["result"]) for r in deploy_records(admin)] == [(7, "failed")]
