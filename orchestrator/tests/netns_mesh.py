"""The mesh on real daemons across network namespaces (needs root): harness of test_mesh_netns, bench/mesh-convergence.

Every node of MESH_SPEC is a network namespace `nxi-<node>` with one veth (`nxi<i>a`) on a bridge that lives in
its own namespace `nxi-br` (nothing is added to the host's namespace, no route leads outside), carrying the
manifest's private IP:
- ctrl001..003: a 3-member etcd cluster (client and peer TLS, client certificates required), seeded by the
  orchestrator's seed_control_plane (keys, users and roles, auth on);
- worker001, worker002 host `api`: a small HTTP server on <privateIp>:8080 answering its node's name, the real
  registration script (modules/scripts/register-instance.sh) with the node's certificate, health = a flag file
  plus an HTTP GET of the app;
- every worker runs the real confd (etcdv3 backend, -watch, the node's client certificate, lib's template and
  resource) and haproxy in master-worker mode, reloaded as modules/mesh.nix does (`haproxy -c`, then SIGUSR2 to the
  master); worker003 hosts nothing and is the consumer of 127.0.0.1:5001;
- flanneld (vxlan backend; this kernel has no WireGuard) on a worker with its certificate under RBAC.

The only deviations from a node: haproxy's stats socket path (the namespaces share /run) and the reload command
(no systemd: the same two steps, against the master's pid).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .conftest import REPO, example_manifest_data
from .etcd_server import ClusterPki, make_cluster_pki
from .tools import tool

PREFIX = "nxi"
BRIDGE_NS = f"{PREFIX}-br"
MESH_SPEC = (
    "let e = import ./lib/example.nix; in e // { nodes = e.nodes // {"
    ' ctrl002 = { type = "ctrl"; serverType = "cx22"; }; ctrl003 = { type = "ctrl"; serverType = "cx22"; };'
    ' worker002 = { type = "worker"; serverType = "cpx21"; }; worker003 = { type = "worker"; serverType = "cpx21"; };'
    ' }; apps.api = e.apps.api // { nodes = [ "worker001" "worker002" ]; }; }'
)
CTRLS = ("ctrl001", "ctrl002", "ctrl003")
HOSTS = ("worker001", "worker002")
CONSUMER = "worker003"
APP_PORT = 8080
PUBLISH = 5001
INSTANCES = "/cluster/backends/api/instances/"
TTL = 10  # registration lease: a SIGKILLed instance stays registered at most this long after its last renewal;
# long enough that a renewal seconds late on a loaded machine never lets a live instance's key expire
INTERVAL = 1

APP_PY = """
import http.server, socketserver, sys
node, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = node.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S((ip, port), H).serve_forever()
"""

# A load client in the consumer's namespace: one request at a time to 127.0.0.1:<port>, a JSON line per request
# {"t": start (epoch s), "end": end, "ok": bool, "node": answering node or null}, until stdin closes.
CLIENT_PY = """
import json, sys, threading, time, urllib.request
port = int(sys.argv[1]); stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
while not stop.is_set():
    t = time.time(); node = None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            node = r.read().decode() if r.status == 200 else None
    except Exception:
        pass
    print(json.dumps({"t": t, "end": time.time(), "ok": node is not None, "node": node}), flush=True)
    time.sleep(0.02)
"""


def run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{argv}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def cleanup_stale() -> None:
    """Remove namespaces and veths of this harness left by an earlier, killed run."""
    for line in run("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(f"{PREFIX}-"):
            run("ip", "netns", "pids", name, check=False)
            for pid in run("ip", "netns", "pids", name, check=False).stdout.split():
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            run("ip", "netns", "del", name, check=False)
    for line in run("ip", "-o", "link").stdout.splitlines():
        dev = line.split(":")[1].strip().split("@")[0]
        if dev.startswith(PREFIX) and dev[len(PREFIX) :][:1].isdigit():
            run("ip", "link", "del", dev, check=False)


def wait_until(what: str, pred: Callable[[], bool], deadline: float = 90, step: float = 0.2) -> float:
    """Seconds until pred() holds; AssertionError naming `what` after `deadline` (it only bounds a hang)."""
    start = time.monotonic()
    while True:
        try:
            if pred():
                return time.monotonic() - start
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        if time.monotonic() - start > deadline:
            raise AssertionError(f"timed out after {deadline}s waiting for: {what}")
        time.sleep(step)


@dataclass
class Node:
    name: str
    ns: str
    ip: str
    dev: str
    dir: Path


@dataclass
class Mesh:
    workdir: Path
    manifest: dict[str, Any]
    cluster: ClusterPki
    nodes: dict[str, Node] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    configs: dict[str, Any] = field(default_factory=dict)

    # ---- processes ---------------------------------------------------------------------------------

    def spawn(self, label: str, node: str, argv: list[str], env: dict[str, str] | None = None, **kw: Any) -> None:
        n = self.nodes[node]
        log = (n.dir / f"{label.split(':')[0]}.log").open("ab")
        self.procs[label] = subprocess.Popen(
            ["ip", "netns", "exec", n.ns, *argv],
            stdout=kw.pop("stdout", log),
            stderr=subprocess.STDOUT if kw.get("stderr") is None else kw.pop("stderr"),
            env={**os.environ, **(env or {})},
            start_new_session=True,
            **kw,
        )

    def kill(self, label: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(label, None)
        if proc is None or proc.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def exec(self, node: str, *argv: str, check: bool = True, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            ["ip", "netns", "exec", self.nodes[node].ns, *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **(env or {})},
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{node}: {argv}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout + (proc.stderr if not check else "")

    # ---- credentials -------------------------------------------------------------------------------

    def endpoints(self, only: tuple[str, ...] = CTRLS) -> str:
        return ",".join(f"https://{self.nodes[c].ip}:2379" for c in only)

    def creds(self, name: str) -> tuple[Path, Path, Path]:
        return self.cluster.write_files(name, self.workdir / "creds")

    def etcdctl_env(self, cert: str) -> dict[str, str]:
        ca, crt, key = self.creds(cert)
        return {
            "ETCDCTL_API": "3",
            "ETCDCTL_ENDPOINTS": self.endpoints(),
            "ETCDCTL_CACERT": str(ca),
            "ETCDCTL_CERT": str(crt),
            "ETCDCTL_KEY": str(key),
        }

    def etcdctl(self, node: str, cert: str, *args: str, check: bool = True) -> str:
        """etcdctl run in `node`'s namespace with the certificate `cert` ("admin", "nodes/worker001/client")."""
        return self.exec(node, "etcdctl", "--command-timeout=10s", *args, check=check, env=self.etcdctl_env(cert))

    def admin(self, *args: str) -> str:
        return self.etcdctl(CONSUMER, "admin", *args)

    # ---- daemons -----------------------------------------------------------------------------------

    def start_etcd(self, ctrl: str, state: str = "new") -> None:
        n = self.nodes[ctrl]
        ca, cert, key = self.creds(f"nodes/{ctrl}/server")
        _, pcert, pkey = self.creds(f"nodes/{ctrl}/peer")
        url, peer = f"https://{n.ip}:2379", f"https://{n.ip}:2380"
        initial = ",".join(f"{c}=https://{self.nodes[c].ip}:2380" for c in CTRLS)
        argv = [
            "etcd", "--name", ctrl, "--data-dir", str(n.dir / "etcd"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial, "--initial-cluster-state", state, "--initial-cluster-token", "nxi",
            "--client-cert-auth", "--trusted-ca-file", str(ca), "--cert-file", str(cert), "--key-file", str(key),
            "--peer-client-cert-auth", "--peer-trusted-ca-file", str(ca),
            "--peer-cert-file", str(pcert), "--peer-key-file", str(pkey), "--log-level", "warn",
        ]  # fmt: skip
        self.spawn(f"etcd:{ctrl}", ctrl, argv)

    def etcd_healthy(self, ctrl: str) -> bool:
        env = {**self.etcdctl_env("admin"), "ETCDCTL_ENDPOINTS": f"https://{self.nodes[ctrl].ip}:2379"}
        out = self.exec(ctrl, "etcdctl", "endpoint", "health", "--command-timeout=3s", check=False, env=env)
        return "is healthy" in out

    def start_app(self, node: str) -> None:
        n = self.nodes[node]
        self.spawn(f"app:{node}", node, ["python3", "-c", APP_PY, node, n.ip, str(APP_PORT)])

    def health_flag(self, node: str) -> Path:
        return self.nodes[node].dir / "healthy"

    def start_registration(self, node: str) -> None:
        """The node's registration script with its lib-derived arguments and its own certificate."""
        reg = self.configs[node]["apps"]["api"]["registration"]
        n = self.nodes[node]
        health = f"test -f {self.health_flag(node)} && curl -fsS --max-time 2 http://{n.ip}:{APP_PORT}/"
        argv = [
            str(REPO / "modules/scripts/register-instance.sh"),
            "--app", reg["app"], "--group", reg["group"], "--node", reg["node"], "--address", reg["address"],
            "--port", str(reg["port"]), "--ttl", str(TTL), "--interval", str(INTERVAL),
            "--health-timeout", "5", "--health-cmd", health,
        ]  # fmt: skip
        self.spawn(f"register:{node}", node, argv, env=self.etcdctl_env(f"nodes/{node}/client"))

    def haproxy_cfg(self, node: str) -> Path:
        return self.nodes[node].dir / "haproxy.cfg"

    def start_mesh_proxy(self, node: str) -> None:
        """haproxy (master-worker) on the empty config, then confd rendering into it, as modules/mesh.nix runs them."""
        n = self.nodes[node]
        mesh = self.configs[node]["mesh"]
        sock = str(n.dir / "haproxy.sock")
        cfg = self.haproxy_cfg(node)
        cfg.write_text(mesh["emptyConfig"].replace("/run/nix-infra-mesh/haproxy.sock", sock))
        run("haproxy", "-c", "-q", "-f", str(cfg))
        self.spawn(f"haproxy:{node}", node, ["haproxy", "-W", "-f", str(cfg)])
        master = self.procs[f"haproxy:{node}"].pid
        reload = n.dir / "reload"
        # modules/mesh.nix ExecReload: check, then SIGUSR2 to the master
        reload.write_text(f"#!/bin/sh\nset -e\nhaproxy -c -q -f {cfg}\nkill -USR2 {master}\n")
        reload.chmod(0o755)
        confdir = n.dir / "confd"
        (confdir / "templates").mkdir(parents=True, exist_ok=True)
        (confdir / "conf.d").mkdir(exist_ok=True)
        template = mesh["template"].replace("/run/nix-infra-mesh/haproxy.sock", sock)
        (confdir / "templates/mesh-haproxy.cfg.tmpl").write_text(template)
        (confdir / "conf.d/mesh-haproxy.toml").write_text(
            resource_toml(
                src="mesh-haproxy.cfg.tmpl", dest=str(cfg), check="haproxy -c -f {{.src}}", reload=str(reload)
            )
        )
        ca, cert, key = self.creds(f"nodes/{node}/client")
        argv = [
            str(tool("confd")), "-backend", "etcdv3", "-confdir", str(confdir), "-watch", "-log-level", "info",
            "-client-ca-keys", str(ca), "-client-cert", str(cert), "-client-key", str(key),
            *[a for c in CTRLS for a in ("-node", f"https://{self.nodes[c].ip}:2379")],
        ]  # fmt: skip
        # Restart=always, as the unit (RestartSec shortened): confd exits when etcd does not answer in time
        loop = 'while true; do "$@"; echo "confd exited $?; restarting" >&2; sleep 1; done'
        self.spawn(f"confd:{node}", node, ["bash", "-c", loop, "confd", *argv])

    def start_flannel(self, node: str) -> Path:
        """flanneld (vxlan) with the node's certificate, as modules/overlay.nix runs it; returns its subnet file."""
        n = self.nodes[node]
        ca, cert, key = self.creds(f"nodes/{node}/client")
        subnet = n.dir / "flannel-subnet.env"
        argv = [
            str(tool("flanneld")), f"-etcd-endpoints={self.endpoints()}", "-etcd-prefix=/coreos.com/network",
            f"-etcd-cafile={ca}", f"-etcd-certfile={cert}", f"-etcd-keyfile={key}", f"-iface={n.dev}",
            f"-subnet-file={subnet}", "-ip-masq=false", "-iptables-forward-rules=false",
        ]  # fmt: skip
        self.spawn(f"flannel:{node}", node, argv)
        return subnet

    def rendered_servers(self, node: str = CONSUMER) -> list[str]:
        """The `server` lines' names of api's backend in the node's live haproxy config."""
        text = self.haproxy_cfg(node).read_text()
        if "backend backends_api_instances\n" not in text:
            return []
        block = text.split("backend backends_api_instances\n", 1)[1].split("\n\n", 1)[0]
        return sorted(line.split()[1] for line in block.splitlines() if line.strip().startswith("server "))

    def live_servers(self, node: str = CONSUMER) -> list[str] | None:
        """The servers of api's backend in the haproxy process now serving (its stats socket, which the
        newest worker holds after a reload), or None while the socket does not answer."""
        import socket as _socket

        path = str(self.nodes[node].dir / "haproxy.sock")
        try:
            with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(path)
                s.sendall(b"show servers state backends_api_instances\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return None
        lines = [ln.split() for ln in data.decode(errors="replace").splitlines() if ln and not ln.startswith("#")]
        return sorted(f[3] for f in lines if len(f) > 3 and f[1] == "backends_api_instances")

    def get(self, node: str = CONSUMER) -> str | None:
        """One request from `node` to 127.0.0.1:<publish>; the answering node's name, or None on failure."""
        out = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.nodes[node].ns,
                "curl",
                "-fsS",
                "--max-time",
                "5",
                f"http://127.0.0.1:{PUBLISH}/",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout if out.returncode == 0 else None

    def registered(self) -> list[str]:
        out = self.admin("get", "--prefix", "--keys-only", INSTANCES)
        return sorted(k.rsplit("/", 1)[1] for k in out.split())

    @contextmanager
    def load(self, node: str = CONSUMER) -> Iterator[list[dict[str, Any]]]:
        """Requests from `node`, one after another, while the block runs; yields the list the records land in."""
        records: list[dict[str, Any]] = []
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.nodes[node].ns, "python3", "-c", CLIENT_PY, str(PUBLISH)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield records
        finally:
            out, _ = proc.communicate(b"", timeout=60)
            records.extend(json.loads(line) for line in out.decode().splitlines() if line.strip())


def resource_toml(*, src: str, dest: str, check: str, reload: str) -> str:
    """lib's confd.resourceToml, evaluated by the real lib."""
    expr = (
        "(import ./lib/confd.nix).resourceToml { "
        f"src = {json.dumps(src)}; dest = {json.dumps(dest)}; checkCmd = {json.dumps(check)}; "
        f"reloadCmd = {json.dumps(reload)}; }}"
    )
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    text: str = json.loads(out.stdout)
    return text


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


def setup_network(mesh: Mesh) -> None:
    run("ip", "netns", "add", BRIDGE_NS)
    run("ip", "-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
    run("ip", "-n", BRIDGE_NS, "link", "set", "br0", "up")
    for i, (name, node) in enumerate(sorted(mesh.manifest["nodes"].items())):
        ns, dev = f"{PREFIX}-{name}", f"{PREFIX}{i}a"
        d = mesh.workdir / name
        d.mkdir(parents=True)
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", f"{PREFIX}{i}b", "netns", BRIDGE_NS)
        run("ip", "-n", BRIDGE_NS, "link", "set", f"{PREFIX}{i}b", "master", "br0", "up")
        run("ip", "-n", ns, "addr", "add", f"{node['privateIp']}/16", "dev", dev)
        run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        mesh.nodes[name] = Node(name, ns, node["privateIp"], dev, d)


def teardown(mesh: Mesh | None) -> None:
    if mesh is not None:
        for label in list(mesh.procs):
            mesh.kill(label)
    cleanup_stale()


@contextmanager
def mesh_up(workdir: Path, *, flannel: bool = True) -> Iterator[Mesh]:
    """The whole mesh, torn down (processes, namespaces, veths) on the way out, whatever happened."""
    if os.geteuid() != 0:
        raise RuntimeError("the namespace mesh needs root (ip netns); CI runs as root")
    cleanup_stale()
    mesh: Mesh | None = None
    try:
        manifest = example_manifest_data(MESH_SPEC)
        mesh = Mesh(workdir, manifest, make_cluster_pki(workdir / "repo", manifest))
        mesh.configs = node_configs(MESH_SPEC)
        setup_network(mesh)
        for c in CTRLS:
            mesh.start_etcd(c)
        for c in CTRLS:
            wait_until(f"etcd on {c} healthy", lambda c=c: mesh.etcd_healthy(c))  # type: ignore[misc]
        # the orchestrator seeds from its machine; here from the consumer's namespace (a thread cannot enter one)
        seed = subprocess.run(
            ["ip", "netns", "exec", mesh.nodes[CONSUMER].ns, str(REPO / ".venv/bin/python"), "-c", SEED_PY],
            input=json.dumps({"url": f"https://{mesh.nodes['ctrl001'].ip}:2379", "repo": str(mesh.cluster.repo),
                              "manifest": manifest, "identity": identity_text(mesh.cluster)}),
            capture_output=True, text=True, timeout=120, cwd=REPO / "orchestrator",
        )  # fmt: skip
        if seed.returncode != 0:
            raise RuntimeError(f"seed_control_plane failed: {seed.stderr}")
        if flannel:
            config = json.loads(mesh.admin("get", "--print-value-only", "/coreos.com/network/config"))
            config["Backend"] = {"Type": "vxlan"}
            mesh.admin("put", "/coreos.com/network/config", json.dumps(config))
        for w in (*HOSTS, CONSUMER):
            mesh.start_mesh_proxy(w)
        for w in HOSTS:
            mesh.start_app(w)
            mesh.start_registration(w)
        yield mesh
    finally:
        teardown(mesh)


def identity_text(cluster: ClusterPki) -> str:
    return str(cluster.identity.keys[0])


SEED_PY = textwrap.dedent(
    """
    import json, sys
    from pyrage import x25519
    from nix_infra.agestore import Identity
    from nix_infra.controlplane import seed_control_plane
    from nix_infra.etcd import Etcd, TlsMaterial
    from nix_infra.manifest import parse_manifest
    from nix_infra.pki import Pki
    a = json.load(sys.stdin)
    secret = x25519.Identity.from_str(a["identity"])
    ident = Identity("test", (secret,), (str(secret.to_public()),))
    pki = Pki(__import__("pathlib").Path(a["repo"]))
    tls = TlsMaterial(ca=pki.ca_pem(), cert=pki.certificate_pem("admin"), key=pki.private_key_pem("admin", ident))
    with Etcd(a["url"], tls) as etcd:
        seed_control_plane(etcd, parse_manifest(a["manifest"]))
        assert etcd.auth_enabled()
    """
)
