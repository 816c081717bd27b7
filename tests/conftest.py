"""Helpers for the repo-level tests of the pure Nix library (lib/)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

if shutil.which("nix-instantiate") is None:  # pragma: no cover - set-up problem
    pytest.exit("nix-instantiate is not installed; run ./bin/test, which installs it", 3)


def bare_env() -> dict[str, str]:
    """An environment without NIX_PATH: lib must need no nixpkgs or channels."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIX_PATH")}
    env["NIX_PATH"] = ""
    return env


def nix_eval(expr: str, *, strict: bool = True) -> subprocess.CompletedProcess[str]:
    """Evaluate a Nix expression (cwd = repo root) to JSON with a bare nix-instantiate."""
    argv = ["nix-instantiate", "--eval", "--json", "--expr", expr]
    if strict:
        argv.insert(2, "--strict")
    return subprocess.run(argv, cwd=REPO, env=bare_env(), capture_output=True, text=True, check=False)


def nix_json(expr: str) -> Any:
    proc = nix_eval(expr)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def nix_string(s: str) -> str:
    """A JSON string is a valid Nix string literal once '$' cannot start an interpolation."""
    return json.dumps(s).replace("${", "\\${")
