"""Issue 13, cases 8, 10, 11: the repo's run lock, crash litter, and destroy forgetting a node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyrage import x25519

from nix_infra.agestore import load_identity
from nix_infra.facts import FactsStore
from nix_infra.fake_hcloud import FakeHcloud
from nix_infra.files import stale_temp_files, write_atomically
from nix_infra.lock import current_holder, lock_path, repo_lock
from nix_infra.secrets import SecretStore, recipient_count

from .conftest import run_cli as cli
from .test_provision import servers_by_node

DEADLINE = 60.0  # generous: the machine is shared


def wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """Another process holding the run lock of the repo tmp_path/repo (as `nix-infra provision`)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from nix_infra.lock import repo_lock\n"
        "with repo_lock(Path(sys.argv[1]), 'nix-infra provision'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(repo)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
    yield repo, proc
    proc.kill()
    proc.wait()


# -- case 8: the run lock ---------------------------------------------------------------------------


def test_a_second_state_changing_command_is_refused_naming_the_holder(
    holder: tuple[Path, subprocess.Popen[bytes]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, proc = holder
    monkeypatch.chdir(repo)
    monkeypatch.setenv("HCLOUD_TOKEN", "unused")
    for args in (
        ["--manifest", "m.json", "--yes", "provision"],
        ["secret", "rekey"],
        ["--manifest", "m.json", "init", "."],
    ):
        code, _, err = cli(capsys, *args)
        assert code == 1, args
        assert f"pid {proc.pid}" in err and "`nix-infra provision`" in err and "since 20" in err, err
        assert "busy" in err and "run lock" in err
    # reading commands are not locked out
    code, _, err = cli(capsys, "secret", "list")
    assert "busy" not in err


def test_the_lock_goes_with_its_holder_even_on_sigkill(holder: tuple[Path, subprocess.Popen[bytes]]) -> None:
    repo, proc = holder
    found = current_holder(repo)
    assert found is not None and found.pid == proc.pid and found.command == "nix-infra provision"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert current_holder(repo) is None
    with repo_lock(repo, "nix-infra test"):
        now = current_holder(repo)
        assert now is not None and now.pid == os.getpid() and now.command == "nix-infra test"
    assert (repo / ".nix-infra" / ".gitignore").read_text() == "*\n"


def test_the_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    with repo_lock(tmp_path, "outer"), repo_lock(tmp_path, "inner"):
        assert json.loads(lock_path(tmp_path).read_text())["command"] == "outer"
    assert lock_path(tmp_path).read_text() == ""


class KeyRecorder:
    """Fake server hooks that keep the user data (the cloud-init host key) each server booted with."""

    def __init__(self) -> None:
        self.user_data: dict[str, str] = {}

    def allocate_ipv4(self, server_id: int) -> str:
        return f"198.51.100.{server_id}"

    def boot(self, server: dict[str, object], authorized_keys: list[str], user_data: str | None) -> None:
        self.user_data[str(server["name"])] = user_data or ""

    def delete(self, server: dict[str, object]) -> None:
        pass


@pytest.fixture
def recorded() -> Iterator[tuple[FakeHcloud, KeyRecorder]]:
    hooks = KeyRecorder()
    server = FakeHcloud(token="test-token", hooks=hooks).start()
    yield server, hooks
    server.stop()


def test_two_provisions_at_once_leave_one_server_per_node_and_matching_pins(
    tmp_path: Path, recorded: tuple[FakeHcloud, KeyRecorder], manifest_file: Path
) -> None:
    """The reproduction of case 8: two runs in one repo; the second used to overwrite the
    first's pinned host keys and adopt its servers.

    The second starts once the first holds the repo's lock, and the first is stopped (SIGSTOP)
    until the second is done: on a loaded machine, two runs merely started together may not
    overlap at all (the first done before the second starts), and then both rightly succeed."""
    fake, hooks = recorded
    fake.set_faults(latency_seconds=0.2)
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {
        **os.environ,
        "HCLOUD_TOKEN": "test-token",
        "HCLOUD_ENDPOINT": fake.endpoint,
        "NIX_INFRA_HCLOUD_POLL_INTERVAL": "0.01",
        "NIX_INFRA_HCLOUD_BACKOFF": "0.01",
    }
    argv = [sys.executable, "-m", "nix_infra", "--manifest", str(manifest_file), "--yes", "provision"]
    first = subprocess.Popen(argv, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:

        def first_holds_the_lock() -> bool:
            holder = current_holder(repo)
            return holder is not None and holder.pid == first.pid

        wait_for(first_holds_the_lock, "the first run to hold the repo's lock")
        first.send_signal(signal.SIGSTOP)  # mid-run, lock held: the second runs while the first cannot move
        second = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)
        first.send_signal(signal.SIGCONT)
        _, first_err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:  # a failure above: leave no run behind
            first.kill()
            first.communicate()
    results = [(first.returncode, first_err.decode()), (second.returncode, second.stderr)]
    assert sorted(code for code, _ in results) == [0, 1], results
    assert any("busy" in err and "`nix-infra provision`" in err for _, err in results), results
    by_node = servers_by_node(fake)
    assert by_node == {"ctrl001": ["demo-ctrl001"], "worker001": ["demo-worker001"]}
    facts = FactsStore(repo / "facts")
    for node in by_node:
        known = facts.read(node)
        assert known is not None and facts.is_pinned(known)
        # the key the server was created with (cloud-init user data) is the pinned one
        assert known.host_key.split()[1] in hooks.user_data[by_node[node][0]]


# -- case 10: crash litter --------------------------------------------------------------------------


def test_temp_files_are_named_recognisably_and_gone_after_a_write(tmp_path: Path) -> None:
    write_atomically(tmp_path / "a.age", b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["a.age"]
    assert stale_temp_files([tmp_path]) == []


def test_rekey_removes_old_ciphertext_a_killed_run_left(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kill litter encrypted to a recipient `rekey` then drops must not stay in the repo."""
    keep, drop = x25519.Identity.generate(), x25519.Identity.generate()
    (tmp_path / "keep.txt").write_text(f"{keep}\n")
    repo = tmp_path / "repo"
    (repo / "secrets").mkdir(parents=True)
    recipients = repo / "secrets" / "recipients.txt"
    recipients.write_text(f"{keep.to_public()}\n{drop.to_public()}\n")
    store = SecretStore(repo)
    store.set("s1", b"old value")
    old = (repo / "secrets" / "s1.age").read_bytes()
    # what kills left: an older nix-infra's mkstemp name, this one's, and one under pki/
    litter = [
        repo / "secrets" / ".s1.age.a6dw1u31",
        repo / "secrets" / ".s1.age.nix-infra-tmp.k2j4h5g6",
        repo / "pki" / "nodes" / "w1" / ".client.key.age.nix-infra-tmp.zz",
        repo / "facts" / ".known_hosts.nix-infra-tmp.q",
    ]
    for path in litter:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(old)
    unrelated = repo / "secrets" / ".notes"  # not ours: left alone
    unrelated.write_text("mine")
    recipients.write_text(f"{keep.to_public()}\n")
    monkeypatch.chdir(repo)
    code, _, err = cli(capsys, "--identity", str(tmp_path / "keep.txt"), "secret", "rekey")
    assert code == 0, err
    assert [p for p in litter if p.exists()] == []
    assert unrelated.read_text() == "mine"
    assert "removed 4 temp file(s) left by an interrupted run" in caplog.text
    data = (repo / "secrets" / "s1.age").read_bytes()
    assert recipient_count(data) == 1
    assert store.get("s1", load_identity(tmp_path / "keep.txt")) == b"old value"


# -- case 11: destroy forgets the node ----------------------------------------------------------------


def test_destroy_forgets_the_nodes_facts_and_pin_and_a_rerun_converges(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud
) -> None:
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 0, err
    facts = FactsStore(Path("facts"))
    assert facts.read("worker001") is not None
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "destroy", "worker001")
    assert code == 0, err
    assert facts.read("worker001") is None
    assert "worker001" not in (Path("facts") / "known_hosts").read_text()
    assert facts.nodes() == ["ctrl001"]
    assert "- facts and pinned host key of worker001" in err
    # a destroy killed after the server went, before the facts: the re-run finishes the job
    ctrl = facts.read("ctrl001")
    assert ctrl is not None
    with fake.lock:
        sid = next(s["id"] for s in fake.state.servers.values() if s["labels"]["nix-infra/node"] == "ctrl001")
        del fake.state.servers[sid]
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "destroy", "ctrl001")
    assert code == 0, err
    assert facts.nodes() == []
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "destroy", "ctrl001")
    assert code == 1 and "no server of cluster demo carries node ctrl001" in err


def test_destroy_all_forgets_every_node(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path
) -> None:
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 0, err
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "destroy", "--all", "--confirm", "demo")
    assert code == 0, err
    assert [p.name for p in Path("facts").iterdir() if p.suffix == ".json"] == []
    assert FactsStore(Path("facts")).nodes() == []
