"""The lib-generated confd template, rendered from etcd data with Go's text/template, passes `haproxy -c`.

tests/confd_render/main.go reproduces confd's store functions over a JSON
snapshot and renders with Go's text/template, as confd does. Snapshots come
from lib's etcd seed plus instances, and once from a real TLS etcd after
seeding and a registration by the node's registration script.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nix_infra.controlplane import seed_control_plane
from nix_infra.etcd import Etcd, canonical
from nix_infra.manifest import parse_manifest

from .conftest import REPO, example_manifest_data
from .etcd_server import EtcdServer, make_cluster_pki

BIG_SPEC = "import ./bench/cluster.nix { size = 40; }"


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("go") is None:
        raise RuntimeError("go is not installed (bin/setup installs Debian's golang-go)")
    out = tmp_path_factory.mktemp("go") / "confd-render"
    env = {**os.environ, "GOCACHE": str(out.parent / "cache"), "GO111MODULE": "off", "GOPATH": str(out.parent)}
    subprocess.run(
        ["go", "build", "-o", str(out), str(REPO / "tests/confd_render/main.go")], env=env, check=True, timeout=300
    )
    return out


def node_configs(spec_expr: str) -> dict[str, Any]:
    proc = subprocess.run(
        [
            "nix-instantiate", "--eval", "--strict", "--json", "--expr",
            f"builtins.mapAttrs (_: n: n.config) ((import ./lib).evalCluster ({spec_expr})).nodes",
        ],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def snapshot_from_manifest(manifest: dict[str, Any]) -> dict[str, str]:
    """The seed as etcd holds it, plus an instance of every app on every node hosting it."""
    snap = {k: canonical(v).decode() for k, v in manifest["etcdSeed"].items()}
    for app in manifest["apps"].values():
        for node in app["nodes"]:
            ip = manifest["nodes"][node]["privateIp"]
            snap[f"/cluster/{app['group']}/{app['name']}/instances/{node}"] = canonical(
                {"ipv4": ip, "node": node, "port": app["port"]}
            ).decode()
    return snap


def render(renderer: Path, template: str, snap: dict[str, str], tmp_path: Path) -> str:
    (tmp_path / "t.tmpl").write_text(template)
    (tmp_path / "snap.json").write_text(json.dumps(snap))
    proc = subprocess.run(
        [str(renderer), str(tmp_path / "t.tmpl"), str(tmp_path / "snap.json")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def haproxy_check(config: str, tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    proc = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr + config
    assert "Configuration file is valid" in proc.stdout


def frontends(config: str) -> dict[str, str]:
    """frontend name -> its bind address."""
    out, current = {}, None
    for line in config.splitlines():
        if line.startswith("frontend "):
            current = line.split()[1]
        elif current and line.strip().startswith("bind "):
            out[current] = line.split()[1]
    return out


def servers(config: str, backend: str) -> list[str]:
    block = config.split(f"backend {backend}\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[2] for line in block.splitlines() if line.strip().startswith("server ")]


def test_the_empty_config_is_valid(tmp_path: Path) -> None:
    header = node_configs("import ./lib/example.nix")["worker001"]["mesh"]["emptyConfig"]
    haproxy_check(header, tmp_path)


@pytest.mark.parametrize("spec_expr", ["import ./lib/example.nix", BIG_SPEC])
def test_every_node_config_renders_and_passes_haproxy_check(renderer: Path, tmp_path: Path, spec_expr: str) -> None:
    manifest = example_manifest_data(spec_expr)
    configs = node_configs(spec_expr)
    snap = snapshot_from_manifest(manifest)
    rendered = 0
    for name, cfg in configs.items():
        config = render(renderer, cfg["mesh"]["template"], snap, tmp_path)
        haproxy_check(config, tmp_path)
        # exactly one loopback frontend per app of each group the node consumes
        consumed = [a for a in manifest["apps"].values() if a["group"] in manifest["nodes"][name]["consumes"]]
        assert frontends(config) == {f"{a['group']}_{a['name']}": f"127.0.0.1:{a['publish']}" for a in consumed}
        for a in consumed:
            expected = sorted(f"{manifest['nodes'][n]['privateIp']}:{a['port']}" for n in a["nodes"])
            assert sorted(servers(config, f"{a['group']}_{a['name']}_instances")) == expected
        rendered += 1
    assert rendered == len(manifest["nodes"])


def test_an_app_without_instances_still_renders_a_valid_config(renderer: Path, tmp_path: Path) -> None:
    manifest = example_manifest_data()
    snap = {k: v for k, v in snapshot_from_manifest(manifest).items() if "/instances/" not in k}
    config = render(renderer, node_configs("import ./lib/example.nix")["worker001"]["mesh"]["template"], snap, tmp_path)
    haproxy_check(config, tmp_path)
    assert servers(config, "backends_api_instances") == []


@pytest.fixture
def live_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    cluster = make_cluster_pki(tmp_path / "repo", example_manifest_data())
    server = EtcdServer(tmp_path / "etcd", cluster, "ctrl001").start()
    yield server
    server.stop()


def test_render_from_a_live_etcd_after_seed_and_registration(
    renderer: Path, live_etcd: EtcdServer, tmp_path: Path
) -> None:
    """Seeded by the orchestrator (keys, users and roles, auth on), registered by the node's script with its
    lib-derived arguments, read with the node's certificate as its confd reads it."""
    manifest = example_manifest_data()
    cfg = node_configs("import ./lib/example.nix")["worker001"]
    with Etcd(live_etcd.url, live_etcd.cluster.tls("admin")) as etcd:
        seed_control_plane(etcd, parse_manifest(manifest))
        assert etcd.auth_enabled()
    reg = cfg["apps"]["api"]["registration"]
    argv = [
        str(REPO / "modules/scripts/register-instance.sh"),
        "--app", reg["app"], "--group", reg["group"], "--node", reg["node"], "--address", reg["address"],
        "--port", str(reg["port"]), "--ttl", "60", "--interval", "1", "--health-cmd", "true",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, env=live_etcd.etcdctl_env("nodes/worker001/client"), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60  # bounds a hang only
        key = "/cluster/backends/api/instances/worker001"
        while not live_etcd.etcdctl("get", key, "--print-value-only").strip():
            assert time.monotonic() < deadline, "the instance never registered"
            time.sleep(0.1)
        dump = json.loads(live_etcd.etcdctl("get", "--prefix", "/cluster", "-w", "json", name="nodes/worker001/client"))
    finally:
        proc.terminate()
        proc.wait(10)
    snap = {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode() for kv in dump["kvs"]}
    config = render(renderer, cfg["mesh"]["template"], snap, tmp_path)
    haproxy_check(config, tmp_path)
    assert frontends(config) == {"backends_api": "127.0.0.1:5001"}
    assert servers(config, "backends_api_instances") == ["10.10.64.1:8080"]


# ---- hostile records: skipped, and nothing else changes --------------------------------------------

# worker001 consumes services and backends: api (backends, on worker001 and worker002), cache (services)
MULTI_SPEC = (
    "let e = import ./lib/example.nix; in e // {"
    ' nodes = e.nodes // { worker002 = { type = "worker"; serverType = "cpx21"; }; };'
    ' apps = { api = e.apps.api // { nodes = [ "worker001" "worker002" ]; };'
    ' cache = { group = "services"; port = 6379; publish = 5003; nodes = [ "worker001" ]; envPrefix = "CACHE";'
    ' image = "ghcr.io/acme/cache:1"; }; }; }'
)
API = "/cluster/backends/api/instances/"
GOOD_META = canonical(
    {"env": {"HOST": "127.0.0.1", "PATH": "/", "PORT": "5009", "PROTOCOL": "http"}, "env_prefix": "EVIL",
     "port": 1, "publish": {"port": 5009}}
).decode()  # fmt: skip
W9_RECORD = {"/cluster/nodes/worker009": '{"ipv4":"10.10.64.9","name":"worker009","services":[]}'}

HOSTILE: dict[str, dict[str, str]] = {
    "instance not JSON": {API + "worker009": "not json at all"},
    "instance empty": {API + "worker009": ""},
    "instance missing port": {API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009"}'},
    "instance missing ipv4": {API + "worker009": '{"node":"worker009","port":8080}'},
    "instance extra field": {API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":8080,"x":1}'},
    "instance ipv4 three octets": {API + "worker009": '{"ipv4":"10.10.64","node":"worker009","port":8080}'},
    "instance ipv4 octet 256": {API + "worker009": '{"ipv4":"10.10.64.256","node":"worker009","port":8080}'},
    "instance ipv4 letters": {API + "worker009": '{"ipv4":"a.b.c.d","node":"worker009","port":8080}'},
    "instance ipv4 hostname": {API + "worker009": '{"ipv4":"evil.example","node":"worker009","port":8080}'},
    "instance port 0": {API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":0}'},
    "instance port 65536": {API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":65536}'},
    "instance port negative": {API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":-1}'},
    "instance port string": {API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":"8080"}'},
    "instance port text": {API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":8080 check}'},
    "instance node differs from key": {API + "worker009": '{"ipv4":"10.10.64.9","node":"worker001","port":8080}'},
    "instance smuggled server (escaped)": {
        API + "worker009": '{"ipv4":"10.10.64.2:8080 check\\n  server pwn 203.0.113.66","node":"worker009","port":8080}'
    },
    "instance smuggled server (raw newline)": {
        API + "worker009": '{"ipv4":"10.10.64.2:8080 check\n  server pwn 203.0.113.66","node":"worker009","port":8080}'
    },
    "instance smuggled in node": {
        API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009 10.10.64.9:1\\n  server pwn","port":8080}'
    },
    "instance key not a name": {API + "Pwn x": '{"ipv4":"10.10.64.9","node":"Pwn x","port":8080}'},
    "instance not canonical JSON": {API + "worker009": '{"node": "worker009", "ipv4": "10.10.64.9", "port": 8080}'},
    "instance of a node without a record": {API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":8080}'},
    "instance of a node whose record is not JSON": {
        API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":8080}',
        "/cluster/nodes/worker009": "{{ not json",
    },
    "instance not at its node's address": {
        **W9_RECORD,
        API + "worker009": '{"ipv4":"169.254.169.254","node":"worker009","port":8080}',
    },
    "instance at a prefix of its node's address": {
        "/cluster/nodes/worker009": '{"ipv4":"10.10.64.19","name":"worker009","services":[]}',
        API + "worker009": '{"ipv4":"10.10.64.1","node":"worker009","port":8080}',
    },
    "instance of a node whose record names another node": {
        "/cluster/nodes/worker009": '{"ipv4":"10.10.64.9","name":"worker001","services":[]}',
        API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":8080}',
    },
    "instance not on the app's port": {
        **W9_RECORD,
        API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":22}',
    },
    "instance of an app whose meta_data has no port": {
        **W9_RECORD,
        "/cluster/backends/evil/meta_data": GOOD_META.replace('"port":1,', ""),
        "/cluster/backends/evil/instances/worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":1}',
    },
    "meta not JSON": {"/cluster/backends/evil/meta_data": "{{ not json"},
    "meta publish port 0": {"/cluster/backends/evil/meta_data": GOOD_META.replace("5009}", "0}")},
    "meta publish port 70000": {"/cluster/backends/evil/meta_data": GOOD_META.replace("5009}", "70000}")},
    "meta publish port text": {"/cluster/backends/evil/meta_data": GOOD_META.replace("5009}", '"5009"}')},
    "meta publish port smuggled": {
        "/cluster/backends/evil/meta_data": GOOD_META.replace("5009}", "5009\\n  bind 0.0.0.0:5009}")
    },
    "meta publish reserved ssh": {"/cluster/backends/evil/meta_data": GOOD_META.replace("5009}", "22}")},
    "meta publish reserved etcd": {"/cluster/backends/evil/meta_data": GOOD_META.replace("5009}", "2379}")},
    "meta publish taken by another app": {"/cluster/backends/evil/meta_data": GOOD_META.replace("5009}", "5001}")},
    "meta missing": {"/cluster/backends/evil/instances/worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":1}'},
    "app name not a name": {"/cluster/backends/Evil App/meta_data": GOOD_META},
}


@pytest.fixture(scope="module")
def multi() -> tuple[dict[str, str], str]:
    """The seed and instances of MULTI_SPEC, and worker001's template."""
    return snapshot_from_manifest(example_manifest_data(MULTI_SPEC)), node_configs(MULTI_SPEC)["worker001"]["mesh"][
        "template"
    ]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_record_is_skipped_and_every_other_app_keeps_rendering(
    renderer: Path, tmp_path: Path, multi: tuple[dict[str, str], str], case: str
) -> None:
    snap, template = multi
    baseline = render(renderer, template, snap, tmp_path)
    assert frontends(baseline) == {"services_cache": "127.0.0.1:5003", "backends_api": "127.0.0.1:5001"}
    assert servers(baseline, "backends_api_instances") == ["10.10.64.1:8080", "10.10.64.2:8080"]
    config = render(renderer, template, {**snap, **HOSTILE[case]}, tmp_path)
    haproxy_check(config, tmp_path)
    assert config == baseline
    assert "pwn" not in config and "evil" not in config.lower()


def test_servers_are_named_after_the_key_and_a_good_extra_app_renders(
    renderer: Path, tmp_path: Path, multi: tuple[dict[str, str], str]
) -> None:
    """The control case of the hostile ones: the same records, well-formed, are rendered."""
    snap, template = multi
    extra = {
        **W9_RECORD,
        API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":8080}',
        "/cluster/backends/evil/meta_data": GOOD_META,
        "/cluster/backends/evil/instances/worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":1}',
    }
    config = render(renderer, template, {**snap, **extra}, tmp_path)
    haproxy_check(config, tmp_path)
    assert frontends(config)["backends_evil"] == "127.0.0.1:5009"
    assert servers(config, "backends_api_instances") == ["10.10.64.1:8080", "10.10.64.2:8080", "10.10.64.9:8080"]
    assert servers(config, "backends_evil_instances") == ["10.10.64.9:1"]
    assert "server worker009 10.10.64.9:8080 check" in config
    assert "mode http" in config.split("backend backends_evil_instances", 1)[1]


@pytest.mark.parametrize(
    "value",
    [
        '{"ipv4":"169.254.169.254","node":"worker001","port":80}',  # the metadata service
        '{"ipv4":"169.254.169.254","node":"worker001","port":8080}',
        '{"ipv4":"127.0.0.1","node":"worker001","port":8080}',  # the consumer's own loopback
        '{"ipv4":"10.10.64.2","node":"worker001","port":8080}',  # another node's address
        '{"ipv4":"10.10.64.1","node":"worker001","port":22}',  # its own address, another port
        '{"ipv4":"10.10.64.1","node":"worker001","port":2379}',
    ],
)
def test_a_node_cannot_reroute_consumers_with_its_own_instance_key(
    renderer: Path, tmp_path: Path, multi: tuple[dict[str, str], str], value: str
) -> None:
    """worker001's certificate may write its own instance key; a value pointing anywhere but its node's
    admin-written address and the app's port is skipped, and the other instance keeps serving."""
    snap, template = multi
    config = render(renderer, template, {**snap, API + "worker001": value}, tmp_path)
    haproxy_check(config, tmp_path)
    assert frontends(config) == {"services_cache": "127.0.0.1:5003", "backends_api": "127.0.0.1:5001"}
    assert servers(config, "backends_api_instances") == ["10.10.64.2:8080"]
    assert servers(config, "services_cache_instances") == ["10.10.64.1:6379"]


@pytest.mark.parametrize(
    "record",
    [
        "not json",
        '{"ipv4":"10.10.64.1","name":"worker001","services":"backends"}',
        '{"ipv4":"10.10.64.1","name":"worker001","services":["nodes"]}',
    ],
)
def test_a_broken_own_record_renders_the_empty_config(
    renderer: Path, tmp_path: Path, multi: tuple[dict[str, str], str], record: str
) -> None:
    snap, template = multi
    config = render(renderer, template, {**snap, "/cluster/nodes/worker001": record}, tmp_path)
    haproxy_check(config, tmp_path)
    assert frontends(config) == {}
