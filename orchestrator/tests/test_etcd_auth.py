"""etcd authorization (RBAC) kept in line with the manifest by `etcd seed`, against a real TLS etcd.

A node's client certificate (CN = node name) may read /cluster and write only
its own instance keys (and flannel's leases); the admin certificate keeps
every right; turning auth on is safe to re-run from any point.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from etcd3 import etcdrpc

from nix_infra.controlplane import seed_control_plane
from nix_infra.errors import NixInfraError
from nix_infra.etcd import Etcd, Perm, auth_diff, desired_auth, manifest_auth, node_permissions, sync_auth
from nix_infra.manifest import Manifest, parse_manifest
from nix_infra.pki import ADMIN_CN

from .conftest import example_manifest_data, run_cli
from .etcd_server import ClusterPki, EtcdServer, make_cluster_pki

# ctrl001; worker001 hosts api (backends) and cache (services); worker002 hosts api and web (frontends)
THREE_NODES = (
    "let e = import ./lib/example.nix; in e // {"
    ' nodes = e.nodes // { worker002 = { type = "worker"; serverType = "cpx21"; }; };'
    ' apps = { api = e.apps.api // { nodes = [ "worker001" "worker002" ]; };'
    ' web = { group = "frontends"; port = 8081; publish = 5002; nodes = [ "worker002" ]; envPrefix = "WEB";'
    ' image = "ghcr.io/acme/web:1"; };'
    ' cache = { group = "services"; port = 6379; publish = 5003; nodes = [ "worker001" ]; envPrefix = "CACHE";'
    ' image = "ghcr.io/acme/cache:1"; }; }; }'
)
# worker002 removed; web moved to worker001
WEB_MOVED = (
    "let e = import ./lib/example.nix; in e // {"
    " apps = { api = e.apps.api;"
    ' web = { group = "frontends"; port = 8081; publish = 5002; nodes = [ "worker001" ]; envPrefix = "WEB";'
    ' image = "ghcr.io/acme/web:1"; };'
    ' cache = { group = "services"; port = 6379; publish = 5003; nodes = [ "worker001" ]; envPrefix = "CACHE";'
    ' image = "ghcr.io/acme/cache:1"; }; }; }'
)


@pytest.fixture(scope="module")
def manifest_data() -> dict[str, Any]:
    return example_manifest_data(THREE_NODES)


@pytest.fixture(scope="module")
def manifest(manifest_data: dict[str, Any]) -> Manifest:
    return parse_manifest(manifest_data)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, manifest_data: dict[str, Any]) -> ClusterPki:
    return make_cluster_pki(tmp_path_factory.mktemp("repo"), manifest_data)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: ClusterPki) -> Iterator[EtcdServer]:
    s = EtcdServer(tmp_path_factory.mktemp("etcd"), cluster, "ctrl001").start()
    yield s
    s.stop()


def reset(admin: Etcd) -> None:
    """Auth off, no users, no roles, no keys: a fresh etcd."""
    stub, t = admin.client.authstub, admin.client.timeout
    if admin.auth_enabled():
        stub.AuthDisable(etcdrpc.AuthDisableRequest(), t)
    for user in stub.UserList(etcdrpc.AuthUserListRequest(), t).users:
        stub.UserDelete(etcdrpc.AuthUserDeleteRequest(name=user), t)
    for role in stub.RoleList(etcdrpc.AuthRoleListRequest(), t).roles:
        stub.RoleDelete(etcdrpc.AuthRoleDeleteRequest(role=role), t)
    admin.delete("/", prefix=True)


@pytest.fixture
def admin(server: EtcdServer, cluster: ClusterPki) -> Iterator[Etcd]:
    with Etcd(server.url, cluster.tls("admin")) as client:
        reset(client)
        yield client


@pytest.fixture
def worker001(server: EtcdServer, cluster: ClusterPki) -> Iterator[Etcd]:
    with Etcd(server.url, cluster.tls("nodes/worker001/client"), timeout=5) as client:
        yield client


def refused(client: Etcd, action: str, key: str) -> bool:
    try:
        if action == "put":
            client.put(key, b"{}")
        elif action == "del":
            client.delete(key)
        elif action == "del-prefix":
            client.delete(key, prefix=True)
        else:
            client.get_prefix(key)
    except NixInfraError as e:
        assert "PERMISSION_DENIED" in e.message, e.message
        return True
    return False


OWN = "/cluster/backends/api/instances/worker001"


def test_after_seeding_a_node_may_write_only_its_own_instance_keys(
    admin: Etcd, worker001: Etcd, manifest: Manifest
) -> None:
    seed_control_plane(admin, manifest)
    assert admin.auth_enabled()
    # its own instance keys: put, read, delete
    for key in (OWN, "/cluster/services/cache/instances/worker001"):
        assert not refused(worker001, "put", key)
        assert worker001.get_prefix(key)[key][0] == b"{}"
        assert not refused(worker001, "del", key)
    # the mesh is readable as confd asks for it (the range of "/cluster", no trailing slash)
    assert "/cluster/nodes/ctrl001" in worker001.get_prefix("/cluster")
    before = admin.get_prefix("/")
    for action, key in [
        ("put", "/cluster/backends/api/instances/worker002"),  # another node's instance
        ("put", "/cluster/frontends/web/instances/worker001"),  # an app it does not host
        ("put", "/cluster/nodes/ctrl001"),
        ("put", "/cluster/nodes/worker001"),  # not even its own node record
        ("put", "/cluster/backends/api/meta_data"),
        ("put", "/cluster/backends/api/instances/"),
        ("put", "/cluster/custom/thing"),
        ("put", "/clusterx"),
        ("del", "/cluster/nodes/ctrl001"),
        ("del-prefix", "/cluster/nodes/"),
        ("del-prefix", "/cluster/backends/api/instances/"),
        ("put", "/coreos.com/network/other"),
        ("put", "/coreos.com/network/config"),  # the orchestrator's, seeded from lib
        ("del", "/coreos.com/network/config"),
        ("put", "/coreos.com/network/subnets"),
        ("get", "/"),
        ("get", "/coreos.com/"),
    ]:
        assert refused(worker001, action, key), f"{action} {key} was allowed"
    assert admin.get_prefix("/") == before


def test_flannel_on_a_node_can_lease_a_subnet_read_the_config_and_watch_the_leases(
    admin: Etcd, worker001: Etcd, manifest: Manifest, server: EtcdServer
) -> None:
    """What flannel v0.28 does with the node's certificate (pkg/subnet/etcd/registry.go). The config is the
    orchestrator's (seeded from lib): the node reads it and may not write it (modules/overlay.nix turns off
    NixOS's preStart put)."""
    seed_control_plane(admin, manifest)
    env = server.etcdctl_env("nodes/worker001/client")

    def etcdctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["etcdctl", *args], env=env, capture_output=True, text=True, check=False)

    config = etcdctl("get", "/coreos.com/network/config", "--print-value-only")
    assert config.returncode == 0 and json.loads(config.stdout)["Backend"]["Type"] == "wireguard"
    hijack = etcdctl("put", "/coreos.com/network/config", '{"Network":"169.254.0.0/16","Backend":{"Type":"vxlan"}}')
    assert hijack.returncode != 0 and "permission denied" in hijack.stderr
    assert etcdctl("del", "/coreos.com/network/config").returncode != 0
    assert json.loads(etcdctl("get", "/coreos.com/network/config", "--print-value-only").stdout) == json.loads(
        config.stdout
    )
    lease = etcdctl("lease", "grant", "30").stdout.split()[1]
    key = "/coreos.com/network/subnets/10.244.7.0-24"
    # flannel's createSubnet: put with its lease only if the key is absent
    txn = subprocess.run(
        ["etcdctl", "txn"],
        input=f'version("{key}") = "0"\n\nput --lease={lease} {key} lease\n\n\n',
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert txn.returncode == 0 and "SUCCESS" in txn.stdout, txn.stdout + txn.stderr
    got = etcdctl("get", "--prefix", "/coreos.com/network/subnets")  # getSubnets: prefix without the slash
    assert got.returncode == 0 and key in got.stdout
    assert etcdctl("lease", "timetolive", lease, "--keys").returncode == 0
    assert etcdctl("lease", "revoke", lease).returncode == 0
    assert not admin.get_prefix(key)


def test_the_admin_keeps_every_right_the_orchestrator_needs(
    admin: Etcd,
    server: EtcdServer,
    cluster: ClusterPki,
    manifest_data: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mfile = tmp_path / "manifest.json"
    mfile.write_text(json.dumps(manifest_data))
    ca, cert, key = cluster.write_files("admin", tmp_path / "admin")
    args = [
        "etcd",
        "--etcd-endpoint",
        server.url,
        "--etcd-ca",
        str(ca),
        "--etcd-cert",
        str(cert),
        "--etcd-key",
        str(key),
    ]
    code, out, err = run_cli(capsys, "--manifest", str(mfile), *args, "seed", "--dry-run")
    assert code == 0, err
    assert "+ user worker001 role nix-infra-node-worker001" in out and "+ auth enable" in out
    assert not admin.auth_enabled()  # a dry run writes nothing
    code, out, err = run_cli(capsys, "--manifest", str(mfile), *args, "seed")
    assert code == 0, err
    assert admin.auth_enabled()
    code, out, err = run_cli(capsys, "--manifest", str(mfile), "--json", *args, "seed")
    assert code == 0 and json.loads(out)["auth"] == [] and json.loads(out)["written"] == 0
    # get / put / del / watch, as the admin, with auth on
    assert run_cli(capsys, *args, "put", "/ops/flag", '{"a": 1}')[0] == 0
    code, out, _ = run_cli(capsys, *args, "get", "/cluster/nodes/")
    assert code == 0 and "/cluster/nodes/worker002" in json.loads(out)

    watching = server.watchers() + 1
    seen: list[bool] = []

    def writer() -> None:  # once the CLI's watch is registered (written anyway after the deadline)
        seen.append(server.wait_for_watchers(watching))
        server.etcdctl("put", "/w/a", "1")

    t = threading.Thread(target=writer)
    t.start()
    code, out, _ = run_cli(capsys, "--json", *args, "watch", "/w/", "--count", "1")
    t.join()
    assert seen == [True], "the CLI's watch was never registered"
    assert code == 0 and json.loads(out)["key"] == "/w/a"
    assert run_cli(capsys, "--yes", *args, "del", "--prefix", "/ops/")[0] == 0
    assert admin.get_prefix("/ops/") == {}


def test_seeding_twice_changes_nothing_the_second_time(admin: Etcd, manifest: Manifest) -> None:
    first = seed_control_plane(admin, manifest)
    assert first.auth.calls > 0
    second = seed_control_plane(admin, manifest)
    assert second.auth.diff.empty and second.auth.calls == 0 and second.keys.transactions == 0


def test_nobody_can_log_in_as_a_user_nix_infra_made(admin: Etcd, manifest: Manifest) -> None:
    """Users are made without a password (certificate CN only): a password login as root gets nothing."""
    seed_control_plane(admin, manifest)
    for user in ("root", ADMIN_CN, "worker001"):
        for password in ("", "root"):
            with pytest.raises(Exception, match="authentication failed"):
                admin.client.authstub.Authenticate(etcdrpc.AuthenticateRequest(name=user, password=password), 5)


def count_steps(admin: Etcd, manifest: Manifest) -> int:
    want = manifest_auth(manifest, ADMIN_CN)
    return len(admin.auth_steps(auth_diff(want, admin.auth_state(want))))


def test_a_run_interrupted_after_any_step_converges_and_never_locks_the_admin_out(
    admin: Etcd, worker001: Etcd, manifest: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after each possible step (users made but auth off, auth on with a role missing, ...), then run twice."""
    total = count_steps(admin, manifest)
    assert total > 20
    want = manifest_auth(manifest, ADMIN_CN)
    real = Etcd._call
    for done in range(total):
        reset(admin)
        calls = {"n": 0}

        def failing(
            self: Etcd, what: str, method: str, request: Any, done: int = done, calls: dict[str, int] = calls
        ) -> Any:
            if method in ("UserList", "RoleList", "UserGet", "RoleGet"):
                return real(self, what, method, request)
            if calls["n"] == done:
                raise NixInfraError(f"interrupted before {what}")
            calls["n"] += 1
            return real(self, what, method, request)

        monkeypatch.setattr(Etcd, "_call", failing)
        with pytest.raises(NixInfraError, match="interrupted"):
            sync_auth(admin, want)
        monkeypatch.setattr(Etcd, "_call", real)
        # the admin can still read and write, and a re-run finishes the job
        admin.put("/probe", b"1")
        assert sync_auth(admin, want).calls == total - done
        assert auth_diff(want, admin.auth_state(want)).empty
        assert sync_auth(admin, want).calls == 0
        assert refused(worker001, "put", "/cluster/nodes/ctrl001")
        assert not refused(worker001, "put", OWN)


def test_a_role_deleted_while_auth_is_on_is_restored(admin: Etcd, worker001: Etcd, manifest: Manifest) -> None:
    seed_control_plane(admin, manifest)
    admin.client.authstub.RoleDelete(etcdrpc.AuthRoleDeleteRequest(role="nix-infra-node-worker001"), 5)
    assert refused(worker001, "put", OWN)
    result = seed_control_plane(admin, manifest)
    assert "+ role nix-infra-node-worker001" in result.auth.diff.lines()
    assert not refused(worker001, "put", OWN)


def test_roles_follow_apps_removed_nodes_lose_user_and_role_and_nothing_foreign_is_touched(
    admin: Etcd, worker001: Etcd, manifest: Manifest, server: EtcdServer
) -> None:
    seed_control_plane(admin, manifest)
    stub = admin.client.authstub
    # an operator's own user and role, and a foreign role given to a node user
    stub.RoleAdd(etcdrpc.AuthRoleAddRequest(name="ops"), 5)
    perm = etcdrpc.auth_pb2.Permission(permType=2, key=b"/ops/", range_end=b"/ops0")
    stub.RoleGrantPermission(etcdrpc.AuthRoleGrantPermissionRequest(name="ops", perm=perm), 5)
    server.etcdctl("user", "add", "operator", "--no-password")
    server.etcdctl("user", "grant-role", "operator", "ops")
    server.etcdctl("user", "grant-role", "worker001", "ops")
    assert refused(worker001, "put", "/cluster/frontends/web/instances/worker001")

    moved = parse_manifest(example_manifest_data(WEB_MOVED))
    result = seed_control_plane(admin, moved)

    lines = result.auth.diff.lines()
    assert "- user worker002" in lines and "- role nix-infra-node-worker002" in lines
    assert "- user worker001 role ops" in lines
    assert not refused(worker001, "put", "/cluster/frontends/web/instances/worker001")  # web moved here
    assert refused(worker001, "put", "/ops/x")  # the foreign role was revoked from the node user
    users = stub.UserList(etcdrpc.AuthUserListRequest(), 5).users
    roles = stub.RoleList(etcdrpc.AuthRoleListRequest(), 5).roles
    assert sorted(users) == sorted(["root", ADMIN_CN, "ctrl001", "worker001", "operator"])
    assert sorted(roles) == sorted(["root", "ops", "nix-infra-node-ctrl001", "nix-infra-node-worker001"])
    assert list(stub.UserGet(etcdrpc.AuthUserGetRequest(name="operator"), 5).roles) == ["ops"]
    assert len(stub.RoleGet(etcdrpc.AuthRoleGetRequest(role="ops"), 5).perm) == 1


def test_a_node_named_like_etcds_root_or_the_admin_is_refused() -> None:
    for name in ("root", ADMIN_CN):
        with pytest.raises(NixInfraError, match=f"node '{name}': the name is reserved"):
            desired_auth({name: []}, ADMIN_CN)
    with pytest.raises(NixInfraError, match="is not one of its instance keys"):
        desired_auth({"worker001": ["/cluster/backends/api/instances/worker002"]}, ADMIN_CN)


def test_node_permissions_are_exactly_the_mesh_read_its_keys_and_flannels() -> None:
    perms = node_permissions("worker001", [OWN])
    assert sorted(p.describe() for p in perms) == [
        "read /cluster*",
        "read /coreos.com/network/config",
        "read /coreos.com/network/subnets*",
        "readwrite /cluster/backends/api/instances/worker001",
        "write /coreos.com/network/subnets/*",
    ]
    assert Perm.prefix("read", "/cluster").range_end == "/clustes"


def test_an_admin_stripped_of_root_by_hand_gets_an_error_that_says_so(
    tmp_path: Path, cluster: ClusterPki, manifest: Manifest
) -> None:
    server = EtcdServer(tmp_path / "etcd", cluster, "ctrl001").start()
    try:
        with Etcd(server.url, cluster.tls("admin")) as admin:
            seed_control_plane(admin, manifest)
            admin.client.authstub.UserRevokeRole(etcdrpc.AuthUserRevokeRoleRequest(name=ADMIN_CN, role="root"), 5)
            with pytest.raises(NixInfraError, match=f"{ADMIN_CN} was refused: it lost etcd's root role"):
                seed_control_plane(admin, manifest)
    finally:
        server.stop()
