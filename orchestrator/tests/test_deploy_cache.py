"""No-op deploys do no work (deploycache.py): the source key, and deploy on the local fleet with a
shim `nix` on PATH that logs every invocation (what was evaluated and built)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nix_infra.deploycache import DeployCache, cache_disabled, flake_source, node_key, source_key
from nix_infra.errors import NixInfraError

from .conftest import REPO
from .test_deploy import Cluster, fleet_cluster

ENV = {"HOME": "/nonexistent", "NIX_CONF_DIR": "/nonexistent"}


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True
    )


def path_flake(tmp_path: Path) -> Path:
    flake = tmp_path / "flake"
    (flake / "sub").mkdir(parents=True)
    (flake / "flake.nix").write_text("{ outputs = { self }: { }; }\n")
    (flake / "sub" / "cluster.nix").write_text("{ }\n")
    (flake / "flake.lock").write_text('{"nodes": {"root": {}}, "root": "root", "version": 7}\n')
    return flake


# ---- the key ----------------------------------------------------------------------------------


def test_path_flake_key_covers_every_file_but_the_run_state(tmp_path: Path) -> None:
    flake = path_flake(tmp_path)
    key = source_key(str(flake), ENV)
    assert key is not None and key == source_key(str(flake), ENV)  # stable
    (flake / ".nix-infra").mkdir()
    (flake / ".nix-infra" / "deployed.json").write_text("{}")  # the orchestrator's own state
    assert source_key(str(flake), ENV) == key
    for change in (
        lambda: (flake / "new-file").write_text("x"),  # a path: flake sees untracked files too
        lambda: (flake / "sub" / "cluster.nix").write_text("{ a = 1; }\n"),
        lambda: (flake / "sub" / "cluster.nix").chmod(0o755),
        lambda: (flake / "flake.lock").write_text('{"nodes": {"root": {}}, "root": "root", "version": 7 }\n'),
        lambda: (flake / "link").symlink_to("sub"),
        lambda: (flake / "empty").mkdir(),  # an empty directory is in the tree Nix copies
    ):
        change()
        changed = source_key(str(flake), ENV)
        assert changed != key
        key = changed
    assert source_key(f"path:{flake}", ENV) not in (None, key)  # another reference is another key


def test_git_flake_key_is_the_tracked_files_dirty_or_not(tmp_path: Path) -> None:
    flake = path_flake(tmp_path)
    git(flake, "init", "-q")
    git(flake, "add", "-A")
    git(flake, "commit", "-qm", "init")
    src = flake_source(str(flake / "sub"))  # a directory inside the work tree: the whole repo
    assert src is not None and (src.kind, src.root) == ("git", flake.resolve())
    key = source_key(str(flake), ENV)
    (flake / "untracked.nix").write_text("junk")  # Nix does not see it: neither does the key
    assert source_key(str(flake), ENV) == key
    git(flake, "add", "untracked.nix")  # staged: Nix copies it
    staged = source_key(str(flake), ENV)
    assert staged != key
    (flake / "sub" / "cluster.nix").write_text("{ b = 2; }\n")  # dirty working tree: Nix uses it
    dirty = source_key(str(flake), ENV)
    assert dirty not in (key, staged)
    git(flake, "commit", "-qam", "second")  # a commit of the same content: the same files
    assert source_key(str(flake), ENV) == dirty
    assert source_key(f"git+file://{flake}", ENV) is not None


def test_path_inputs_nix_infra_and_settings_are_in_the_key(tmp_path: Path) -> None:
    flake = path_flake(tmp_path)
    lib = tmp_path / "nix-infra-lib"
    lib.mkdir()
    (lib / "default.nix").write_text("1")
    lock = {
        "nodes": {"lib": {"locked": {"type": "path", "path": str(lib)}}, "root": {"inputs": {"lib": "lib"}}},
        "root": "root",
        "version": 7,
    }
    (flake / "flake.lock").write_text(json.dumps(lock))
    key = source_key(str(flake), ENV)
    (lib / "default.nix").write_text("2")  # the input changed under an unchanged lock entry
    assert source_key(str(flake), ENV) != key
    key = source_key(str(flake), ENV)
    assert source_key(str(flake), {**ENV, "NIX_INFRA_POLL_INTERVAL": "3"}) == key  # timing only
    assert source_key(str(flake), {**ENV, "NIX_INFRA_SOMETHING_NEW": "1"}) != key
    assert source_key(str(flake), {**ENV, "NIX_CONFIG": "allow-import-from-derivation = false"}) != key
    conf = tmp_path / "etc-nix"
    conf.mkdir()
    (conf / "nix.conf").write_text("pure-eval = true\n")
    assert source_key(str(flake), {**ENV, "NIX_CONF_DIR": str(conf)}) != key


def test_remote_references_have_no_key(tmp_path: Path) -> None:
    flake = path_flake(tmp_path)
    for ref in ("github:acme/infra", f"git+file://{flake}?ref=main", f"path:{flake}?rev=abc", "nixpkgs"):
        assert source_key(ref, ENV) is None, ref


def test_a_tree_that_cannot_be_read_has_no_key(tmp_path: Path) -> None:
    flake = path_flake(tmp_path)
    (flake / ".git").write_text("gitdir: /nonexistent\n")  # git refuses this work tree
    assert source_key(str(flake), ENV) is None  # the deploy goes on, without the cache


def test_cache_file_entries(tmp_path: Path) -> None:
    cache = DeployCache(tmp_path)
    system = "/nix/store/" + "a" * 32 + "-nixos-system-x"
    assert cache.lookup("x", "k") is None
    cache.record({"x": ("k", system)})
    assert cache.lookup("x", "k") == system
    assert cache.lookup("x", "other") is None
    assert oct(cache.path.stat().st_mode & 0o777) == "0o600"
    cache.path.write_text("{ damaged")
    assert cache.lookup("x", "k") is None  # a damaged file is a miss, never an error
    with pytest.raises(NixInfraError, match="not a store path"):
        cache.record({"x": ("k", "/tmp/evil")})
    assert node_key("k", "a", "nixosConfigurations.a") != node_key("k", "b", "nixosConfigurations.a")


def test_no_cache_env() -> None:
    assert not cache_disabled({})
    assert cache_disabled({"NIX_INFRA_NO_CACHE": "1"})
    assert not cache_disabled({"NIX_INFRA_NO_CACHE": "0"})
    with pytest.raises(NixInfraError, match="NIX_INFRA_NO_CACHE"):
        cache_disabled({"NIX_INFRA_NO_CACHE": "maybe"})


# ---- deploy on the fleet ----------------------------------------------------------------------

pytestmark_fleet = pytest.mark.skipif(
    shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists(), reason="needs openssh-server"
)

SPEC = """{
  name = "e2e";
  provider = { location = "fsn1"; sshKeys = [ "%(key)s" ]; adminCidrs = [ "0.0.0.0/0" ]; };
  nodes.ctrl001 = { type = "ctrl"; serverType = "cx22"; };
  nodes.worker001 = { type = "worker"; serverType = "cx22"; };
}
"""
NODES = ("ctrl001", "worker001")


class NixLog:
    """A shim `nix` first on PATH: logs each invocation's argv, then runs the real nix."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        real = shutil.which("nix")
        assert real is not None
        directory.mkdir()
        self.log = directory / "nix.log"
        shim = directory / "nix"
        shim.write_text(f'#!/bin/sh\necho "$*" >> {self.log}\nexec {real} "$@"\n')
        shim.chmod(0o755)
        monkeypatch.setenv("PATH", f"{directory}:{os.environ['PATH']}")

    def take(self) -> list[list[str]]:
        """The nix invocations since the last take, as word lists."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.write_text("")
        return [line.split() for line in lines]

    def work(self) -> list[list[str]]:
        """The invocations since the last take that evaluate or build."""
        return [argv for argv in self.take() if {"eval", "build", "copy"} & set(argv)]


def connections(cluster: Cluster) -> dict[str, int]:
    """SSH connections each node's sshd accepted so far (one key exchange each)."""
    return {n: cluster.server(n).accepted_connections() for n in NODES}


@pytest.fixture
def small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Cluster, NixLog]]:
    with fleet_cluster(tmp_path, monkeypatch, SPEC) as c:
        yield c, NixLog(tmp_path / "shim", monkeypatch)


def deploy(cluster: Cluster, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, str]:
    """`deploy --no-provision`; each node's result."""
    code, out, err = cluster.cli(capsys, "--json", "deploy", "--no-provision", *extra)
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    return {n["node"]: n["result"] for n in summary["nodes"]}


def systems(cluster: Cluster, generation: int) -> dict[str, str]:
    from .fleet import set_generation

    set_generation(cluster.flake, generation)
    return {n: cluster.eval_system(n) for n in NODES}


@pytestmark_fleet
def test_unchanged_flake_is_neither_evaluated_nor_built(
    small: tuple[Cluster, NixLog], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, nix = small
    assert cluster.cli(capsys, "deploy")[0] == 0
    assert any("build" in argv for argv in nix.work())
    # provisioning and the install wrote facts/ (files of the flake) after the manifest was
    # evaluated: the next run evaluates the manifest once more, but builds nothing
    assert deploy(cluster, capsys) == dict.fromkeys(NODES, "unchanged")
    assert not any("build" in argv for argv in nix.work())
    before = connections(cluster)
    assert deploy(cluster, capsys) == dict.fromkeys(NODES, "unchanged")
    assert nix.work() == []  # nothing evaluated (not even the manifest), built or copied
    after = connections(cluster)
    assert {n: after[n] - before[n] for n in NODES} == dict.fromkeys(NODES, 1)  # the probe only
    # --no-cache and NIX_INFRA_NO_CACHE evaluate and build again
    assert deploy(cluster, capsys, "--no-cache") == dict.fromkeys(NODES, "unchanged")
    assert any("build" in argv for argv in nix.work())
    os.environ["NIX_INFRA_NO_CACHE"] = "1"
    try:
        deploy(cluster, capsys)
    finally:
        del os.environ["NIX_INFRA_NO_CACHE"]
    assert any("build" in argv for argv in nix.work())
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision")
    assert code == 0, err
    assert "2 node(s) with the sources of their last deploy: not evaluated or built" in err
    assert nix.work() == []


@pytestmark_fleet
def test_any_change_is_evaluated_and_built(small: tuple[Cluster, NixLog], capsys: pytest.CaptureFixture[str]) -> None:
    cluster, nix = small
    assert cluster.cli(capsys, "deploy")[0] == 0
    deploy(cluster, capsys)
    nix.take()
    # a tracked file that changes every system
    new = systems(cluster, 2)
    nix.take()
    assert deploy(cluster, capsys) == dict.fromkeys(NODES, "switched")
    assert any("build" in argv for argv in nix.work())
    assert {n: cluster.server(n).current_system() for n in NODES} == new
    deploy(cluster, capsys)
    assert nix.work() == []
    # the lock, changed in a way that changes no system: evaluated and built, nothing switched
    (cluster.flake / "flake.lock").write_text('{"nodes": {"root": {}}, "root": "root", "version": 7}\n')
    assert deploy(cluster, capsys) == dict.fromkeys(NODES, "unchanged")
    assert any("build" in argv for argv in nix.work())
    deploy(cluster, capsys)
    assert nix.work() == []
    # the manifest: worker001's entry changes (a label), so does its system
    spec = cluster.flake / "cluster.nix"
    spec.write_text(
        spec.read_text().replace(
            'nodes.worker001 = { type = "worker";', 'nodes.worker001 = { type = "worker"; labels.x = "y";'
        )
    )
    assert deploy(cluster, capsys) == {"ctrl001": "unchanged", "worker001": "switched"}
    work = nix.work()
    assert any("eval" in argv and any("nixInfra.manifest" in w for w in argv) for argv in work)
    assert any("build" in argv for argv in work)


@pytestmark_fleet
def test_a_node_switched_behind_our_back_is_deployed_again(
    small: tuple[Cluster, NixLog], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, nix = small
    assert cluster.cli(capsys, "deploy")[0] == 0
    wanted = cluster.server("worker001").current_system()
    assert wanted is not None
    # someone switched worker001 by hand: it runs something this flake does not make
    by_hand = "/nix/store/" + "0" * 32 + "-nixos-system-by-hand"
    link = cluster.server("worker001").run_dir / "current-system"
    link.unlink()
    link.symlink_to(by_hand)
    nix.take()
    assert deploy(cluster, capsys) == {"ctrl001": "unchanged", "worker001": "switched"}
    built = [argv for argv in nix.work() if "build" in argv]
    assert len(built) == 1 and any("worker001" in w for w in built[0])
    assert not any("ctrl001" in w for w in built[0])  # the node still on its recorded system: a hit
    assert cluster.server("worker001").current_system() == wanted
    deploy(cluster, capsys)
    assert nix.work() == []


@pytestmark_fleet
def test_a_crash_before_the_cache_write_is_no_false_noop(
    small: tuple[Cluster, NixLog], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, nix = small
    assert cluster.cli(capsys, "deploy")[0] == 0
    old = {n: cluster.server(n).current_system() for n in NODES}
    new = systems(cluster, 2)
    # deploy generation 2 in a process killed (SIGKILL) where it would record ctrl001's confirmed
    # and healthy switch: ctrl001 runs generation 2, the cache still says generation 1
    crash = (
        "import os, signal, sys\n"
        "from nix_infra import deploycache\n"
        "deploycache.DeployCache.record = lambda self, s: os.kill(os.getpid(), signal.SIGKILL) if s else None\n"
        "from nix_infra.cli import main\n"
        "sys.argv = ['nix-infra', *sys.argv[1:]]\n"
        "main()\n"
    )
    common = ["--flake", str(cluster.flake), "--ssh-key", str(cluster.key), "--ssh-port", "2222", "--yes"]
    proc = subprocess.run(
        [sys.executable, "-c", crash, *common, "deploy", "--no-seed", "--no-provision"],
        env={**os.environ, "PYTHONPATH": str(REPO / "orchestrator")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert cluster.server("ctrl001").current_system() == new["ctrl001"]
    assert cluster.server("worker001").current_system() == old["worker001"]
    # back to generation 1: the cache's entry for ctrl001 matches the key again, but ctrl001 does
    # not run what it recorded, so it is deployed (not a false no-op)
    systems(cluster, 1)
    nix.take()
    assert deploy(cluster, capsys) == {"ctrl001": "switched", "worker001": "unchanged"}
    assert {n: cluster.server(n).current_system() for n in NODES} == old
    # and forward to generation 2 again: every node gets it
    systems(cluster, 2)
    assert deploy(cluster, capsys) == {"ctrl001": "switched", "worker001": "switched"}
    assert {n: cluster.server(n).current_system() for n in NODES} == new


@pytestmark_fleet
def test_files_edited_while_nix_reads_them_record_nothing(
    small: tuple[Cluster, NixLog], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nix_infra.deploy import Deployer

    cluster, nix = small
    assert cluster.cli(capsys, "deploy")[0] == 0
    deploy(cluster, capsys)
    # generation 2 is set when the run starts; the operator sets generation 3 while Nix builds,
    # and goes back to 2 afterwards: what was built (3) must not be recorded as what 2 makes
    g2 = systems(cluster, 2)
    g3 = systems(cluster, 3)
    from .fleet import set_generation

    set_generation(cluster.flake, 2)
    build = Deployer.build

    def edited_meanwhile(self: Deployer, nodes: list[object]) -> dict[str, str]:
        set_generation(cluster.flake, 3)
        return build(self, nodes)  # type: ignore[arg-type]

    monkeypatch.setattr(Deployer, "build", edited_meanwhile)
    code, out, err = cluster.cli(capsys, "--json", "deploy", "--no-provision")
    assert code == 0, err
    assert any(json.loads(line).get("event") == "cache-skipped" for line in out.splitlines() if line.startswith("{"))
    assert {n: cluster.server(n).current_system() for n in NODES} == g3
    monkeypatch.setattr(Deployer, "build", build)
    set_generation(cluster.flake, 2)
    nix.take()
    assert deploy(cluster, capsys) == dict.fromkeys(NODES, "switched")
    assert {n: cluster.server(n).current_system() for n in NODES} == g2
    assert any("build" in argv for argv in nix.work())
