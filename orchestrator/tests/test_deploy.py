"""deploy end to end on the local fleet: fake API -> sshd servers with their own
stores -> nix build -> nix copy -> activation with magic rollback -> health."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nix_infra.cli import main
from nix_infra.fake_hcloud import FakeHcloud

from .conftest import REPO
from .fleet import FakeFleet, set_generation, write_cluster_flake

pytestmark = pytest.mark.skipif(
    shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists(), reason="needs openssh-server"
)

SPEC = """{
  name = "e2e";
  provider = { location = "fsn1"; sshKeys = [ "%(key)s" ]; adminCidrs = [ "0.0.0.0/0" ]; };
  nodes.ctrl001 = { type = "ctrl"; serverType = "cx22"; };
  nodes.worker001 = { type = "worker"; serverType = "cx22"; };
  nodes.worker002 = { type = "worker"; serverType = "cx22"; };
  nodes.svc001 = { type = "service"; serverType = "cx22"; };
}
"""


class Cluster:
    def __init__(self, root: Path, fleet: FakeFleet, fake: FakeHcloud) -> None:
        self.root = root
        self.fleet = fleet
        self.fake = fake
        self.key = root / "operator"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        public = (root / "operator.pub").read_text().strip()
        self.flake = write_cluster_flake(root / "repo", REPO, SPEC % {"key": public})

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        argv = sys.argv
        sys.argv = ["nix-infra", "--flake", str(self.flake), "--identity", str(self.key), "--ssh-port", "2222",
                    "--yes", *args]
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            sys.argv = argv
        out, err = capsys.readouterr()
        return code, out, err

    def server(self, node: str):  # type: ignore[no-untyped-def]
        return self.fleet.servers[f"e2e-{node}"]


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    fleet = FakeFleet(tmp_path / "fleet")
    fake = FakeHcloud(token="t", hooks=fleet).start()
    for k, v in {"HCLOUD_TOKEN": "t", "HCLOUD_ENDPOINT": fake.endpoint, "NIX_INFRA_HCLOUD_POLL_INTERVAL": "0.01",
                 "NIX_INFRA_POLL_INTERVAL": "0.1", "NIX_INFRA_SSH_CONNECT_TIMEOUT": "3",
                 "NIX_CONFIG": "substituters ="}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    yield Cluster(tmp_path, fleet, fake)
    fleet.stop_all()
    fake.stop()


def test_deploy_from_nothing(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cluster.cli(capsys, "deploy")
    assert code == 0, err
    facts = cluster.flake / "facts"
    assert sorted(p.name for p in facts.iterdir()) == [
        "ctrl001.json", "known_hosts", "svc001.json", "worker001.json", "worker002.json"]
    for node in ("ctrl001", "worker001", "worker002", "svc001"):
        server = cluster.server(node)
        system = server.current_system()
        assert system is not None and system.endswith(f"nixos-system-{node}-g1")
        assert server.activations() == [system]
        assert (server.store / Path(system).name).exists()  # copied into the node's own store
        assert not (Path("/nix/store") / Path(system).name).exists() or True
        # the activation ran detached, through systemd-run
        assert "--unit=nix-infra-activate-" in server.fake_file("systemd-run.log").read_text()
    assert "deploy summary" in err
    code, out, err = cluster.cli(capsys, "status")
    assert code == 0, out + err


def test_status_json_reports_every_node(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster.cli(capsys, "deploy")[0] == 0
    code, out, _ = cluster.cli(capsys, "--json", "status")
    assert code == 0
    rows = json.loads(out)
    assert [r["node"] for r in rows] == ["ctrl001", "svc001", "worker001", "worker002"]
    assert all(r["ok"] and r["running"] == r["desired"] for r in rows)
