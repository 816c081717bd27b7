"""Commands as the docs write them, and the behaviour a user relies on (issue 15, parts 2 and 3)."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from nix_infra.deploy import NodeOutcome
from nix_infra.fake_hcloud import FakeHcloud
from nix_infra.placeholders import EXAMPLE_SSH_KEY, placeholder_problems

from .conftest import REPO, run_cli
from .etcd_server import ClusterPki, EtcdServer, make_cluster_pki


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, *args)


@pytest.fixture
def cluster_repo(tmp_path: Path, example_manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cluster repo (a flake.nix at its root), the example manifest, an age identity as recipient."""
    identity = x25519.Identity.generate()
    key = tmp_path / "age.txt"
    key.write_text(f"{identity}\n")
    repo = tmp_path / "repo"
    (repo / "secrets").mkdir(parents=True)
    (repo / "app_modules").mkdir()
    (repo / "flake.nix").write_text("{ outputs = { self }: { }; }\n")
    (repo / "secrets/recipients.txt").write_text(f"{identity.to_public()}\n")
    (repo / "m.json").write_text(json.dumps(example_manifest))
    monkeypatch.setenv("NIX_INFRA_IDENTITY", str(key))
    return repo


# ---- global options before or after the command ---------------------------------------------------


def test_global_options_after_the_command(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, fake: FakeHcloud
) -> None:
    code, out, _ = cli(capsys, "plan", "--manifest", str(manifest_file), "--json")
    assert code == 2  # everything would be created
    assert json.loads(out)["summary"]["create"] > 0
    code, out, err = cli(capsys, "provision", "--yes", "--manifest", str(manifest_file))
    assert code == 0, err
    assert out.strip().endswith("done")
    code, out, _ = cli(capsys, "plan", "--json", "--manifest", str(manifest_file))
    assert code == 0 and not json.loads(out)["changes"]


def test_top_level_help_shows_options_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "nix-infra provision --yes" in out and "before or after the command" in out


def test_remote_command_words_are_not_taken_for_global_options(
    capsys: pytest.CaptureFixture[str], manifest_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr("nix_infra.cli.ssh_target", lambda *a: object())
    monkeypatch.setattr("nix_infra.cli.ssh_argv", lambda target, command, tty=False: ["ssh", *command])
    monkeypatch.setattr("os.execvp", lambda prog, argv: ran.append(argv))
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "ssh", "worker001", "--", "ls", "--json", "-v")
    assert code == 0, err
    assert ran == [["ssh", "/bin/sh", "-c", "ls --json -v"]]
    # as OpenSSH: the words are joined and the node's shell runs them (review finding)
    ran.clear()
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "ssh", "worker001", "--", "echo hi; exit 3")
    assert code == 0, err
    assert ran == [["ssh", "/bin/sh", "-c", "echo hi; exit 3"]]


# ---- the default command: deploy, after showing the plan and asking --------------------------------


def test_no_command_is_deploy_that_shows_the_plan_and_asks(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    cluster_repo: Path,
    fake: FakeHcloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(cluster_repo)
    value = cluster_repo / "v"
    value.write_text("tok")
    assert cli(capsys, "--manifest", "m.json", "secret", "set", "api-token", "--from-file", str(value))[0] == 0
    code, _, err = cli(capsys, "--manifest", "m.json")  # no terminal, no --yes
    assert code == 1
    assert "Plan: 7 to create" in err and "deploy to 2 node(s) of cluster demo" in err
    assert "pass --yes" in err and "Usage" not in err
    assert fake.snapshot()["servers"] == []  # asked first: nothing created


def test_declining_a_prompt_prints_aborted(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    manifest_file: Path,
    fake: FakeHcloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "provision")
    assert code == 1
    assert err.rstrip().endswith("aborted") and "error:" not in err
    assert fake.snapshot()["servers"] == []


def test_ctrl_c_exits_130(
    capsys: pytest.CaptureFixture[str], hcloud_env: dict[str, str], manifest_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("nix_infra.cli.current_plan", interrupted)
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "plan")
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    code, out, _ = cli(capsys, "--manifest", str(manifest_file), "plan", "--json")
    assert code == 130 and json.loads(out) == {"error": {"message": "interrupted", "exit_code": 130}}


# ---- --json: one document, errors included ----------------------------------------------------------


def test_json_errors_are_one_json_document(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"version": 9}))
    code, out, err = cli(capsys, "manifest", "--manifest", str(bad), "--json")
    assert code == 1 and err.startswith("error: manifest: version 9")
    error = json.loads(out)["error"]
    assert error["exit_code"] == 1 and error["message"].startswith("manifest: version 9 is not supported")
    code, out, _ = cli(capsys, "--json", "status", "--no-such-option")
    assert code == 2 and "--no-such-option" in json.loads(out)["error"]["message"]


def test_cmd_json(capsys: pytest.CaptureFixture[str], manifest_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nix_infra.process import Result

    def everywhere(nodes: Any, *_: Any) -> list[tuple[str, Result]]:
        return [(n.name, Result(("x",), 0 if n.name == "ctrl001" else 3, "up\n", "")) for n in nodes]

    monkeypatch.setattr("nix_infra.cli.run_everywhere", everywhere)
    code, out, err = cli(capsys, "--manifest", str(manifest_file), "--json", "cmd", "-t", "@ctrl,@worker", "--", "up")
    assert code == 1
    doc = json.loads(out)  # one document, the error in it
    assert doc["error"] == {"message": "the command failed on 1 of 2 node(s): worker001", "exit_code": 1}
    assert [(r["node"], r["exit_code"], r["state"]) for r in doc["results"]] == [
        ("ctrl001", 0, "ok"),
        ("worker001", 3, "exit 3"),
    ]
    assert "failed on 1 of 2 node(s): worker001" in err


# ---- the cluster repo is the flake's root, wherever in it a command runs --------------------------------


def test_init_in_a_subdirectory_writes_at_the_repo_root(
    capsys: pytest.CaptureFixture[str], cluster_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(cluster_repo / "app_modules")
    code, _, err = cli(capsys, "init", "--cluster", "demo")
    assert code == 0, err
    assert (cluster_repo / "pki/ca.crt").is_file() and (cluster_repo / "facts").is_dir()
    assert sorted(p.name for p in (cluster_repo / "app_modules").iterdir()) == []  # no second CA here


def test_init_outside_a_cluster_repo_refuses(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "nowhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    code, _, err = cli(capsys, "init", "--cluster", "demo", "--recipient", str(x25519.Identity.generate().to_public()))
    assert code == 1 and "not in a cluster repo" in err and "flake.nix" in err
    assert list(empty.iterdir()) == []


def test_provision_in_a_subdirectory_writes_facts_at_the_repo_root(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    cluster_repo: Path,
    fake: FakeHcloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(cluster_repo / "app_modules")
    code, _, err = cli(capsys, "provision", "--yes", "--manifest", "../m.json")
    assert code == 0, err
    assert sorted(p.name for p in (cluster_repo / "facts").glob("*.json")) == ["ctrl001.json", "worker001.json"]
    assert not (cluster_repo / "app_modules/facts").exists()
    assert "destroy" not in err  # no advice to destroy a healthy server


def test_a_flake_ref_inside_the_repo_means_its_root(cluster_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nix_infra.options import Options, at_repo_root

    monkeypatch.chdir(cluster_repo / "app_modules")
    opts = at_repo_root(Options(flake=".", manifest_file=None, json_output=False, yes=False, debug=False))
    assert Path(opts.flake) == cluster_repo.resolve() and opts.repo_dir() == cluster_repo.resolve()
    assert at_repo_root(replace_flake(opts, "github:acme/infra")).flake == "github:acme/infra"


def replace_flake(opts: Any, flake: str) -> Any:
    from dataclasses import replace

    return replace(opts, flake=flake)


# ---- the template ----------------------------------------------------------------------------------


def test_the_template_ignores_env_and_local_state() -> None:
    lines = (REPO / "templates/cluster/.gitignore").read_text().split("\n")
    assert ".env" in lines and ".nix-infra/" in lines


def test_the_template_explains_owner_and_a_local_checkout() -> None:
    flake = (REPO / "templates/cluster/flake.nix").read_text()
    readme = (REPO / "README.md").read_text()
    for text in (flake, readme):
        assert "github:OWNER/nix-infra" in text and "path:/abs/path/to/nix-infra" in text


def test_the_templates_placeholders_are_what_the_check_refuses() -> None:
    text = (REPO / "templates/cluster/cluster.nix").read_text()
    assert EXAMPLE_SSH_KEY in text and '"203.0.113.0/24"' in text


def test_placeholders_are_named_by_field(example_manifest: dict[str, Any]) -> None:
    from nix_infra.manifest import parse_manifest

    m = dict(example_manifest)
    m["adminCidrs"] = ["198.51.100.7/32", "192.0.2.0/25", "2001:db8:1::/48", "192.0.3.0/24"]
    problems = placeholder_problems(parse_manifest(m))
    assert [p.split(":")[0] for p in problems] == [
        "provider.sshKeys[0]",
        "provider.adminCidrs[0]",
        "provider.adminCidrs[1]",
        "provider.adminCidrs[2]",
    ]
    assert all("replace this placeholder" in p for p in problems)


def test_plan_and_provision_refuse_placeholders_before_a_real_cloud(
    capsys: pytest.CaptureFixture[str], manifest_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HCLOUD_TOKEN", "a-real-looking-token")
    monkeypatch.delenv("HCLOUD_ENDPOINT", raising=False)  # the real API's endpoint

    def no_network(*_: Any, **__: Any) -> Any:
        pytest.fail("a connection was attempted")

    monkeypatch.setattr("nix_infra.hetzner.client.make_client", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for command in (["plan"], ["provision", "--yes"]):
        code, _, err = cli(capsys, "--manifest", str(manifest_file), *command)
        assert code == 1, (command, err)
        assert "replace this placeholder" in err and "provider.sshKeys[0]" in err and "provider.adminCidrs[0]" in err


# ---- status: per node, never all-or-nothing ---------------------------------------------------------


def test_status_without_facts_is_a_row_per_node_saying_why(
    capsys: pytest.CaptureFixture[str], manifest_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "facts").mkdir()
    code, out, err = cli(capsys, "--manifest", str(manifest_file), "status")
    assert code == 1 and "Traceback" not in err and "error" not in err
    assert re.search(r"ctrl001 .* no .* no facts/ctrl001.json", out)
    assert re.search(r"worker001 .* no .* no facts/worker001.json", out)
    code, out, _ = cli(capsys, "--manifest", str(manifest_file), "--json", "status")
    rows = json.loads(out)
    assert [(r["node"], r["reachable"]) for r in rows] == [("ctrl001", False), ("worker001", False)]
    assert all("no facts/" in r["error"] for r in rows)


def test_plain_status_evaluates_no_system_and_drift_does(
    capsys: pytest.CaptureFixture[str],
    manifest_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nix_infra.manifest import load_manifest_file

    monkeypatch.chdir(tmp_path)
    evaluated: list[list[str]] = []
    monkeypatch.setattr("nix_infra.options.load_manifest_flake", lambda ref: load_manifest_file(manifest_file))
    monkeypatch.setattr(
        "nix_infra.cli.desired_systems", lambda flake, nodes: evaluated.append([n.name for n in nodes]) or {}
    )
    assert cli(capsys, "status")[0] == 1  # unreachable: no facts
    assert evaluated == []
    assert cli(capsys, "status", "--drift")[0] == 1
    assert evaluated == [["ctrl001", "worker001"]]


# ---- messages -------------------------------------------------------------------------------------------


def test_ssh_to_an_unknown_node_names_node(capsys: pytest.CaptureFixture[str], manifest_file: Path) -> None:
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "ssh", "nosuch")
    assert code == 1 and "NODE 'nosuch': no such node" in err and "--on" not in err


def test_failure_messages_never_list_nothing() -> None:
    from nix_infra.cli import failure_message

    waiting = [NodeOutcome("worker001", "not-started"), NodeOutcome("worker002", "not-started")]
    assert failure_message(waiting) == "2 node(s) not started (worker001, worker002)"
    broken = [NodeOutcome("ctrl001", "failed"), *waiting]
    assert failure_message(broken) == "deploy failed on ctrl001; 2 node(s) not started (worker001, worker002)"
    assert failure_message([NodeOutcome("w1", "rolled-back")], "rollback") == "rollback failed on w1"
    assert "on ;" not in failure_message([])


def test_rollback_prints_a_rollback_summary() -> None:
    from rich.console import Console

    from nix_infra.cli import _summary
    from nix_infra.options import Options

    out = io.StringIO()
    opts = Options(flake=".", manifest_file=None, json_output=False, yes=True, debug=False)
    _summary(opts, [NodeOutcome("worker001", "switched")], Console(file=out, width=120), "rollback")
    assert "rollback summary" in out.getvalue() and "deploy summary" not in out.getvalue()


def test_secret_list_says_when_the_identity_cannot_be_loaded(
    capsys: pytest.CaptureFixture[str], cluster_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(cluster_repo)
    value = cluster_repo / "v"
    value.write_text("tok")
    assert cli(capsys, "--manifest", "m.json", "secret", "set", "api-token", "--from-file", str(value))[0] == 0
    monkeypatch.setenv("NIX_INFRA_IDENTITY", str(cluster_repo / "no-such-key"))
    code, out, err = cli(capsys, "--manifest", "m.json", "secret", "list")
    assert code == 0
    assert "identity not loaded" in out and "cannot tell whether the secrets decrypt" in err and "no-such-key" in err


def test_secret_list_with_a_missing_secret_exits_1(
    capsys: pytest.CaptureFixture[str], cluster_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(cluster_repo)
    code, out, err = cli(capsys, "--manifest", "m.json", "secret", "list")
    assert code == 1 and "MISSING" in out and "1 secret(s) MISSING: api-token" in err


def test_pki_status_with_missing_certificates_exits_1(
    capsys: pytest.CaptureFixture[str], cluster_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(cluster_repo)
    assert cli(capsys, "--manifest", "m.json", "init", "--cluster", "demo")[0] == 0
    code, out, err = cli(capsys, "--manifest", "m.json", "pki", "status")
    assert code == 1 and "missing" in out and "nix-infra pki issue" in err
    assert cli(capsys, "--manifest", "m.json", "pki", "issue")[0] == 0
    assert cli(capsys, "--manifest", "m.json", "pki", "status")[0] == 0


# ---- etcd --etcd-key takes the repo's .age keys ------------------------------------------------------


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> ClusterPki:
    from .conftest import example_manifest_data

    return make_cluster_pki(tmp_path_factory.mktemp("repo"), example_manifest_data())


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory, etcd_cluster: ClusterPki) -> Iterator[EtcdServer]:
    s = EtcdServer(tmp_path_factory.mktemp("etcd"), etcd_cluster, "ctrl001").start()
    yield s
    s.stop()


def test_etcd_key_accepts_the_repos_age_key(
    capsys: pytest.CaptureFixture[str], etcd_server: EtcdServer, etcd_cluster: ClusterPki, tmp_path: Path
) -> None:
    identity = tmp_path / "identity.txt"
    identity.write_text(f"{etcd_cluster.identity.keys[0]}\n")
    pki = etcd_cluster.repo / "pki"
    etcd_server.etcdctl("put", "/ops/flag", "on")
    code, out, err = cli(
        capsys, "--identity", str(identity), "etcd", "--etcd-endpoint", etcd_server.url,
        "--etcd-ca", str(pki / "ca.crt"), "--etcd-cert", str(pki / "admin.crt"),
        "--etcd-key", str(pki / "admin.key.age"), "get", "/ops/",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == {"/ops/flag": "on"}
    assert not list(tmp_path.rglob("admin.key"))  # decrypted in memory only


# ---- the docs' runnable examples -------------------------------------------------------------------


def runnable_blocks() -> list[tuple[str, str]]:
    """Every ```sh block right after a `<!-- runnable -->` line in the README and docs/."""
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for i, block in enumerate(re.findall(r"<!-- runnable -->\n```sh\n(.*?)```", doc.read_text(), re.S)):
            found.append((f"{doc.relative_to(REPO)}#{i}", block))
    return found


@pytest.mark.parametrize(("where", "block"), runnable_blocks(), ids=[w for w, _ in runnable_blocks()])
def test_the_docs_runnable_examples_run_as_written(where: str, block: str, tmp_path: Path) -> None:
    """Run from the checkout as the docs say; only the fake API's fixed port becomes a free one (the
    suite may run twice at once), and mktemp's directory goes under this test's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = block.replace("8080", str(port))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HCLOUD_", "VIRTUAL_ENV"))},
        "TMPDIR": str(tmp_path),
        "PATH": os.environ["PATH"],
    }
    proc = subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{where}:\n{output}"
    assert "Traceback" not in output and "error:" not in output and "command not found" not in output, output
    if "provision" in script:
        assert "No changes: the cloud matches the manifest." in output


# ---- no silent wait over 5 s --------------------------------------------------------------------------


def test_provision_says_why_it_waits_and_when_it_tries_again(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    manifest_file: Path,
    fake: FakeHcloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("nix_infra.hetzner.client.WAIT_REPORT_SECONDS", 0.05)
    fake.set_faults(server_errors=2, server_error_status=503, rate_limit_burst=0, action_seconds=0.5)
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "provision", "--yes")
    assert code == 0, err
    assert re.search(r"Hetzner API answered 503; trying again in [0-9.]+ s \(\d+ retries left\)", err), err
    assert re.search(r"server demo-\w+: waiting for Hetzner action create_server \(\d+ s\)", err), err
    fake.set_faults(rate_limit_burst=1, rate_limit_reset_seconds=1)
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "plan")
    assert code == 0, err
    assert "rate limit reached; waiting" in err


def test_deploy_progress_says_what_it_waits_for_while_a_step_runs() -> None:
    import threading
    import time

    from rich.console import Console

    from nix_infra.cli import EventPrinter
    from nix_infra.options import Options

    out = io.StringIO()
    opts = Options(flake=".", manifest_file=None, json_output=False, yes=True, debug=False)
    done = threading.Event()
    with EventPrinter(opts, Console(file=out, width=200), quiet_seconds=0.1) as show:
        show({"event": "phase", "node": "worker001", "phase": "confirm", "time": time.time()})
        deadline = time.monotonic() + 60
        while "still confirming" not in out.getvalue() and time.monotonic() < deadline:
            done.wait(0.05)
        show({"event": "switched", "node": "worker001", "time": time.time()})
    text = out.getvalue()
    assert "confirming over a fresh SSH connection; waiting for the node to report" in text
    assert re.search(r"worker001  … still confirming over a fresh SSH connection.* \(\d+ s\)", text), text
    lines = len(text.splitlines())
    time.sleep(0.3)  # stopped with the command: nothing more
    assert len(out.getvalue().splitlines()) == lines


def test_deploy_progress_retry_says_why() -> None:
    import time

    from rich.console import Console

    from nix_infra.cli import EventPrinter
    from nix_infra.options import Options

    out = io.StringIO()
    opts = Options(flake=".", manifest_file=None, json_output=False, yes=True, debug=False)
    EventPrinter(opts, Console(file=out, width=200))(
        {
            "event": "retry",
            "node": "w1",
            "phase": "copy",
            "attempt": 1,
            "error": "x\n[broken pipe]",
            "time": time.time(),
        }
    )
    assert "retrying copy (attempt 1 failed: [broken pipe])" in out.getvalue()


def test_global_options_after_a_group(
    capsys: pytest.CaptureFixture[str], manifest_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NIX_INFRA_IDENTITY", str(tmp_path / "none"))
    code, out, _ = cli(capsys, "etcd", "--json", "--manifest", str(manifest_file), "get", "/")
    assert code == 1 and "cannot be read" in json.loads(out)["error"]["message"]


def test_a_bench_script_runs_as_the_readme_writes_it(tmp_path: Path) -> None:
    """`./bench/etcd-seed` with whatever python3 is first on PATH (here: not the venv's) re-runs itself
    in the repo's .venv instead of failing on a missing module."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    proc = subprocess.run(
        ["./bench/etcd-seed"], cwd=REPO, env={**env, "PATH": path, "TMPDIR": str(tmp_path)},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["reseed_writes"] == 0
