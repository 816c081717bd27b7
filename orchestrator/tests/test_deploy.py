"""deploy end to end on the local fleet: fake API -> sshd servers with their own
stores -> nix build -> nix copy -> activation with magic rollback -> health."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nix_infra.agestore import load_identity
from nix_infra.fake_hcloud import FakeHcloud
from nix_infra.manifest import parse_manifest

from .conftest import REPO, run_cli
from .etcd_server import ClusterPki, EtcdServer, free_port
from .fleet import FakeFleet, FakeServer, install_stand_ins, set_generation, write_cluster_flake

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
    def __init__(self, root: Path, fleet: FakeFleet, fake: FakeHcloud, spec: str = SPEC) -> None:
        self.root = root
        self.fleet = fleet
        self.fake = fake
        self.key = root / "operator"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        public = (root / "operator.pub").read_text().strip()
        self.flake = write_cluster_flake(root / "repo", REPO, spec % {"key": public})
        self.etcd: EtcdServer | None = None

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        common = ["--flake", str(self.flake), "--ssh-key", str(self.key), "--ssh-port", "2222", "--yes"]
        if self.etcd is None and "deploy" in args:  # no control plane in this test: nothing to seed
            i = args.index("deploy") + 1
            args = (*args[:i], "--no-seed", *args[i:])
        return run_cli(capsys, *common, *args)

    def with_control_plane(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> EtcdServer:
        """`nix-infra init` with the operator's SSH key as identity, and a real TLS etcd for ctrl001.

        The nodes' sshd share this machine's network, so etcd on 127.0.0.1:<port> is what an
        SSH tunnel through ctrl001 reaches; the manifest is pointed at that port.
        """
        monkeypatch.setenv("NIX_INFRA_IDENTITY", str(self.key))
        port = free_port()
        (self.flake / "manifest-override.nix").write_text(
            f"m: m // {{ etcd = m.etcd // {{ clientPort = {port}; }}; }}\n"
        )
        code, _, err = self.cli(capsys, "init", str(self.flake))
        assert code == 0, err
        code, _, err = self.cli(capsys, "pki", "issue")
        assert code == 0, err
        data = json.loads(self.cli(capsys, "--json", "manifest")[1])
        cluster = ClusterPki(self.flake, load_identity(self.key), parse_manifest(data))
        self.etcd = EtcdServer(self.root / "etcd", cluster, "ctrl001", client_port=port).start()
        return self.etcd

    def server(self, node: str) -> FakeServer:
        return self.fleet.servers[f"e2e-{node}"]

    def systems(self, generation: int) -> dict[str, str]:
        """The store path of every node's system in `generation` (evaluated, not built)."""
        set_generation(self.flake, generation)
        nodes = ["ctrl001", "svc001", "worker001", "worker002"]
        return {n: self.eval_system(n) for n in nodes}

    def eval_system(self, node: str) -> str:
        out = subprocess.run(
            [
                "nix",
                "--extra-experimental-features",
                "nix-command flakes",
                "eval",
                "--raw",
                f"{self.flake}#nixosConfigurations.{node}.config.system.build.toplevel.outPath",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    def deployed(self, capsys: pytest.CaptureFixture[str], generation: int = 1) -> dict[str, str]:
        systems = self.systems(generation)
        code, _, err = self.cli(capsys, "deploy")
        assert code == 0, err
        assert {n: self.server(n).current_system() for n in systems} == systems
        return systems


@contextmanager
def fleet_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str = SPEC) -> Iterator[Cluster]:
    """A cluster flake, the fake API and the fleet behind it, the environment pointed at them."""
    fleet = FakeFleet(tmp_path / "fleet")
    fake = FakeHcloud(token="t", hooks=fleet).start()
    for k, v in {
        "HCLOUD_TOKEN": "t",
        "HCLOUD_ENDPOINT": fake.endpoint,
        "NIX_INFRA_HCLOUD_POLL_INTERVAL": "0.01",
        "NIX_INFRA_POLL_INTERVAL": "0.1",
        "NIX_INFRA_SSH_CONNECT_TIMEOUT": "3",
        "NIX_INFRA_REBOOT_TIMEOUT": "30",
        "NIX_CONFIG": "substituters =",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("FAKE_FLEET_ROOT", str(tmp_path / "fleet"))
    monkeypatch.setenv("PATH", f"{install_stand_ins(tmp_path / 'bin')}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    c = Cluster(tmp_path, fleet, fake, spec)
    try:
        yield c
    finally:
        if c.etcd is not None:
            c.etcd.stop()
        fleet.stop_all()
        fake.stop()


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    with fleet_cluster(tmp_path, monkeypatch) as c:
        yield c


def test_deploy_from_nothing(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    etcd = cluster.with_control_plane(capsys, monkeypatch)
    code, out, err = cluster.cli(capsys, "deploy")
    assert code == 0, err
    # etcd was seeded through the SSH tunnel to ctrl001, after ctrl001 and before the others
    seeded = etcd.etcdctl("get", "--prefix", "/cluster/nodes/", "--keys-only").split()
    assert seeded == [f"/cluster/nodes/{n}" for n in ("ctrl001", "svc001", "worker001", "worker002")]
    assert "etcd seeded: 5 added, 0 changed, 0 removed" in err
    assert err.index("etcd seeded") < err.index("batch: svc001")
    facts = cluster.flake / "facts"
    assert sorted(p.name for p in facts.iterdir() if not p.name.startswith(".")) == [
        "ctrl001.json",
        "known_hosts",
        "svc001.json",
        "worker001.json",
        "worker002.json",
    ]
    # NixOS was installed on each new server, with a final host key that replaced the bootstrap one
    installs = (cluster.root / "fleet" / "nixos-anywhere.log").read_text().splitlines()
    assert len(installs) == 4
    assert all("--ssh-option StrictHostKeyChecking=yes" in line and "--extra-files" in line for line in installs)
    for node in ("ctrl001", "worker001", "worker002", "svc001"):
        record = json.loads((facts / f"{node}.json").read_text())
        assert record["installed"] is True
        server = cluster.server(node)
        bootstrap_key = " ".join(server.root.joinpath("etc", "bootstrap_key.pub").read_text().split()[:2])
        serving_key = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(server.root / "etc" / "host_key")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert record["hostKey"] == serving_key != bootstrap_key  # the final key, pinned, is the one served
    known = (facts / "known_hosts").read_text()
    assert known.count("nix-infra:") == 4
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
    code, out, _ = cluster.cli(capsys, "--json", "status", "--drift")
    assert code == 0
    rows = json.loads(out)
    assert [r["node"] for r in rows] == ["ctrl001", "svc001", "worker001", "worker002"]
    assert all(r["ok"] and r["running"] == r["desired"] for r in rows)


def test_noop_redeploy_copies_and_activates_nothing(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.deployed(capsys)
    code, out, err = cluster.cli(capsys, "--json", "deploy", "--no-provision")
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert {n["result"] for n in summary["nodes"]} == {"unchanged"}
    assert sum(n["paths_copied"] for n in summary["nodes"]) == 0
    assert all(len(cluster.server(n).activations()) == 1 for n in ("ctrl001", "worker001"))


def test_ssh_dropped_mid_copy_is_retried(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.deployed(capsys)
    new = cluster.systems(2)
    cluster.server("worker001").fake_file("drop-copies").write_text("2")
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision")
    assert code == 0, err
    assert "retrying copy" in err
    assert cluster.server("worker001").fake_file("drop-copies").read_text().strip() == "0"
    assert cluster.server("worker001").current_system() == new["worker001"]


def test_failing_activation_reverts_and_stops_the_rollout(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    old = cluster.deployed(capsys)
    new = cluster.systems(2)
    cluster.server("svc001").fake_file("fail").write_text(new["svc001"] + "\n")
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision", "--batch-size", "1")
    assert code == 1
    assert "deploy failed on svc001" in err and "not started" in err
    assert "switch failed" in err  # the node's log tail is shown
    assert cluster.server("ctrl001").current_system() == new["ctrl001"]  # its wave came first
    assert cluster.server("svc001").current_system() == old["svc001"]  # reverted at once
    assert cluster.server("worker001").current_system() == old["worker001"]  # not started
    assert cluster.server("worker002").current_system() == old["worker002"]
    # once fixed, a re-run converges
    cluster.server("svc001").fake_file("fail").unlink()
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision")
    assert code == 0, err
    assert {n: cluster.server(n).current_system() for n in new} == new


def test_confirmation_never_arriving_makes_the_node_revert(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    old = cluster.deployed(capsys)
    new = cluster.systems(2)
    # the new system of worker002 breaks SSH: the confirmation cannot reach it
    cluster.server("worker002").fake_file("break-ssh").write_text(new["worker002"] + "\n")
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision", "--confirm-timeout", "5")
    assert code == 1
    assert "rolled-back" in err and "no confirmation within 5s" in err
    assert cluster.server("worker002").current_system() == old["worker002"]  # it reverted by itself
    assert cluster.server("worker002").activations() == [old["worker002"], new["worker002"], old["worker002"]]
    cluster.server("worker002").fake_file("break-ssh").unlink()
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision")
    assert code == 0, err
    assert cluster.server("worker002").current_system() == new["worker002"]


def test_unreachable_node_stops_before_any_activation(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    old = cluster.deployed(capsys)
    new = cluster.systems(2)
    cluster.server("worker001").stop()
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision")
    assert code == 1
    assert "worker001: unreachable" in err and "nothing was copied or activated" in err
    assert cluster.server("ctrl001").current_system() == old["ctrl001"]
    cluster.server("worker001").start()
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision")
    assert code == 0, err
    assert {n: cluster.server(n).current_system() for n in new} == new


def test_unhealthy_node_stops_the_rollout(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.deployed(capsys)
    cluster.systems(2)
    cluster.server("ctrl001").fake_file("system-state").write_text("degraded\n")
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision")
    assert code == 1
    assert "ctrl001" in err and "system is degraded" in err
    assert "3 node(s) not started" in err


def test_cmd_checks_every_exit_code(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.deployed(capsys)
    code, out, err = cluster.cli(capsys, "cmd", "-t", "@worker", "--", "hostname", ">/dev/null;", "echo", "hi")
    assert code == 0, err
    assert "worker001 | hi" in out and "worker002 | hi" in out
    code, out, err = cluster.cli(
        capsys,
        "cmd",
        "-t",
        "ctrl001,worker001",
        "--",
        "test",
        "-e",
        "/run/fake/activations",
        "-a",
        "-e",
        "/run/fake/system-state",
    )
    assert code == 1
    assert "the command failed on 2 of 2 node(s)" in err
    assert "exit 1" in out


def test_rollback_goes_to_the_previous_generation(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    old = cluster.deployed(capsys, 1)
    new = cluster.deployed(capsys, 2)
    assert new != old
    code, _, err = cluster.cli(capsys, "rollback", "--on", "worker001")
    assert code == 0, err
    assert cluster.server("worker001").current_system() == old["worker001"]
    assert cluster.server("worker002").current_system() == new["worker002"]
    code, out, _ = cluster.cli(capsys, "--json", "status", "--drift")
    assert code == 1  # worker001 no longer runs its desired system
    assert [r["node"] for r in json.loads(out) if not r["ok"]] == ["worker001"]


def test_hanging_activation_fails_the_node_and_stops(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    old = cluster.deployed(capsys)
    new = cluster.systems(2)
    cluster.server("ctrl001").fake_file("hang").write_text(new["ctrl001"] + "\n")
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision", "--activation-timeout", "5")
    assert code == 1
    assert "deploy failed on ctrl001" in err and "3 node(s) not started" in err
    assert cluster.server("worker001").current_system() == old["worker001"]


def test_activation_survives_its_ssh_session_dropping(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.deployed(capsys)
    new = cluster.systems(2)
    # the new system of worker001 "restarts the network": every SSH session is cut mid-switch
    cluster.server("worker001").fake_file("drop-sessions").write_text(new["worker001"] + "\n")
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision")
    assert code == 0, err
    assert cluster.server("worker001").current_system() == new["worker001"]  # the detached unit finished


def test_json_events_and_summary(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cluster.cli(capsys, "--json", "deploy")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.startswith('{"event"')]
    kinds = {e["event"] for e in events}
    assert {"phase", "copied", "batch", "switched", "summary"} <= kinds
    summary = events[-1]
    assert summary["event"] == "summary"
    assert all(n["result"] == "switched" and n["paths_copied"] == 1 and n["bytes_copied"] > 0 for n in summary["nodes"])
    # ctrl001 switched in a wave of its own, before any other node started
    switched = [e["node"] for e in events if e["event"] == "switched"]
    assert switched[0] == "ctrl001"
    batches = [e["nodes"] for e in events if e["event"] == "batch"]
    assert batches[0] == ["ctrl001"] and sorted(batches[1]) == ["svc001", "worker001", "worker002"]


def test_ssh_runs_a_command_with_the_pinned_key(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    systems = cluster.deployed(capsys)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nix_infra",
            "--flake",
            str(cluster.flake),
            "--ssh-key",
            str(cluster.key),
            "--ssh-port",
            "2222",
            "ssh",
            "worker002",
            "--",
            "readlink",
            "/run/current-system",
        ],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == systems["worker002"]


def test_a_failed_seed_stops_the_rollout_after_the_ctrl_nodes(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    etcd = cluster.with_control_plane(capsys, monkeypatch)
    etcd.stop()
    code, out, err = cluster.cli(capsys, "--json", "deploy")
    assert code == 1
    summary = next(e for e in map(json.loads, out.splitlines()) if e["event"] == "summary")
    results = {n["node"]: n["result"] for n in summary["nodes"]}
    assert results == {"ctrl001": "switched", "svc001": "not-started", "worker001": "not-started",
                       "worker002": "not-started"}  # fmt: skip
    assert "etcd at https://127.0.0.1:" in err and f"SSH tunnel to ctrl001:127.0.0.1:{etcd.client_port}" in err
    etcd.start()
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision")
    assert code == 0, err
    assert "etcd seeded: 5 added" in err
