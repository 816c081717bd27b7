"""The lib-generated confd template, rendered by the real confd from a real TLS etcd, passes `haproxy -c`.

confd is the one bin/setup builds into .tools/bin (tools.tool("confd"); v0.16.0,
the newest the Go module proxy serves, see docs/dependencies.md). Every render
runs it as a node does: the etcdv3 backend over TLS with a client certificate
(`-node https://... -client-cert -client-key -client-ca-keys`), and a confdir
laid out as modules/mesh.nix lays out /etc/nix-infra/confd: the template at
templates/mesh-haproxy.cfg.tmpl and the resource TOML from lib's
confd.resourceToml with the module's check command (`haproxy -c -f
{{.src}}`) and a reload command that appends to a log instead of
`systemctl reload`. Renders use `-onetime`; one test runs `-watch` and sees
a registration picked up, checked and reloaded.

Snapshots (key -> value) come from lib's etcd seed plus instances, and are
written into etcd before confd runs; once the data is a real seed plus a
registration by the node's registration script, read with the node's own
certificate under etcd's RBAC.
"""

from __future__ import annotations

import itertools
import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nix_infra.controlplane import seed_control_plane
from nix_infra.etcd import Etcd, canonical
from nix_infra.manifest import parse_manifest

from .conftest import REPO, example_manifest_data
from .etcd_server import EtcdServer, make_cluster_pki
from .netns_mesh import node_configs
from .tools import tool

BIG_SPEC = "import ./bench/cluster.nix { size = 40; }"
# generous: only bounds a hang of confd on a loaded machine
CONFD_TIMEOUT = 120


def nix_string(s: str) -> str:
    """A JSON string is a valid Nix string literal once '$' cannot start an interpolation."""
    return json.dumps(s).replace("${", "\\${")


def haproxy_exe() -> str:
    exe = shutil.which("haproxy")
    if exe is None:
        raise RuntimeError("haproxy is not installed (bin/setup installs Debian's haproxy)")
    return exe


def resource_tomls(dests: list[Path], reload_log: Path) -> list[str]:
    """lib's confd.resourceToml for each dest, with the arguments modules/mesh.nix passes it
    (src, dest, `<haproxy> -c -f {{.src}}`), except that the reload command appends a line to
    reload_log instead of reloading the mesh haproxy unit."""
    reload_cmd = f"echo reloaded >> {shlex.quote(str(reload_log))}"
    args = [
        f"{{ src = {nix_string(f'{dest.stem}.tmpl')}; dest = {nix_string(str(dest))};"
        f" checkCmd = {nix_string(f'{haproxy_exe()} -c -f {{{{.src}}}}')}; reloadCmd = {nix_string(reload_cmd)}; }}"
        for dest in dests
    ]
    proc = subprocess.run(
        [
            "nix-instantiate", "--eval", "--strict", "--json", "--expr",
            f"map (import ./lib/confd.nix).resourceToml [ {' '.join(args)} ]",
        ],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    tomls: list[str] = json.loads(proc.stdout)
    return tomls


def write_confdir(confdir: Path, templates: Mapping[str, str], out: Path, reload_log: Path) -> dict[str, Path]:
    """confdir/templates/<name>.tmpl and confdir/conf.d/<name>.toml for each template; returns name -> dest."""
    (confdir / "templates").mkdir(parents=True)
    (confdir / "conf.d").mkdir()
    dests = {name: out / f"{name}.cfg" for name in templates}
    for (name, template), toml in zip(templates.items(), resource_tomls(list(dests.values()), reload_log), strict=True):
        (confdir / "templates" / f"{name}.tmpl").write_text(template)
        (confdir / "conf.d" / f"{name}.toml").write_text(toml)
    return dests


@dataclass(frozen=True)
class ConfdNode:
    """A real etcd and the client credentials (files) confd reads it with."""

    server: EtcdServer
    ca: Path
    cert: Path
    key: Path

    def argv(self, confdir: Path, *mode: str) -> list[str]:
        return [
            str(tool("confd")),
            "-backend", "etcdv3",
            "-node", self.server.url,
            "-client-ca-keys", str(self.ca),
            "-client-cert", str(self.cert),
            "-client-key", str(self.key),
            "-confdir", str(confdir),
            *mode,
        ]  # fmt: skip

    def load(self, snap: Mapping[str, str]) -> None:
        """etcd holds exactly snap (admin credentials)."""
        with Etcd(self.server.url, self.server.cluster.tls("admin")) as etcd:
            etcd.delete("/", prefix=True)
            for key, value in snap.items():
                etcd.put(key, value.encode())


_renders = itertools.count()


def render_all(
    node: ConfdNode, templates: Mapping[str, str], snap: Mapping[str, str] | None, tmp_path: Path
) -> dict[str, str]:
    """Load snap into etcd (unless None: etcd as it is), run `confd -onetime` over a confdir of
    templates (name -> template text); returns name -> the config confd wrote."""
    if snap is not None:
        node.load(snap)
    work = tmp_path / f"render{next(_renders)}"
    out = work / "out"
    out.mkdir(parents=True)
    dests = write_confdir(work / "confdir", templates, out, work / "reload.log")
    proc = subprocess.run(
        node.argv(work / "confdir", "-onetime", "-log-level", "info"),
        capture_output=True, text=True, timeout=CONFD_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    missing = [name for name, dest in dests.items() if not dest.is_file()]
    assert not missing, f"confd wrote no config for {missing}: {proc.stderr}"
    return {name: dest.read_text() for name, dest in dests.items()}


def render(node: ConfdNode, template: str, snap: Mapping[str, str] | None, tmp_path: Path) -> str:
    return render_all(node, {"mesh-haproxy": template}, snap, tmp_path)["mesh-haproxy"]


@pytest.fixture(scope="module")
def confd_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfdNode]:
    """A TLS etcd without auth (the render tests load arbitrary snapshots into it), read by confd with
    worker001's client certificate."""
    tool("confd")
    tmp = tmp_path_factory.mktemp("confd-etcd")
    cluster = make_cluster_pki(tmp / "repo", example_manifest_data(MULTI_SPEC))
    server = EtcdServer(tmp / "etcd", cluster, "ctrl001").start()
    ca, cert, key = cluster.write_files("nodes/worker001/client", tmp / "confd-creds")
    try:
        yield ConfdNode(server, ca, cert, key)
    finally:
        server.stop()


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
def test_every_node_config_renders_and_passes_haproxy_check(
    confd_node: ConfdNode, tmp_path: Path, spec_expr: str
) -> None:
    """One confd run over a confdir with every node's template resource (as if all nodes shared a host)."""
    manifest = example_manifest_data(spec_expr)
    configs = node_configs(spec_expr)
    snap = snapshot_from_manifest(manifest)
    rendered = render_all(confd_node, {name: cfg["mesh"]["template"] for name, cfg in configs.items()}, snap, tmp_path)
    assert sorted(rendered) == sorted(manifest["nodes"])
    for name, config in rendered.items():
        haproxy_check(config, tmp_path)
        # exactly one loopback frontend per app of each group the node consumes
        consumed = [a for a in manifest["apps"].values() if a["group"] in manifest["nodes"][name]["consumes"]]
        assert frontends(config) == {f"{a['group']}_{a['name']}": f"127.0.0.1:{a['publish']}" for a in consumed}
        for a in consumed:
            expected = sorted(f"{manifest['nodes'][n]['privateIp']}:{a['port']}" for n in a["nodes"])
            assert sorted(servers(config, f"{a['group']}_{a['name']}_instances")) == expected


def test_an_app_without_instances_still_renders_a_valid_config(confd_node: ConfdNode, tmp_path: Path) -> None:
    manifest = example_manifest_data()
    snap = {k: v for k, v in snapshot_from_manifest(manifest).items() if "/instances/" not in k}
    config = render(
        confd_node, node_configs("import ./lib/example.nix")["worker001"]["mesh"]["template"], snap, tmp_path
    )
    haproxy_check(config, tmp_path)
    assert servers(config, "backends_api_instances") == []


@pytest.fixture
def live_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    tool("confd")
    cluster = make_cluster_pki(tmp_path / "repo", example_manifest_data())
    server = EtcdServer(tmp_path / "etcd", cluster, "ctrl001").start()
    yield server
    server.stop()


def seeded_worker001(server: EtcdServer, tmp_path: Path) -> tuple[ConfdNode, dict[str, Any]]:
    """Seed the control plane (keys, users and roles, auth on); returns confd reading it with worker001's
    certificate, and worker001's lib config."""
    with Etcd(server.url, server.cluster.tls("admin")) as etcd:
        seed_control_plane(etcd, parse_manifest(example_manifest_data()))
        assert etcd.auth_enabled()
    ca, cert, key = server.cluster.write_files("nodes/worker001/client", tmp_path / "confd-creds")
    return ConfdNode(server, ca, cert, key), node_configs("import ./lib/example.nix")["worker001"]


def start_registration(server: EtcdServer, cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
    """The node's registration script with its lib-derived arguments and the node's certificate."""
    reg = cfg["apps"]["api"]["registration"]
    argv = [
        str(REPO / "modules/scripts/register-instance.sh"),
        "--app", reg["app"], "--group", reg["group"], "--node", reg["node"], "--address", reg["address"],
        "--port", str(reg["port"]), "--ttl", "60", "--interval", "1", "--health-cmd", "true",
    ]  # fmt: skip
    return subprocess.Popen(argv, env=server.etcdctl_env("nodes/worker001/client"), stderr=subprocess.DEVNULL)


def wait_for(what: str, condition: Any, deadline_s: float = 60) -> None:
    """Poll condition() until true; the deadline only bounds a hang."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_render_from_a_live_etcd_after_seed_and_registration(live_etcd: EtcdServer, tmp_path: Path) -> None:
    """Seeded by the orchestrator, registered by the node's script, rendered by confd with the node's
    certificate under etcd's RBAC."""
    node, cfg = seeded_worker001(live_etcd, tmp_path)
    proc = start_registration(live_etcd, cfg)
    try:
        key = "/cluster/backends/api/instances/worker001"
        wait_for("the instance never registered", lambda: live_etcd.etcdctl("get", key, "--print-value-only").strip())
        config = render(node, cfg["mesh"]["template"], None, tmp_path)
    finally:
        proc.terminate()
        proc.wait(60)
    haproxy_check(config, tmp_path)
    assert frontends(config) == {"backends_api": "127.0.0.1:5001"}
    assert servers(config, "backends_api_instances") == ["10.10.64.1:8080"]


def test_confd_watch_picks_up_a_registration_checks_and_reloads(live_etcd: EtcdServer, tmp_path: Path) -> None:
    """`confd -watch`, as the node's unit runs it: the first render has no instance; a registration
    afterwards is rendered, passes the check command and runs the reload command again."""
    node, cfg = seeded_worker001(live_etcd, tmp_path)
    reload_log = tmp_path / "reload.log"
    out = tmp_path / "out"
    out.mkdir()
    dest = write_confdir(tmp_path / "confdir", {"mesh-haproxy": cfg["mesh"]["template"]}, out, reload_log)[
        "mesh-haproxy"
    ]
    confd_log = tmp_path / "confd.log"

    def reloads() -> int:
        return len(reload_log.read_text().splitlines()) if reload_log.exists() else 0

    with confd_log.open("wb") as log:
        confd = subprocess.Popen(node.argv(tmp_path / "confdir", "-watch"), stdout=log, stderr=subprocess.STDOUT)
    registration = None
    try:
        wait_for("confd never rendered the first config", lambda: reloads() >= 1)
        first = dest.read_text()
        haproxy_check(first, tmp_path)
        assert frontends(first) == {"backends_api": "127.0.0.1:5001"}
        assert servers(first, "backends_api_instances") == []
        registration = start_registration(live_etcd, cfg)
        wait_for(
            "confd never rendered the registered instance",
            lambda: servers(dest.read_text(), "backends_api_instances") == ["10.10.64.1:8080"],
        )
        wait_for("confd never ran the reload command after the update", lambda: reloads() >= 2)
        haproxy_check(dest.read_text(), tmp_path)
        assert confd.poll() is None, confd_log.read_text()
    finally:
        if registration is not None:
            registration.terminate()
            registration.wait(10)
        confd.terminate()
        confd.wait(10)


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
    "instance ipv4 octet 256": {  # its node record says the same: only the octet rule can skip it
        "/cluster/nodes/worker009": '{"ipv4":"10.10.64.256","name":"worker009","services":[]}',
        API + "worker009": '{"ipv4":"10.10.64.256","node":"worker009","port":8080}',
    },
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
# Every instance case has worker009's node record unless the case is about that record: else the
# "no node record" rule would skip each of them, and the rule a case is named after would go untested.
for _case, _records in HOSTILE.items():
    if _case.startswith("instance") and "/cluster/nodes/worker009" not in _records and "without a record" not in _case:
        HOSTILE[_case] = {**W9_RECORD, **_records}


@pytest.fixture(scope="module")
def multi() -> tuple[dict[str, str], str]:
    """The seed and instances of MULTI_SPEC, and worker001's template."""
    return snapshot_from_manifest(example_manifest_data(MULTI_SPEC)), node_configs(MULTI_SPEC)["worker001"]["mesh"][
        "template"
    ]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_record_is_skipped_and_every_other_app_keeps_rendering(
    confd_node: ConfdNode, tmp_path: Path, multi: tuple[dict[str, str], str], case: str
) -> None:
    snap, template = multi
    baseline = render(confd_node, template, snap, tmp_path)
    assert frontends(baseline) == {"services_cache": "127.0.0.1:5003", "backends_api": "127.0.0.1:5001"}
    assert servers(baseline, "backends_api_instances") == ["10.10.64.1:8080", "10.10.64.2:8080"]
    config = render(confd_node, template, {**snap, **HOSTILE[case]}, tmp_path)
    haproxy_check(config, tmp_path)
    assert config == baseline
    assert "pwn" not in config and "evil" not in config.lower()


def test_servers_are_named_after_the_key_and_a_good_extra_app_renders(
    confd_node: ConfdNode, tmp_path: Path, multi: tuple[dict[str, str], str]
) -> None:
    """The control case of the hostile ones: the same records, well-formed, are rendered."""
    snap, template = multi
    extra = {
        **W9_RECORD,
        API + "worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":8080}',
        "/cluster/backends/evil/meta_data": GOOD_META,
        "/cluster/backends/evil/instances/worker009": '{"ipv4":"10.10.64.9","node":"worker009","port":1}',
    }
    config = render(confd_node, template, {**snap, **extra}, tmp_path)
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
    confd_node: ConfdNode, tmp_path: Path, multi: tuple[dict[str, str], str], value: str
) -> None:
    """worker001's certificate may write its own instance key; a value pointing anywhere but its node's
    admin-written address and the app's port is skipped, and the other instance keeps serving."""
    snap, template = multi
    config = render(confd_node, template, {**snap, API + "worker001": value}, tmp_path)
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
    confd_node: ConfdNode, tmp_path: Path, multi: tuple[dict[str, str], str], record: str
) -> None:
    snap, template = multi
    config = render(confd_node, template, {**snap, "/cluster/nodes/worker001": record}, tmp_path)
    haproxy_check(config, tmp_path)
    assert frontends(config) == {}
