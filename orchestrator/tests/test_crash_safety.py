"""Crash safety of activation, rollback and install on the local fleet (issue 13, cases 1-4, 9),
and the kill-point harness: deploy is killed (SIGKILL of its process group, which also cuts its
SSH connections, or SIGINT to the CLI alone) at each step boundary, re-run, and the state must be
intact (each node runs what the summary said, and keeps running it; the pinned host keys are the
ones served) and clean (no activation left pending, no private key left in /dev/shm, no temp
files in facts/).

`NIX_INFRA_KILL_SWEEP=1` runs every kill point with both signals (bench/kill-points); by default
./bin/test runs a subset that fits in about a minute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .test_deploy import Cluster, fleet_cluster

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/sshd").exists(), reason="needs openssh-server")

NODES = ("ctrl001", "svc001", "worker001", "worker002")


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    with fleet_cluster(tmp_path, monkeypatch) as c:
        yield c


# ---- helpers ---------------------------------------------------------------------------------


def cli_argv(cluster: Cluster, *args: str) -> list[str]:
    common = ["--flake", str(cluster.flake), "--ssh-key", str(cluster.key), "--ssh-port", "2222", "--yes"]
    if "deploy" in args:
        i = args.index("deploy") + 1
        args = (*args[:i], "--no-seed", *args[i:])
    return [sys.executable, "-m", "nix_infra", *common, *args]


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines() if self.out.exists() else []

    def events(self) -> list[dict[str, object]]:
        found = []
        for line in self.lines():
            if line.startswith('{"event"'):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""


def spawn(cluster: Cluster, *args: str, env: dict[str, str] | None = None) -> Running:
    n = len(list(cluster.root.glob("run-*.out")))
    out, err = cluster.root / f"run-{n}.out", cluster.root / f"run-{n}.err"
    proc = subprocess.Popen(
        cli_argv(cluster, "--json", *args),
        stdout=out.open("wb"),
        stderr=err.open("wb"),
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: SIGKILL of the group cuts its SSH connections too
        env={**os.environ, **(env or {})},
    )
    return Running(proc, out, err)


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 120.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def statuses(cluster: Cluster, node: str) -> list[str]:
    d = cluster.server(node).run_dir / "nix-infra"
    return [p.read_text().strip() for p in sorted(d.glob("*.status"))] if d.is_dir() else []


def profile_links(cluster: Cluster, node: str) -> dict[str, str]:
    d = cluster.server(node).root / "nix" / "var" / "nix" / "profiles"
    return {p.name: os.readlink(p) for p in sorted(d.iterdir()) if p.name.startswith("system")} if d.is_dir() else {}


def served_key(cluster: Cluster, node: str) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(cluster.server(node).root / "etc" / "host_key")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return " ".join(out.split()[:2])


def settled(cluster: Cluster, timeout: float = 90.0) -> None:
    """Wait until no activation on any node is still switching or waiting."""
    wait_for(
        "every activation to settle",
        lambda: all(s not in ("switching", "waiting") for n in NODES for s in statuses(cluster, n)),
        timeout,
        0.2,
    )


def assert_intact_and_clean(cluster: Cluster, summary: dict[str, object], desired: dict[str, str]) -> None:
    assert_intact(cluster, summary, desired)
    assert_clean(cluster)


def assert_intact(cluster: Cluster, summary: dict[str, object], desired: dict[str, str]) -> None:
    nodes = summary["nodes"]
    assert isinstance(nodes, list)
    said = {n["node"]: n["new_system"] for n in nodes}
    assert said == desired
    settled(cluster)
    # intact: each node runs what the summary said, and keeps it (nothing pending reverts it later)
    assert {n: cluster.server(n).current_system() for n in NODES} == desired
    facts = cluster.flake / "facts"
    known = (facts / "known_hosts").read_text().splitlines()
    for n in NODES:
        record = json.loads((facts / f"{n}.json").read_text())
        assert record["installed"] is True and "pendingHostKey" not in record, record
        assert [" ".join(line.split()[1:3]) for line in known if line.endswith(f"nix-infra:{n}")] == [
            served_key(cluster, n)
        ]


def assert_clean(cluster: Cluster) -> None:
    """No temp files in facts/, no private key of this fleet in /dev/shm."""
    facts = cluster.flake / "facts"
    assert sorted(p.name for p in facts.iterdir()) == sorted(
        [".nix-infra.lock", "known_hosts", *(f"{n}.json" for n in NODES)]
    )
    ours = {served_key(cluster, n) for n in NODES}
    for d in Path("/dev/shm").glob("nix-infra-*"):
        pub = d / "extra-files" / "etc" / "ssh" / "ssh_host_ed25519_key.pub"
        try:
            text = pub.read_text()
        except OSError:
            continue
        assert " ".join(text.split()[:2]) not in ours, f"a private host key of this fleet is left in {d}"


def summary_of(out: str) -> dict[str, object]:
    found = [json.loads(line) for line in out.splitlines() if line.startswith('{"event": "summary"')]
    assert found, out
    summary: dict[str, object] = found[-1]
    return summary


# ---- case 1: the revert target is what ran, and the profile is put back --------------------------


def test_a_failed_switch_reverts_to_the_running_system_not_the_profile(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    g1 = cluster.deployed(capsys, 1)
    g2 = cluster.deployed(capsys, 2)
    g3 = cluster.systems(3)
    # the profile was staged to g1 (as `nixos-rebuild boot` would) while worker001 runs g2
    profiles = cluster.server("worker001").root / "nix" / "var" / "nix" / "profiles"
    (profiles / "system-9-link").symlink_to(g1["worker001"])
    (profiles / "system").unlink()
    (profiles / "system").symlink_to("system-9-link")
    before = profile_links(cluster, "worker001")
    cluster.server("worker001").fake_file("fail").write_text(g3["worker001"] + "\n")
    code, out, _ = cluster.cli(capsys, "--json", "deploy", "--no-provision")
    assert code == 1
    row = next(n for n in summary_of(out)["nodes"] if n["node"] == "worker001")  # type: ignore[attr-defined]
    assert row["result"] == "failed" and row["old_system"] == g2["worker001"]
    assert cluster.server("worker001").current_system() == g2["worker001"]  # what ran, not the profile's g1
    assert profile_links(cluster, "worker001") == before  # the profile is as it was, g3's generation gone


# ---- case 2: rollback after an automatic revert ----------------------------------------------------


def test_rollback_after_an_automatic_revert_goes_to_the_generation_before(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    g1 = cluster.deployed(capsys, 1)
    g2 = cluster.deployed(capsys, 2)
    g3 = cluster.systems(3)
    cluster.server("worker001").fake_file("fail").write_text(g3["worker001"] + "\n")
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision", "--on", "worker001")
    assert code == 1, err
    assert cluster.server("worker001").current_system() == g2["worker001"]
    assert g3["worker001"] not in profile_links(cluster, "worker001").values()  # the rejected one is gone
    code, _, err = cluster.cli(capsys, "rollback", "--on", "worker001")
    assert code == 0, err
    assert cluster.server("worker001").current_system() == g1["worker001"]
    assert g3["worker001"] not in cluster.server("worker001").activations()[-1:]
    # and no further back than the first generation
    code, _, err = cluster.cli(capsys, "rollback", "--on", "worker001")
    assert code == 1 and "no previous generation" in err
    assert cluster.server("worker001").current_system() == g1["worker001"]


# ---- case 3: a re-run during the confirmation window --------------------------------------------


def test_a_rerun_confirms_an_activation_left_waiting(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.deployed(capsys, 1)
    g2 = cluster.systems(2)
    server = cluster.server("worker001")
    # g2 on worker001 stops its sshd: the confirmation cannot arrive while the first run waits
    server.fake_file("break-ssh").write_text(g2["worker001"] + "\n")
    run = spawn(cluster, "deploy", "--no-provision", "--on", "worker001", "--confirm-timeout", "15")
    wait_for("worker001 waiting for its confirmation", lambda: "waiting" in statuses(cluster, "worker001"))
    os.killpg(run.proc.pid, signal.SIGKILL)
    run.proc.wait()
    server.fake_file("break-ssh").unlink()
    os.kill(int((server.run_dir / "sshd.pid").read_text()), signal.SIGCONT)
    code, out, err = cluster.cli(capsys, "--json", "deploy", "--no-provision", "--on", "worker001")
    assert code == 0, err
    assert '"event": "pending"' in out
    settled(cluster)
    assert server.current_system() == g2["worker001"]  # still, after the confirmation window
    assert statuses(cluster, "worker001")[-1] == "confirmed"


# ---- case 9: Ctrl-C during activation ------------------------------------------------------------


def test_ctrl_c_during_activation_stops_at_once_and_says_what_the_node_will_do(cluster: Cluster) -> None:
    code = subprocess.run(cli_argv(cluster, "deploy"), capture_output=True, check=False).returncode
    assert code == 0
    g2 = cluster.systems(2)
    cluster.server("worker001").fake_file("hang").write_text(g2["worker001"] + "\n")
    run = spawn(cluster, "deploy", "--no-provision", "--on", "worker001", "--activation-timeout", "600")
    wait_for("worker001 switching", lambda: "switching" in statuses(cluster, "worker001"))
    time.sleep(0.5)  # the CLI is inside its watch over SSH
    os.kill(run.proc.pid, signal.SIGINT)  # the CLI alone: its ssh children do not see it
    # at once: 2 s on an idle machine; the bound only tells it from waiting out the 600 s activation
    assert run.proc.wait(timeout=300) == 130
    err = run.stderr()
    assert "interrupted" in err and "worker001: activation" in err and "by itself" in err, err
    assert "Traceback" not in err


def test_ctrl_c_during_cmd_ends_the_remote_commands_at_once(cluster: Cluster) -> None:
    # commands run in threads over in-process SSH sessions: Ctrl-C must not wait for them
    assert subprocess.run(cli_argv(cluster, "deploy"), capture_output=True, check=False).returncode == 0
    run = spawn(cluster, "cmd", "-t", "worker001,worker002", "--", "touch /run/fake/cmd-started; sleep 600")
    for node in ("worker001", "worker002"):
        wait_for(f"the command on {node}", lambda n=node: cluster.server(n).fake_file("cmd-started").exists())
    os.kill(run.proc.pid, signal.SIGINT)  # the CLI alone
    assert run.proc.wait(timeout=120) == 130  # generous: only bounds the 600 s of the commands
    assert "Traceback" not in run.stderr()


def switched_key(cluster: Cluster) -> bool:
    """Whether a node serves its final host key (nixos-anywhere got that far)."""
    return any(
        (s.root / "etc" / "host_key.pub").read_text() != (s.root / "etc" / "bootstrap_key.pub").read_text()
        for s in list(cluster.fleet.servers.values())
        if (s.root / "etc" / "bootstrap_key.pub").exists()
    )


# ---- case 4: a kill during install ----------------------------------------------------------------


def test_kill_during_install_leaves_the_node_reachable_and_no_key_behind(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    run = spawn(cluster, "deploy", env={"FAKE_INSTALL_PAUSE": "30"})
    wait_for("a node serving its final host key", lambda: switched_key(cluster), timeout=180)
    os.killpg(run.proc.pid, signal.SIGKILL)
    run.proc.wait()
    code, out, err = cluster.cli(capsys, "--json", "deploy")
    assert code == 0, err
    assert_intact_and_clean(cluster, summary_of(out), cluster.systems(1))


# ---- the kill-point harness ---------------------------------------------------------------------


def _event(kind: str, **match: str) -> Callable[[Cluster, Running], bool]:
    def cond(cluster: Cluster, run: Running) -> bool:
        return any(e.get("event") == kind and all(e.get(k) == v for k, v in match.items()) for e in run.events())

    return cond


def _node_status(node: str, status: str) -> Callable[[Cluster, Running], bool]:
    return lambda cluster, run: status in statuses(cluster, node)


KILL_POINTS: dict[str, Callable[[Cluster, Running], bool]] = {
    "install": lambda cluster, run: switched_key(cluster),  # nixos-anywhere is running (paused)
    "build": _event("phase", phase="build"),
    "copy": _event("phase", phase="copy"),
    "copied": _event("copied"),
    "activate": _event("phase", phase="activate"),
    "switching": _node_status("ctrl001", "switching"),
    "waiting": _node_status("ctrl001", "waiting"),
    "confirm": _event("phase", phase="confirm"),
    "switched": _event("switched"),
    "health": _event("healthy"),
}
QUICK = [("switching", "SIGKILL"), ("waiting", "SIGKILL"), ("copy", "SIGINT"), ("switched", "SIGINT")]
SWEEP = [(p, s) for p in KILL_POINTS for s in ("SIGKILL", "SIGINT")]


def kill(run: Running, how: str) -> None:
    if how == "SIGKILL":
        os.killpg(run.proc.pid, signal.SIGKILL)  # the CLI and its ssh connections
        run.proc.wait()
    else:
        os.kill(run.proc.pid, signal.SIGINT)
        code = run.proc.wait(timeout=60)
        assert code in (0, 1, 130), (code, run.stderr())
        assert "Traceback" not in run.stderr()


@pytest.mark.parametrize(
    ("point", "how"), SWEEP if os.environ.get("NIX_INFRA_KILL_SWEEP") else QUICK, ids=lambda v: str(v)
)
def test_deploy_killed_at_a_step_boundary_converges_on_rerun(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], point: str, how: str
) -> None:
    if point == "install":  # a new cluster: provision, then install (paused after the key switch)
        g2 = cluster.systems(1)
        run = spawn(cluster, "deploy", "--confirm-timeout", "10", env={"FAKE_INSTALL_PAUSE": "10"})
    else:
        cluster.deployed(capsys, 1)
        g2 = cluster.systems(2)
        run = spawn(cluster, "deploy", "--no-provision", "--confirm-timeout", "10")
    cond = KILL_POINTS[point]
    wait_for(f"kill point {point}", lambda: cond(cluster, run) or run.proc.poll() is not None, interval=0.01)
    tried = run.proc.poll() is None
    intact = clean = False
    try:
        if tried:
            kill(run, how)
        code, out, err = cluster.cli(capsys, "--json", "deploy", *([] if point == "install" else ["--no-provision"]))
        assert code == 0, err
        assert_intact(cluster, summary_of(out), g2)
        intact = True
        assert_clean(cluster)
        clean = True
    finally:
        record = os.environ.get("NIX_INFRA_KILL_RECORD")
        if record:
            with open(record, "a") as f:
                row = {"point": point, "signal": how, "killed": tried, "intact": intact, "clean": clean}
                f.write(json.dumps(row) + "\n")


# ---- case 1, second half: an abandoned activation ---------------------------------------------------


def test_an_abandoned_activation_is_stopped_and_puts_the_profile_back(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    g1 = cluster.deployed(capsys, 1)
    g2 = cluster.systems(2)
    before = profile_links(cluster, "worker001")
    cluster.server("worker001").fake_file("hang").write_text(g2["worker001"] + "\n")
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision", "--on", "worker001", "--activation-timeout", "5")
    assert code == 1 and "worker001" in err
    settled(cluster)
    assert cluster.server("worker001").current_system() == g1["worker001"]
    assert profile_links(cluster, "worker001") == before  # not left on the abandoned system
    assert statuses(cluster, "worker001")[-1] == "rolled-back"
