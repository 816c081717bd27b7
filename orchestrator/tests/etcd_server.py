"""A real etcd (Debian's etcd-server) on loopback with TLS and client-certificate auth.

Its certificates come from nix_infra.pki, issued for a one-ctrl manifest, so the
tests exercise the PKI the way a cluster uses it. The server's own key and the
client keys the tests hand to etcdctl are written to the test's temporary
directory: that is the test harness standing in for a node's credentials.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrage import x25519

from nix_infra.agestore import Identity, parse_recipient
from nix_infra.etcd import TlsMaterial
from nix_infra.manifest import Manifest, parse_manifest
from nix_infra.pki import Pki, wanted_certificates
from nix_infra.sandbox.daemon import etcd_argv

STARTUP = 60.0  # seconds etcd may take to answer its first health check (a bound on a hang)
PORT_ATTEMPTS = 5  # etcd starts on fresh ports when another process took one first


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ClusterPki:
    """A cluster repo's PKI plus the identity that decrypts it."""

    repo: Path
    identity: Identity
    manifest: Manifest

    @property
    def pki(self) -> Pki:
        return Pki(self.repo)

    def tls(self, name: str) -> TlsMaterial:
        return TlsMaterial(
            ca=self.pki.ca_pem(),
            cert=self.pki.certificate_pem(name),
            key=self.pki.private_key_pem(name, self.identity),
        )

    def write_files(self, name: str, directory: Path) -> tuple[Path, Path, Path]:
        """(ca, cert, key) files for tools that read paths (etcd, etcdctl); the key is 0600."""
        directory.mkdir(parents=True, exist_ok=True)
        tls = self.tls(name)
        stem = name.replace("/", "-")
        ca, cert, key = directory / "ca.crt", directory / f"{stem}.crt", directory / f"{stem}.key"
        ca.write_bytes(tls.ca)
        cert.write_bytes(tls.cert)
        key.touch(mode=0o600)
        key.write_bytes(tls.key)
        return ca, cert, key


def make_cluster_pki(repo: Path, manifest_data: dict[str, Any]) -> ClusterPki:
    secret = x25519.Identity.generate()
    identity = Identity("test-identity", (secret,), (str(secret.to_public()),))
    recipients = [parse_recipient(str(secret.to_public()), "test")]
    manifest = parse_manifest(manifest_data)
    pki = Pki(repo)
    pki.create_ca(manifest.cluster, recipients)
    pki.issue(wanted_certificates(manifest), identity, recipients)
    return ClusterPki(repo, identity, manifest)


class EtcdServer:
    """One etcd member on 127.0.0.1, client and peer TLS, client certificates required."""

    def __init__(self, workdir: Path, cluster: ClusterPki, ctrl: str, client_port: int | None = None) -> None:
        if shutil.which("etcd") is None:
            raise RuntimeError("etcd is not installed (bin/setup installs Debian's etcd-server)")
        self.workdir = workdir
        self.cluster = cluster
        self.ctrl = ctrl
        self.fixed_client_port = client_port is not None
        self.client_port = client_port or free_port()
        self.peer_port = free_port()
        creds = workdir / "creds"
        self.ca, self.server_cert, self.server_key = cluster.write_files(f"nodes/{ctrl}/server", creds)
        _, self.peer_cert, self.peer_key = cluster.write_files(f"nodes/{ctrl}/peer", creds)
        self.log = workdir / "etcd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def argv(self) -> list[str]:
        tls = {
            "ca": self.ca,
            "cert": self.server_cert,
            "key": self.server_key,
            "peer_cert": self.peer_cert,
            "peer_key": self.peer_key,
        }
        # the sandbox's etcd command line: one implementation
        return etcd_argv(self.ctrl, self.workdir / "data", self.client_port, self.peer_port, tls)

    def start(self) -> EtcdServer:
        """Start etcd and wait (up to STARTUP s, a bound on a hang) until it answers a health check.

        free_port() only names a port that was free a moment ago: another process may bind it before
        etcd does. On a first start (no data directory yet), etcd failing with "address already in
        use" is retried on fresh ports (the client port only if this class chose it).
        """
        first_start = not (self.workdir / "data").exists()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            offset = self.log.stat().st_size if self.log.exists() else 0
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + STARTUP
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    out = self.log.read_bytes()[offset:].decode(errors="replace")
                    if first_start and "address already in use" in out and attempt < PORT_ATTEMPTS:
                        shutil.rmtree(self.workdir / "data", ignore_errors=True)
                        self.peer_port = free_port()
                        if not self.fixed_client_port:
                            self.client_port = free_port()
                        break
                    raise RuntimeError(f"etcd exited: {out[-2000:]}")
                if self.healthy():
                    return self
                time.sleep(0.1)
            else:
                self.stop()
                raise RuntimeError(f"etcd did not become healthy: {self.log.read_text()[-2000:]}")
        raise AssertionError("unreachable: the last attempt returns or raises")

    def watchers(self) -> int:
        """How many watches etcd serves right now (its etcd_debugging_mvcc_watcher_total gauge).

        Lets a test wait until a client's watch is registered before it writes what the watch must see.
        """
        ca, cert, key = self.cluster.write_files("admin", self.workdir / "creds")
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
        with urllib.request.urlopen(f"{self.url}/metrics", context=context, timeout=10) as response:
            text = response.read().decode()
        found = re.search(r"^etcd_debugging_mvcc_watcher_total (\S+)$", text, re.M)
        if found is None:
            raise RuntimeError("etcd's /metrics has no etcd_debugging_mvcc_watcher_total")
        return int(float(found.group(1)))

    def wait_for_watchers(self, count: int, timeout: float = 60.0) -> bool:
        """Whether etcd serves at least `count` watches within `timeout` s (a bound on a hang only)."""
        deadline = time.monotonic() + timeout
        while self.watchers() < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def etcdctl_env(self, name: str = "admin") -> dict[str, str]:
        ca, cert, key = self.cluster.write_files(name, self.workdir / "creds")
        return {
            **os.environ,
            "ETCDCTL_API": "3",
            "ETCDCTL_ENDPOINTS": self.url,
            "ETCDCTL_CACERT": str(ca),
            "ETCDCTL_CERT": str(cert),
            "ETCDCTL_KEY": str(key),
        }

    def healthy(self) -> bool:
        proc = subprocess.run(
            ["etcdctl", "endpoint", "health", "--command-timeout=2s"],
            env=self.etcdctl_env(),
            capture_output=True,
        )
        return proc.returncode == 0

    def etcdctl(self, *args: str, name: str = "admin") -> str:
        proc = subprocess.run(["etcdctl", *args], env=self.etcdctl_env(name), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"etcdctl {args}: {proc.stderr}")
        return proc.stdout

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
