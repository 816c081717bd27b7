"""Shared fixtures of the orchestrator tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[2]

# Hypothesis fails an example that takes over 200 ms by default: on a loaded 2-core CI machine that
# is how fast the machine is, not a property of the code. The one place every property test inherits
# it from (a hang is still bounded by each test's own deadlines and max_examples).
settings.register_profile("nix-infra", deadline=None)
settings.load_profile("nix-infra")


def example_manifest_data(spec_expr: str = "import ./lib/example.nix") -> dict[str, Any]:
    """The manifest of a spec, evaluated by the real lib (needs nix-instantiate)."""
    if shutil.which("nix-instantiate") is None:
        pytest.skip("nix-instantiate not available")
    proc = subprocess.run(
        [
            "nix-instantiate",
            "--eval",
            "--strict",
            "--json",
            "--expr",
            f"((import ./lib).evalCluster ({spec_expr})).manifest",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run nix-infra in-process, as its console script would; returns (exit code, stdout, stderr)."""
    import sys

    from nix_infra.cli import main

    argv = sys.argv
    sys.argv = ["nix-infra", *args]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def example_manifest() -> dict[str, Any]:
    return example_manifest_data()


@pytest.fixture
def manifest_file(tmp_path: Path, example_manifest: dict[str, Any]) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(example_manifest))
    return path


# ---- the fake Hetzner API --------------------------------------------------------------------

from collections.abc import Iterator  # noqa: E402

from hcloud import Client  # noqa: E402

from nix_infra.fake_hcloud import FakeHcloud  # noqa: E402
from nix_infra.hetzner.client import HcloudSettings, make_client  # noqa: E402

FAST = {"NIX_INFRA_HCLOUD_POLL_INTERVAL": "0.01", "NIX_INFRA_HCLOUD_BACKOFF": "0.01"}


@pytest.fixture
def fake() -> Iterator[FakeHcloud]:
    server = FakeHcloud(token="test-token").start()
    yield server
    server.stop()


@pytest.fixture
def client(fake: FakeHcloud) -> Client:
    """The real hcloud client, with nix-infra's retry policy, talking to the fake."""
    return make_client(
        "test-token",
        HcloudSettings(endpoint=fake.endpoint, poll_interval=0.01, backoff_factor=0.01, action_timeout=30),
    )


@pytest.fixture
def hcloud_env(fake: FakeHcloud, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Environment for the CLI: token, endpoint of the fake, quick polling; the working
    directory (the "cluster repo", where facts/ goes) is a temporary one."""
    env = {"HCLOUD_TOKEN": "test-token", "HCLOUD_ENDPOINT": fake.endpoint, **FAST}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    return env
