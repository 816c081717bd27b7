"""The node-side registration script (modules/scripts/register-instance.sh) against a real TLS etcd.

It runs as a node would run it: etcdctl with the node's own client certificate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, example_manifest_data
from .etcd_server import ClusterPki, EtcdServer, make_cluster_pki

SCRIPT = REPO / "modules" / "scripts" / "register-instance.sh"
KEY = "/cluster/backends/api/instances/worker001"
TTL = 10  # renewed every INTERVAL: a renewal may be seconds late under load and the key lives on
INTERVAL = 1
# Deadlines only bound a hang: every assertion is about what happens, never how fast, so the tests
# hold on a loaded machine (etcdctl alone can take seconds to start there).
DEADLINE = 60
# A lease that cannot expire during a test: a key that vanishes under it was revoked by the script.
LONG_TTL = 600


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> ClusterPki:
    return make_cluster_pki(tmp_path_factory.mktemp("repo"), example_manifest_data())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: ClusterPki) -> Iterator[EtcdServer]:
    s = EtcdServer(tmp_path_factory.mktemp("etcd"), cluster, "ctrl001").start()
    yield s
    s.stop()


class Registration:
    def __init__(self, server: EtcdServer, workdir: Path) -> None:
        self.server = server
        self.ttl = TTL
        self.health = workdir / "healthy"
        self.log = workdir / "register.log"
        self.env = server.etcdctl_env("nodes/worker001/client")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            str(SCRIPT),
            "--app", "api", "--group", "backends", "--node", "worker001", "--address", "10.10.64.1",
            "--port", "8080", "--ttl", str(self.ttl), "--interval", str(INTERVAL),
            "--health-cmd", f"test -f {self.health}",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def value(self) -> str | None:
        out = self.server.etcdctl("get", "--print-value-only", KEY).strip()
        return out or None

    def leases(self) -> list[str]:
        return self.server.etcdctl("lease", "list").split()[3:]  # "found N leases" then the IDs

    def wait_for(self, present: bool, timeout: float) -> float:
        """Seconds until the key is (or is no longer) there; fails the test after `timeout`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if (self.value() is not None) == present:
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"key {'never appeared' if present else 'still there'}; log:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for_renewal(server: EtcdServer, lease: str) -> None:
    """Returns once etcd shows `lease` renewed: its remaining TTL went up between two looks.

    Proof of a keep-alive that does not depend on how fast the machine is (only DEADLINE bounds it)."""
    import re

    def remaining() -> int:
        out = server.etcdctl("lease", "timetolive", lease)
        m = re.search(r"remaining\((-?\d+)s\)", out)
        assert m and int(m.group(1)) >= 0, f"lease {lease} is gone: {out}"
        return int(m.group(1))

    deadline = time.monotonic() + DEADLINE
    low = remaining()
    while (now := remaining()) <= low:
        assert time.monotonic() < deadline, f"lease {lease} was never renewed"
        low = now
        time.sleep(0.2)


@pytest.fixture
def registration(server: EtcdServer, tmp_path: Path) -> Iterator[Registration]:
    server.etcdctl("del", "--prefix", "/")
    r = Registration(server, tmp_path)
    for lease in r.leases():  # left by an earlier test's killed script
        server.etcdctl("lease", "revoke", lease)
    yield r
    r.stop()


def test_registers_only_once_healthy_and_keeps_the_lease_alive(registration: Registration) -> None:
    registration.start()
    time.sleep(2 * INTERVAL)
    assert registration.value() is None  # not healthy yet
    registration.health.touch()
    registration.wait_for(True, DEADLINE)
    assert json.loads(registration.value() or "") == {"ipv4": "10.10.64.1", "node": "worker001", "port": 8080}
    (lease,) = registration.leases()
    wait_for_renewal(registration.server, lease)
    assert registration.value() is not None
    assert registration.leases() == [lease]


def test_sigkill_lets_the_key_vanish_within_the_ttl(registration: Registration) -> None:
    registration.health.touch()
    registration.start()
    registration.wait_for(True, DEADLINE)
    assert registration.proc is not None
    registration.proc.send_signal(signal.SIGKILL)
    registration.proc.wait()
    registration.wait_for(False, TTL + DEADLINE)  # nobody renews the lease: it expires


def test_failing_health_removes_the_key_within_one_interval_and_recovery_registers_again(
    registration: Registration,
) -> None:
    """With a lease that would live for minutes, the key can only vanish because the script, seeing
    the failed check (it checks once an interval), revoked it; a recovered check registers again."""
    registration.ttl = LONG_TTL
    registration.health.touch()
    registration.start()
    registration.wait_for(True, DEADLINE)
    registration.health.unlink()
    registration.wait_for(False, DEADLINE)  # far less than LONG_TTL: not an expiry
    # revoked, not left to expire (the script deletes the key, then revokes: wait for the second step)
    deadline = time.monotonic() + DEADLINE
    while registration.leases():
        assert time.monotonic() < deadline, f"lease never revoked; log:\n{registration.log.read_text()}"
        time.sleep(0.1)
    registration.health.touch()
    registration.wait_for(True, DEADLINE)
    assert len(registration.leases()) == 1


def test_sigterm_deregisters_at_once(registration: Registration) -> None:
    registration.health.touch()
    registration.start()
    registration.wait_for(True, DEADLINE)
    assert registration.proc is not None
    registration.proc.terminate()
    assert registration.proc.wait(DEADLINE) == 0
    assert registration.value() is None
    assert registration.leases() == []


def test_a_lost_lease_is_granted_again(registration: Registration, server: EtcdServer) -> None:
    """etcd lost the lease (e.g. it was revoked by an operator): the script registers again."""
    registration.health.touch()
    registration.start()
    registration.wait_for(True, DEADLINE)
    (lease,) = registration.leases()
    server.etcdctl("lease", "revoke", lease)
    assert registration.value() is None
    registration.wait_for(True, DEADLINE)
    assert registration.leases() != [lease]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--group", "middle"], "--group: 'middle' is not allowed; expected frontends, backends or services"),
        (["--port", "70000"], "--port: '70000' is not a port"),
        (["--interval", "5"], "--interval: '5' must be whole seconds, at least 1 and below --ttl (3)"),
        (["--address", "10.1"], "--address: '10.1' is not an IPv4 address"),
    ],
)
def test_bad_arguments_are_refused_naming_the_flag(args: list[str], message: str) -> None:
    base = {
        "--app": "api", "--group": "backends", "--node": "worker001", "--address": "10.10.64.1", "--port": "8080",
        "--ttl": "3", "--interval": "1", "--health-cmd": "true",
    }  # fmt: skip
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [str(SCRIPT), *[x for kv in base.items() for x in kv]]
    proc = subprocess.run(
        argv, env={**os.environ, "ETCDCTL_ENDPOINTS": "https://127.0.0.1:1"}, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert message in proc.stderr


def lease_of(server: EtcdServer) -> int:
    """The lease the instance key is attached to (0: none)."""
    kvs = json.loads(server.etcdctl("get", KEY, "-w", "json")).get("kvs", [])
    return int(kvs[0].get("lease", 0)) if kvs else 0


def test_a_deleted_key_is_put_back_under_the_same_lease(registration: Registration, server: EtcdServer) -> None:
    """`etcdctl del` of the key while the instance is healthy: repaired within an interval or so.

    The lease cannot expire during the test (LONG_TTL), so "the same lease" does not depend on how
    fast a loaded machine renews it."""
    registration.ttl = LONG_TTL
    registration.health.touch()
    registration.start()
    registration.wait_for(True, DEADLINE)
    (lease,) = registration.leases()
    server.etcdctl("del", KEY)
    registration.wait_for(True, DEADLINE)
    assert json.loads(registration.value() or "") == {"ipv4": "10.10.64.1", "node": "worker001", "port": 8080}
    assert registration.leases() == [lease]
    assert lease_of(server) == int(lease, 16)


def test_an_overwritten_or_detached_key_is_put_back_under_its_lease(
    registration: Registration, server: EtcdServer
) -> None:
    """A key put without a lease would outlive the instance; the script puts it back under its own.

    The lease cannot expire during the test (LONG_TTL): a renewal that is late on a loaded machine
    would otherwise (rightly) register again under a new lease, and "its lease" would be a race."""
    registration.ttl = LONG_TTL
    registration.health.touch()
    registration.start()
    registration.wait_for(True, DEADLINE)
    (lease,) = registration.leases()
    right = registration.value()
    server.etcdctl("put", KEY, '{"ipv4":"203.0.113.66","node":"worker001","port":8080}')  # no lease: would outlive us
    deadline = time.monotonic() + DEADLINE
    while registration.value() != right or lease_of(server) != int(lease, 16):
        assert time.monotonic() < deadline, f"not repaired; log:\n{registration.log.read_text()}"
        time.sleep(0.1)
    assert registration.leases() == [lease]
    # SIGKILL, then the lease ends (here: revoked, standing in for its expiry): the key goes with it
    assert registration.proc is not None
    registration.proc.kill()
    registration.proc.wait()
    assert registration.value() == right  # held by the lease alone now
    server.etcdctl("lease", "revoke", lease)
    assert registration.value() is None


def test_registration_works_under_etcd_rbac(tmp_path: Path) -> None:
    """With auth on (seeded by the orchestrator), the node's certificate registers, renews, repairs, deregisters."""
    from nix_infra.controlplane import seed_control_plane
    from nix_infra.etcd import Etcd

    cluster = make_cluster_pki(tmp_path / "repo", example_manifest_data())
    server = EtcdServer(tmp_path / "etcd", cluster, "ctrl001").start()
    try:
        with Etcd(server.url, cluster.tls("admin")) as admin:
            seed_control_plane(admin, cluster.manifest)
            assert admin.auth_enabled()
        registration = Registration(server, tmp_path)
        registration.health.touch()
        registration.start()
        try:
            registration.wait_for(True, DEADLINE)
            (lease,) = registration.leases()
            wait_for_renewal(server, lease)  # renewed with the node's certificate
            assert registration.value() is not None
            server.etcdctl("del", KEY)
            registration.wait_for(True, DEADLINE)
            assert registration.proc is not None
            registration.proc.terminate()
            assert registration.proc.wait(DEADLINE) == 0
            assert registration.value() is None
            assert registration.leases() == []  # revoked with the node's certificate
            # deregistered with the node's certificate (an etcd retry logged under load is no failure of it)
            assert f"etcd: del {KEY} failed" not in registration.log.read_text()
        finally:
            registration.stop()
    finally:
        server.stop()


def test_a_stalled_keep_alive_does_not_stall_the_registration(registration: Registration, tmp_path: Path) -> None:
    """etcdctl 3.4's `lease keep-alive --once` ignores --command-timeout: a keep-alive stream that
    stalls (a loaded node, a lost connection) hung the loop for good, and the key expired while the
    instance was healthy. The script bounds it; the loop goes on and the key comes back."""
    import shutil

    shim = tmp_path / "bin"
    shim.mkdir()
    stall = tmp_path / "stall-next-keep-alive"
    real = shutil.which("etcdctl")
    (shim / "etcdctl").write_text(
        "#!/usr/bin/env bash\n"
        f'if [[ " $* " == *" keep-alive "* ]] && rm {stall} 2>/dev/null; then exec sleep 100000; fi\n'
        f'exec {real} "$@"\n'
    )
    (shim / "etcdctl").chmod(0o755)
    registration.env = {**registration.env, "PATH": f"{shim}:{registration.env['PATH']}"}
    registration.health.touch()
    registration.start()
    registration.wait_for(True, DEADLINE)
    stall.touch()
    deadline = time.monotonic() + DEADLINE + TTL
    while "keep-alive failed" not in registration.log.read_text():
        assert time.monotonic() < deadline, f"the loop is stuck; log:\n{registration.log.read_text()}"
        time.sleep(0.1)
    assert not stall.exists()
    registration.wait_for(True, DEADLINE)  # still (or again) registered: the loop went on
