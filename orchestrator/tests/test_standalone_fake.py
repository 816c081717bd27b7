"""The acceptance run, as an operator would do it: the standalone fake
(`python -m nix_infra.fake_hcloud`) and the `nix-infra` command, in processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import example_manifest_data
from .test_provision import SIXTY_ONE


@pytest.fixture
def standalone() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nix_infra.fake_hcloud", "--port", "0", "--token", "t0ken"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"on (http://127\.0\.0\.1:\d+/v1)", line)
    assert match, line
    yield match.group(1)
    proc.terminate()
    proc.wait(timeout=10)


def nix_infra(endpoint: str, *args: str, cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HCLOUD_TOKEN": "t0ken",
        "HCLOUD_ENDPOINT": endpoint,
        "NIX_INFRA_HCLOUD_POLL_INTERVAL": "0.02",
        "NIX_INFRA_HCLOUD_BACKOFF": "0.02",
    }
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "nix_infra", *args], env=env, capture_output=True, text=True, check=False, cwd=cwd, **kw
    )


def state(endpoint: str) -> dict[str, list[dict[str, object]]]:
    return requests.get(endpoint.replace("/v1", "/__fake__/state"), timeout=5).json()  # type: ignore[no-any-return]


def test_plan_provision_plan_against_the_standalone_fake(standalone: str, manifest_file: Path) -> None:
    first = nix_infra(standalone, "--manifest", str(manifest_file), "plan", cwd=manifest_file.parent)
    assert first.returncode == 2, first.stderr
    for resource in [
        "demo-05b2e3c96cc9",
        "+ demo ",
        "demo-spread-1",
        "demo-ctrl ",
        "demo-worker ",
        "demo-ctrl001",
        "demo-worker001",
    ]:
        assert resource in first.stdout
    applied = nix_infra(standalone, "--manifest", str(manifest_file), "--yes", "provision", cwd=manifest_file.parent)
    assert applied.returncode == 0, applied.stderr
    again = nix_infra(standalone, "--manifest", str(manifest_file), "plan", cwd=manifest_file.parent)
    assert again.returncode == 0, again.stdout
    assert len(state(standalone)["servers"]) == 2


def test_killed_half_way_then_rerun(standalone: str, tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(example_manifest_data(SIXTY_ONE)))
    control = standalone.replace("/v1", "/__fake__/faults")
    # 20 ms per request: creating 62 servers takes over a second, so the kill lands mid-way
    requests.post(control, json={"action_seconds": 0.2, "latency_seconds": 0.02}, timeout=5)
    env = {
        **os.environ,
        "HCLOUD_TOKEN": "t0ken",
        "HCLOUD_ENDPOINT": standalone,
        "NIX_INFRA_HCLOUD_POLL_INTERVAL": "0.02",
    }
    run = subprocess.Popen(
        [sys.executable, "-m", "nix_infra", "--manifest", str(manifest), "--yes", "provision"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,  # the cluster repo: facts/ goes here
    )
    deadline = time.monotonic() + 300  # bounds a hang only: the run has created a third of the servers
    while len(state(standalone)["servers"]) < 20:
        assert run.poll() is None, f"provision ended (exit {run.returncode}) before it was killed"
        assert time.monotonic() < deadline, "provision never got a third of the way"
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    half = len(state(standalone)["servers"])
    assert 0 < half < 62  # really killed half-way
    requests.post(control, json={"action_seconds": 0.0, "latency_seconds": 0.0}, timeout=5)
    rerun = nix_infra(standalone, "--manifest", str(manifest), "--yes", "provision", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    nodes = [s["labels"]["nix-infra/node"] for s in state(standalone)["servers"]]  # type: ignore[index]
    assert len(nodes) == 62 and len(set(nodes)) == 62  # exactly one server per node
    assert all(s["private_net"] for s in state(standalone)["servers"])
    final = nix_infra(standalone, "--manifest", str(manifest), "plan", cwd=tmp_path)
    # every server, also those the killed run created, has its facts and pinned key
    facts = sorted(p.stem for p in (tmp_path / "facts").glob("*.json"))
    assert len(facts) == 62
    assert (tmp_path / "facts" / "known_hosts").read_text().count("nix-infra:") == 62
    assert final.returncode == 0, final.stdout
