"""The CLI's global behaviour: help with examples, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def nix_infra(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nix_infra", *args], capture_output=True, text=True, check=False, env=env
    )


def test_manifest_command_shows_nodes(manifest_file: Path) -> None:
    proc = nix_infra("--manifest", str(manifest_file), "manifest")
    assert proc.returncode == 0, proc.stderr
    assert "ctrl001" in proc.stdout and "10.10.64.1" in proc.stdout


def test_manifest_json(manifest_file: Path) -> None:
    proc = nix_infra("--manifest", str(manifest_file), "--json", "manifest")
    assert json.loads(proc.stdout)["version"] == 1


def test_user_error_has_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"version": 9}))
    proc = nix_infra("--manifest", str(bad), "manifest")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: manifest: version 9 is not supported")
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"version": 9}))
    proc = nix_infra("--debug", "--manifest", str(bad), "manifest")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def cluster_flake(tmp_path: Path, spec: str) -> Path:
    """A minimal cluster flake (no inputs) whose manifest comes from the real lib."""
    import shutil

    from .conftest import REPO

    if shutil.which("nix") is None:
        pytest.skip("nix not available")
    shutil.copytree(REPO / "lib", tmp_path / "lib")
    (tmp_path / "flake.nix").write_text(
        "{ outputs = { self }: { nixInfra.manifest = ((import ./lib).evalCluster (" + spec + ")).manifest; }; }\n"
    )
    return tmp_path


def test_flake_manifest_is_evaluated_with_nix(tmp_path: Path) -> None:
    flake = cluster_flake(tmp_path, "import ./lib/example.nix")
    proc = nix_infra("--flake", str(flake), "--json", "manifest")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["nodes"]["worker001"]["privateIp"] == "10.10.64.1"


def test_flake_with_a_bad_spec_shows_the_field(tmp_path: Path) -> None:
    flake = cluster_flake(tmp_path, 'import ./lib/example.nix // { name = "Bad_Name"; }')
    proc = nix_infra("--flake", str(flake), "manifest")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: evaluating")
    assert 'name: "Bad_Name" is not a DNS label' in proc.stderr
    assert "Traceback" not in proc.stderr
