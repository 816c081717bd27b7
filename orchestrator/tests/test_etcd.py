"""Seeding and the etcd commands against a real etcd with TLS and client-certificate auth."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nix_infra.errors import NixInfraError
from nix_infra.etcd import Etcd, TlsMaterial, canonical, seed

from .conftest import example_manifest_data, run_cli
from .etcd_server import ClusterPki, EtcdServer, free_port, make_cluster_pki


@pytest.fixture(scope="module")
def manifest_data() -> dict[str, Any]:
    return example_manifest_data()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, manifest_data: dict[str, Any]) -> ClusterPki:
    return make_cluster_pki(tmp_path_factory.mktemp("repo"), manifest_data)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: ClusterPki) -> Iterator[EtcdServer]:
    s = EtcdServer(tmp_path_factory.mktemp("etcd"), cluster, "ctrl001").start()
    yield s
    s.stop()


@pytest.fixture
def etcd(server: EtcdServer, cluster: ClusterPki) -> Iterator[Etcd]:
    server.etcdctl("del", "--prefix", "/")
    with Etcd(server.url, cluster.tls("admin")) as client:
        yield client


def everything(server: EtcdServer) -> dict[str, str]:
    out = server.etcdctl("get", "--prefix", "/", "-w", "json")
    import base64

    kvs = json.loads(out).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode() for kv in kvs}


def test_the_etcd3_client_works_with_current_protobuf(server: EtcdServer, cluster: ClusterPki) -> None:
    """cslab-etcd3 keeps the `etcd3` module, imports with protobuf >= 4 and speaks to etcd over TLS."""
    import etcd3
    import google.protobuf

    assert int(google.protobuf.__version__.split(".")[0]) >= 4
    assert hasattr(etcd3, "MultiEndpointEtcd3Client")
    with Etcd(server.url, cluster.tls("admin")) as client:
        client.put("/proof", b"protobuf " + google.protobuf.__version__.encode())
        assert client.get_prefix("/proof")["/proof"][0].startswith(b"protobuf ")
        assert client.client.status().version.startswith("3.")
        client.delete("/proof")


def test_seed_writes_exactly_the_manifest_keys_canonically(
    etcd: Etcd, server: EtcdServer, manifest_data: dict[str, Any]
) -> None:
    result = seed(etcd, manifest_data["etcdSeed"])
    assert result.diff.counts() == {"added": 4, "changed": 0, "removed": 0}
    stored = everything(server)
    assert stored == {k: canonical(v).decode() for k, v in manifest_data["etcdSeed"].items()}
    assert stored["/cluster/nodes/ctrl001"] == '{"ipv4":"10.10.32.1","name":"ctrl001","services":[]}'

    again = seed(etcd, manifest_data["etcdSeed"])
    assert again.diff.empty and again.transactions == 0
    assert everything(server) == stored


def test_seed_leaves_instances_and_foreign_keys_and_removes_stale_owned_keys(
    etcd: Etcd, server: EtcdServer, manifest_data: dict[str, Any]
) -> None:
    seed(etcd, manifest_data["etcdSeed"])
    instance = "/cluster/backends/api/instances/worker001"
    orphan_instance = "/cluster/backends/gone/instances/worker009"
    server.etcdctl("put", instance, '{"ipv4":"10.10.64.1","node":"worker001","port":8080}')
    server.etcdctl("put", orphan_instance, "registered by a node")
    server.etcdctl("put", "/cluster/nodes/worker009", '{"name":"worker009"}')  # a node removed from the flake
    server.etcdctl("put", "/cluster/backends/gone/meta_data", "{}")  # an app removed from the flake
    server.etcdctl("put", "/cluster/custom/thing", "operator data")  # under /cluster, not owned
    server.etcdctl("put", "/coreos.com/network/configx", "not flannel's config")  # outside /cluster
    server.etcdctl("put", "/coreos.com/network/subnets/10.244.7.0-24", "a lease")
    server.etcdctl("put", "/cluster/nodes/ctrl001", '{"name": "ctrl001", "ipv4": "10.10.32.1", "services": []}')
    before = everything(server)

    result = seed(etcd, manifest_data["etcdSeed"])

    assert result.diff.counts() == {"added": 0, "changed": 1, "removed": 2}
    after = everything(server)
    assert "/cluster/nodes/worker009" not in after and "/cluster/backends/gone/meta_data" not in after
    foreign = ("/cluster/custom/thing", "/coreos.com/network/configx", "/coreos.com/network/subnets/10.244.7.0-24")
    for untouched in (instance, orphan_instance, *foreign):
        assert after[untouched] == before[untouched]
    assert after["/cluster/nodes/ctrl001"] == '{"ipv4":"10.10.32.1","name":"ctrl001","services":[]}'


def test_seed_writes_flannels_config_restores_it_and_never_removes_it(
    etcd: Etcd, server: EtcdServer, manifest_data: dict[str, Any]
) -> None:
    """The nodes no longer write /coreos.com/network/config (modules/overlay.nix): the seed does, from lib."""
    key = "/coreos.com/network/config"
    seed(etcd, manifest_data["etcdSeed"])
    want = '{"Backend":{"ListenPort":51820,"PersistentKeepaliveInterval":25,"Type":"wireguard"},'
    want += '"Network":"10.244.0.0/16","SubnetLen":24}'
    assert everything(server)[key] == want
    server.etcdctl("put", key, '{"Network":"169.254.0.0/16","Backend":{"Type":"vxlan"}}')  # by hand
    result = seed(etcd, manifest_data["etcdSeed"])
    assert result.diff.counts() == {"added": 0, "changed": 1, "removed": 0}
    assert everything(server)[key] == want
    # a manifest without it (from an older lib) leaves it alone: every node's flannel needs it
    older = {k: v for k, v in manifest_data["etcdSeed"].items() if k != key}
    assert seed(etcd, older).diff.empty
    assert everything(server)[key] == want


FLANNEL_CONFIG_CASES: dict[str, tuple[Any, str]] = {
    "not an object": ("10.244.0.0/16", "expected an object"),
    "extra field": ({"SubnetMin": "10.244.1.0"}, "SubnetMin: unknown field"),
    "network not a CIDR": ({"Network": "10.244.0.0"}, "Network: '10.244.0.0' is not an IPv4 CIDR"),
    "network with text": ({"Network": "10.244.0.0/16' ; rm -rf /"}, "is not an IPv4 CIDR"),
    "subnet length": ({"SubnetLen": 31}, "SubnetLen: 31 is not a whole number from 8 to 30"),
    "backend vxlan": ({"Backend": {"Type": "vxlan", "ListenPort": 51820, "PersistentKeepaliveInterval": 25}}, "Type"),
    "backend port": ({"Backend": {"Type": "wireguard", "ListenPort": 0, "PersistentKeepaliveInterval": 25}}, "Listen"),
    "backend missing": ({"Backend": None}, "Backend is missing"),
}


@pytest.mark.parametrize("case", sorted(FLANNEL_CONFIG_CASES))
def test_the_manifest_loader_refuses_a_flannel_config_lib_would_not_write(
    manifest_data: dict[str, Any], case: str
) -> None:
    import copy

    import jsonschema

    from nix_infra.manifest import parse_manifest

    from .conftest import REPO

    change, message = FLANNEL_CONFIG_CASES[case]
    data = copy.deepcopy(manifest_data)
    key = "/coreos.com/network/config"
    if isinstance(change, dict):
        value = {k: v for k, v in {**data["etcdSeed"][key], **change}.items() if v is not None}
    else:
        value = change
    data["etcdSeed"][key] = value
    with pytest.raises(NixInfraError, match=message):
        parse_manifest(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json.loads((REPO / "docs/manifest.schema.json").read_text()))
    parse_manifest(copy.deepcopy(manifest_data))  # the control: lib's own value loads


def test_dry_run_writes_nothing(etcd: Etcd, server: EtcdServer, manifest_data: dict[str, Any]) -> None:
    result = seed(etcd, manifest_data["etcdSeed"], dry_run=True)
    assert result.diff.counts()["added"] == 4
    assert everything(server) == {}


def test_many_keys_are_written_in_bounded_transactions(etcd: Etcd, server: EtcdServer) -> None:
    desired = {f"/cluster/nodes/n{i:04d}": {"name": f"n{i:04d}"} for i in range(300)}
    result = seed(etcd, desired)
    assert result.transactions == 3  # 128 + 128 + 44: etcd's default --max-txn-ops is 128
    assert len(everything(server)) == 300


def test_a_concurrent_change_stops_the_seed_without_clobbering(
    etcd: Etcd, server: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    desired = {f"/cluster/nodes/n{i}": {"name": f"n{i}", "v": 2} for i in range(4)}
    for i in range(4):
        server.etcdctl("put", f"/cluster/nodes/n{i}", '{"v":1}')
    real = etcd.get_prefix

    def read_then_race(prefix: str) -> Any:
        snapshot = real(prefix)
        server.etcdctl("put", "/cluster/nodes/n3", "changed by someone else")
        return snapshot

    monkeypatch.setattr(etcd, "get_prefix", read_then_race)
    with pytest.raises(NixInfraError, match="changed while seeding") as err:
        seed(etcd, desired, max_txn_ops=2)
    assert "1 of 2 transactions" in err.value.message
    stored = everything(server)
    assert stored["/cluster/nodes/n3"] == "changed by someone else"
    # the transaction holding n3 was written not at all: n2 is still the old value
    assert stored["/cluster/nodes/n2"] == '{"v":1}'
    monkeypatch.undo()
    assert seed(etcd, desired).diff.counts()["changed"] == 2  # a re-run converges


def test_a_client_without_a_valid_certificate_is_refused(
    server: EtcdServer, cluster: ClusterPki, tmp_path: Path, manifest_data: dict[str, Any]
) -> None:
    stranger = make_cluster_pki(tmp_path / "other", manifest_data)  # same names, another CA
    forged = TlsMaterial(ca=cluster.pki.ca_pem(), cert=stranger.tls("admin").cert, key=stranger.tls("admin").key)
    with Etcd(server.url, forged, timeout=3) as client, pytest.raises(NixInfraError, match=server.url):
        client.get_prefix("/")
    # no client certificate at all: etcdctl with only the CA
    env = server.etcdctl_env()
    del env["ETCDCTL_CERT"], env["ETCDCTL_KEY"]
    proc = subprocess.run(
        ["etcdctl", "get", "/x", "--command-timeout=3s"], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0


def test_unreachable_etcd_names_the_endpoint_and_writes_nothing(cluster: ClusterPki) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    with Etcd(url, cluster.tls("admin"), timeout=2) as client:
        start = time.monotonic()
        with pytest.raises(NixInfraError) as err:
            seed(client, {"/cluster/nodes/a": {"name": "a"}})
    assert url in err.value.message
    assert time.monotonic() - start < 60  # gave up (timeout=2 s, a few retries), did not hang


# ---- the CLI -------------------------------------------------------------------------------------


def cli_args(server: EtcdServer, cluster: ClusterPki, tmp_path: Path) -> list[str]:
    ca, cert, key = cluster.write_files("admin", tmp_path / "admin")
    files = ["--etcd-ca", str(ca), "--etcd-cert", str(cert), "--etcd-key", str(key)]
    return ["etcd", "--etcd-endpoint", server.url, *files]


@pytest.fixture
def manifest_file(tmp_path: Path, manifest_data: dict[str, Any]) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest_data))
    return path


def test_cli_seed_dry_run_then_seed_then_noop(
    etcd: Etcd,
    server: EtcdServer,
    cluster: ClusterPki,
    tmp_path: Path,
    manifest_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = cli_args(server, cluster, tmp_path)
    code, out, _ = run_cli(capsys, "--manifest", str(manifest_file), *args, "seed", "--dry-run")
    assert code == 0
    assert "+ /cluster/nodes/ctrl001" in out and "4 added, 0 changed, 0 removed (nothing written)" in out
    assert everything(server) == {}
    code, out, _ = run_cli(capsys, "--manifest", str(manifest_file), "--json", *args, "seed")
    assert code == 0
    seeded = json.loads(out)
    assert "+ user worker001 role nix-infra-node-worker001" in seeded.pop("auth")  # test_etcd_auth.py
    assert seeded | {"seconds": 0} == {
        "dry_run": False,
        "added": 4,
        "changed": 0,
        "removed": 0,
        "written": 4,
        "transactions": 1,
        "seconds": 0,
        "add": sorted(json.loads(manifest_file.read_text())["etcdSeed"]),
        "change": [],
        "remove": [],
    }
    code, out, _ = run_cli(capsys, "--manifest", str(manifest_file), "--json", *args, "seed")
    assert json.loads(out)["written"] == 0


def test_cli_get_put_del(
    etcd: Etcd, server: EtcdServer, cluster: ClusterPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_args(server, cluster, tmp_path)
    assert run_cli(capsys, *args, "put", "/ops/flag", '{"b": 1, "a": [1, 2]}')[0] == 0
    assert server.etcdctl("get", "--print-value-only", "/ops/flag").strip() == '{"a":[1,2],"b":1}'
    code, out, _ = run_cli(capsys, *args, "get", "/ops/")
    assert code == 0 and json.loads(out) == {"/ops/flag": {"a": [1, 2], "b": 1}}
    assert "  " in out  # pretty-printed
    code, out, _ = run_cli(capsys, *args, "del", "/ops/flag")
    assert code == 0 and "deleted 1 key(s)" in out
    assert everything(server) == {}


def test_cli_watch_prints_events(
    etcd: Etcd, server: EtcdServer, cluster: ClusterPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_args(server, cluster, tmp_path)
    watching = server.watchers() + 1
    seen: list[bool] = []

    def writer() -> None:  # once the CLI's watch is registered (written anyway after the deadline)
        seen.append(server.wait_for_watchers(watching))
        server.etcdctl("put", "/w/a", '{"x":1}')
        server.etcdctl("del", "/w/a")

    t = threading.Thread(target=writer)
    t.start()
    code, out, _ = run_cli(capsys, "--json", *args, "watch", "/w/", "--count", "2")
    t.join()
    assert seen == [True], "the CLI's watch was never registered"
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert events == [
        {"type": "put", "key": "/w/a", "value": {"x": 1}},
        {"type": "delete", "key": "/w/a", "value": ""},
    ]


def test_cli_direct_endpoint_needs_all_tls_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "etcd", "--etcd-endpoint", "https://127.0.0.1:1", "get", "/")
    assert code == 1 and "--etcd-ca, --etcd-cert, --etcd-key" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "etcd", "--etcd-endpoint", "https://127.0.0.1:1", "--etcd-ca", "x",
                           "--etcd-cert", "x", "--etcd-key", "x", "get", "/")  # fmt: skip
    assert code == 1 and "--etcd-ca x: cannot be read" in err


def test_cli_unreachable_etcd(cluster: ClusterPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca, cert, key = cluster.write_files("admin", tmp_path / "admin")
    url = f"https://127.0.0.1:{free_port()}"
    code, _, err = run_cli(
        capsys, "etcd", "--etcd-endpoint", url, "--etcd-ca", str(ca), "--etcd-cert", str(cert), "--etcd-key",
        str(key), "get", "/",
    )  # fmt: skip
    assert code == 1 and f"etcd at {url}" in err and "Traceback" not in err


INSTANCE = "/cluster/backends/api/instances/worker001"


def lease_of(server: EtcdServer, key: str) -> int:
    kvs = json.loads(server.etcdctl("get", key, "-w", "json")).get("kvs", [])
    return int(kvs[0].get("lease", 0)) if kvs else 0


def test_cli_put_refuses_an_instance_key_unless_forced_and_never_detaches_its_lease(
    etcd: Etcd, server: EtcdServer, cluster: ClusterPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_args(server, cluster, tmp_path)
    lease = server.etcdctl("lease", "grant", "60").split()[1]
    server.etcdctl("put", "--lease", lease, INSTANCE, '{"ipv4":"10.10.64.1","node":"worker001","port":8080}')
    code, _, err = run_cli(capsys, *args, "put", INSTANCE, '{"ipv4":"10.10.64.1","node":"worker001","port":9}')
    assert code == 1 and "is an instance key" in err and "--force" in err and "Traceback" not in err
    assert json.loads(everything(server)[INSTANCE])["port"] == 8080
    code, _, err = run_cli(capsys, *args, "put", "--force", INSTANCE, '{"ipv4": "10.10.64.1", "node": "worker001", '
                           '"port": 9}')  # fmt: skip
    assert code == 0, err
    assert everything(server)[INSTANCE] == '{"ipv4":"10.10.64.1","node":"worker001","port":9}'
    assert lease_of(server, INSTANCE) == int(lease, 16)  # still goes when its node's lease does
    server.etcdctl("lease", "revoke", lease)
    assert INSTANCE not in everything(server)
    # a missing instance key is never created, not even forced: it would have no lease
    code, _, err = run_cli(capsys, *args, "put", "--force", INSTANCE, "{}")
    assert code == 1 and "does not exist" in err and "Traceback" not in err
    assert everything(server) == {}


def test_cli_del_refuses_instance_keys_also_under_a_prefix_unless_forced(
    etcd: Etcd, server: EtcdServer, cluster: ClusterPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_args(server, cluster, tmp_path)
    server.etcdctl("put", INSTANCE, "{}")
    server.etcdctl("put", "/cluster/backends/api/meta_data", "{}")
    for extra in ([], ["--prefix"]):
        target = INSTANCE if not extra else "/cluster/backends/"
        code, _, err = run_cli(capsys, *args, "del", *extra, target)
        assert code == 1 and INSTANCE in err and "--force" in err and "Traceback" not in err
    assert len(everything(server)) == 2
    # no instance key under it: it asks first (no terminal here: refused), --yes answers
    code, _, err = run_cli(capsys, *args, "del", "--prefix", "/cluster/backends/api/meta")
    assert code == 1 and "Delete the 1 key(s) under /cluster/backends/api/meta?" in err
    code, out, _ = run_cli(capsys, "--yes", *args, "del", "--prefix", "/cluster/backends/api/meta")
    assert code == 0 and "deleted 1 key(s)" in out
    code, out, _ = run_cli(capsys, *args, "del", "--force", INSTANCE)
    assert code == 0 and "deleted 1 key(s)" in out
    assert everything(server) == {}
