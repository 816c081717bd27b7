"""The CLI's global behaviour: help with examples, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


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
