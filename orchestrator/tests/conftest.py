"""Shared fixtures of the orchestrator tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def example_manifest_data(spec_expr: str = "import ./lib/example.nix") -> dict[str, Any]:
    """The manifest of a spec, evaluated by the real lib (needs nix-instantiate)."""
    if shutil.which("nix-instantiate") is None:
        pytest.skip("nix-instantiate not available")
    proc = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "--expr",
         f"((import ./lib).evalCluster ({spec_expr})).manifest"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


@pytest.fixture(scope="session")
def example_manifest() -> dict[str, Any]:
    return example_manifest_data()


@pytest.fixture
def manifest_file(tmp_path: Path, example_manifest: dict[str, Any]) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(example_manifest))
    return path
