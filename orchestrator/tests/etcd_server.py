"""A real etcd (Debian's etcd-server) on loopback with TLS and client-certificate auth.

Its certificates come from nix_infra.pki, issued for a one-ctrl manifest, so the
tests exercise the PKI the way a cluster uses it. The server's own key and the
client keys the tests hand to etcdctl are written to the test's temporary
directory: that is the test harness standing in for a node's credentials.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrage import x25519

from nix_infra.agestore import Identity, parse_recipient
from nix_infra.etcd import TlsMaterial
from nix_infra.manifest import Manifest, parse_manifest
from nix_infra.pki import Pki, wanted_certificates
from nix_infra.sandbox.daemon import etcd_argv


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
        self.client_port = client_port or free_port()
        self.peer_port = free_port()
        self.url = f"https://127.0.0.1:{self.client_port}"
        creds = workdir / "creds"
        self.ca, self.server_cert, self.server_key = cluster.write_files(f"nodes/{ctrl}/server", creds)
        _, self.peer_cert, self.peer_key = cluster.write_files(f"nodes/{ctrl}/peer", creds)
        tls = {
            "ca": self.ca,
            "cert": self.server_cert,
            "key": self.server_key,
            "peer_cert": self.peer_cert,
            "peer_key": self.peer_key,
        }
        # the sandbox's etcd command line: one implementation
        self.argv = etcd_argv(ctrl, workdir / "data", self.client_port, self.peer_port, tls)
        self.log = workdir / "etcd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EtcdServer:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.log.read_text()[-2000:]}")
            if self.healthy():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not become healthy: {self.log.read_text()[-2000:]}")

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
