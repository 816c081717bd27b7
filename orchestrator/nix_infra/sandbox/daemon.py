"""`python -m nix_infra.sandbox.daemon REPO`: the sandbox's background process (started by `sandbox up`).

It serves the fake Hetzner API, boots a fleet server for each server created through it, and runs
etcd with the ctrl node's certificates; it records pids, ports and servers in
`.nix-infra/sandbox/daemon.json`. SIGTERM (`sandbox down`) stops everything it started.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nix_infra.fake_hcloud import FakeHcloud
from nix_infra.sandbox.fleet import FakeFleet
from nix_infra.sandbox.state import SandboxConfig, SandboxPaths, read_config, write_json


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"etcd exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"etcd did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def etcd_argv(name: str, data_dir: Path, client_port: int, peer_port: int, tls: dict[str, Path]) -> list[str]:
    """One etcd member on 127.0.0.1, client and peer TLS, client certificates required.

    `tls`: the files ca, cert, key (server) and peer_cert, peer_key. The tests' etcd uses this too.
    """
    url, peer = f"https://127.0.0.1:{client_port}", f"https://127.0.0.1:{peer_port}"
    ca = str(tls["ca"])
    return [
        "etcd",
        *("--name", name, "--data-dir", str(data_dir)),
        *("--listen-client-urls", url, "--advertise-client-urls", url),
        *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
        *("--initial-cluster", f"{name}={peer}", "--initial-cluster-state", "new"),
        *("--client-cert-auth", "--trusted-ca-file", ca),
        *("--cert-file", str(tls["cert"]), "--key-file", str(tls["key"])),
        *("--peer-client-cert-auth", "--peer-trusted-ca-file", ca),
        *("--peer-cert-file", str(tls["peer_cert"]), "--peer-key-file", str(tls["peer_key"])),
        *("--log-level", "warn"),
    ]


class Daemon:
    def __init__(self, paths: SandboxPaths, config: SandboxConfig) -> None:
        self.paths = paths
        self.config = config
        self.lock = threading.Lock()
        self.fleet = RecordingFleet(paths.fleet, self.record, operator_public_key(config.ssh_key))
        self.fake = FakeHcloud(token=config.token, port=0, hooks=self.fleet)
        self.etcd: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.stopping = threading.Event()

    def record(self) -> None:
        with self.lock:
            servers: dict[str, Any] = {
                name: {"ip": s.ip, "port": s.port, "pid": s.process.pid if s.process else None, "root": str(s.root)}
                for name, s in sorted(self.fleet.servers.items())
            }
            write_json(
                self.paths.daemon,
                {
                    "pid": _pid(),
                    "endpoint": self.fake.endpoint,
                    "api_port": self.fake.port,
                    "etcd_pid": self.etcd.pid if self.etcd else None,
                    "etcd_url": f"https://127.0.0.1:{self.config.etcd_port}" if self.etcd else None,
                    "ready": self.ready,
                    "servers": servers,
                    "error": None,
                },
            )

    def start(self) -> None:
        self.record()  # the pid first: `down` can stop a daemon that is still starting
        self.fake.start()
        if self.config.ctrl is not None:
            self.paths.etcd.mkdir(parents=True, exist_ok=True)
            log = self.paths.etcd / "etcd.log"
            creds = Path(self.config.secrets_dir)
            tls = {
                k: creds / f
                for k, f in (
                    ("ca", "ca.crt"),
                    ("cert", "server.crt"),
                    ("key", "server.key"),
                    ("peer_cert", "peer.crt"),
                    ("peer_key", "peer.key"),
                )
            }
            argv = etcd_argv(self.config.ctrl, self.paths.etcd / "data", self.config.etcd_port, free_port(), tls)
            with log.open("ab") as out:
                self.etcd = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            self.record()
            wait_listening(self.config.etcd_port, self.etcd, log)
        self.ready = True
        self.record()

    def stop(self) -> None:
        self.fleet.stop_all()
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(10)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait()
        self.fake.stop()


def _pid() -> int:
    import os

    return os.getpid()


def operator_public_key(ssh_key: str | None) -> str | None:
    """The public key of `up`'s --ssh-key (its .pub beside it, else derived with ssh-keygen -y), or None.

    The sandbox's servers let it log in besides cluster.nix's provider.sshKeys, which in a repo
    made from the template are a placeholder nobody holds the private key of."""
    if ssh_key is None:
        return None
    pub = Path(ssh_key + ".pub")
    try:
        if pub.is_file():
            return pub.read_text().strip().splitlines()[0]
        out = subprocess.run(["ssh-keygen", "-y", "-f", ssh_key], capture_output=True, text=True, check=False)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, IndexError):
        return None


class RecordingFleet(FakeFleet):
    """The fleet, recording each boot and deletion in daemon.json; `up`'s --ssh-key may log in."""

    def __init__(self, root: Path, on_change: Any, operator_key: str | None = None) -> None:
        super().__init__(root)
        self.on_change = on_change
        self.operator_key = operator_key

    def boot(self, server: dict[str, Any], authorized_keys: list[str], user_data: str | None) -> None:
        keys = [*authorized_keys, *([self.operator_key] if self.operator_key else [])]
        try:
            super().boot(server, keys, user_data)
        finally:
            self.on_change()

    def delete(self, server: dict[str, Any]) -> None:
        try:
            super().delete(server)
        finally:
            self.on_change()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m nix_infra.sandbox.daemon REPO (started by `nix-infra sandbox up`)", file=sys.stderr)
        return 2
    paths = SandboxPaths(Path(argv[0]).resolve())
    config = read_config(paths)
    if config is None:
        print(f"no sandbox config at {paths.config}", file=sys.stderr)
        return 2
    daemon = Daemon(paths, config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    try:
        daemon.start()
        print(f"sandbox ready: API {daemon.fake.endpoint}", file=sys.stderr, flush=True)
        stop.wait()
    except Exception as exc:  # reported to `up` through daemon.json and the log
        print(f"sandbox failed: {exc}", file=sys.stderr, flush=True)
        with daemon.lock:
            write_json(
                paths.daemon,
                {
                    "pid": _pid(),
                    "endpoint": "",
                    "api_port": 0,
                    "etcd_pid": None,
                    "etcd_url": None,
                    "ready": False,
                    "servers": {},
                    "error": str(exc),
                },
            )
        daemon.stop()
        return 1
    daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
