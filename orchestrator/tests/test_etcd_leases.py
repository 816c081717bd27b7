"""Another node's registration lease under RBAC: a worker's certificate cannot revoke it (that would
deregister a live instance at will); it can renew it, etcd's residual right docs/etcd.md states."""

from __future__ import annotations

import subprocess

from nix_infra.controlplane import seed_control_plane
from nix_infra.etcd import Etcd
from nix_infra.manifest import Manifest

from .etcd_server import EtcdServer
from .test_etcd_auth import admin, cluster, manifest, manifest_data, server, worker001  # noqa: F401

W2_KEY = "/cluster/backends/api/instances/worker002"


def etcdctl(etcd: EtcdServer, cert: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["etcdctl", "--command-timeout=5s", *args],
        env=etcd.etcdctl_env(cert),
        capture_output=True,
        text=True,
        timeout=30,
    )


def worker002_registers(etcd: EtcdServer) -> str:
    """worker002's registration, as the script does it with its own certificate; returns the lease id (hex)."""
    out = etcdctl(etcd, "nodes/worker002/client", "lease", "grant", "5")
    assert out.returncode == 0, out.stderr
    lease = out.stdout.split()[1]
    value = '{"ipv4":"10.10.64.2","node":"worker002","port":8080}'
    put = etcdctl(etcd, "nodes/worker002/client", "put", f"--lease={lease}", W2_KEY, value)
    assert put.returncode == 0, put.stderr
    return lease


def test_the_documented_residual_right_a_worker_can_renew_another_nodes_lease(
    admin: Etcd,  # noqa: F811
    worker001: Etcd,  # noqa: F811
    manifest: Manifest,  # noqa: F811
    server: EtcdServer,  # noqa: F811
) -> None:
    """etcd checks no key permission on LeaseKeepAlive (docs/etcd.md, residual rights): if this fails,
    etcd closed the gap and the docs should say so."""
    seed_control_plane(admin, manifest)
    lease = worker002_registers(server)
    out = etcdctl(server, "nodes/worker001/client", "lease", "keep-alive", "--once", lease)
    assert "keepalived" in out.stdout, (out.stdout, out.stderr)


def test_a_worker_cannot_revoke_another_nodes_instance_lease(
    admin: Etcd,  # noqa: F811
    worker001: Etcd,  # noqa: F811
    manifest: Manifest,  # noqa: F811
    server: EtcdServer,  # noqa: F811
) -> None:
    seed_control_plane(admin, manifest)
    lease = worker002_registers(server)
    out = etcdctl(server, "nodes/worker001/client", "lease", "revoke", lease)
    assert out.returncode != 0 and "permission denied" in out.stderr, (out.stdout, out.stderr)
    assert admin.get_prefix(W2_KEY)
