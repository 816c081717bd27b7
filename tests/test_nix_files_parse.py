"""Every .nix file in the repository at least parses (modules cannot be evaluated here)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import REPO, bare_env

NIX_FILES = sorted(
    p for p in REPO.rglob("*.nix") if not any(part.startswith(".") for part in p.relative_to(REPO).parts)
)


def test_there_are_nix_files() -> None:
    names = {p.relative_to(REPO).as_posix() for p in NIX_FILES}
    assert {
        "flake.nix",
        "lib/default.nix",
        "modules/base.nix",
        "modules/ctrl.nix",
        "modules/mesh.nix",
        "modules/overlay.nix",
        "modules/apps.nix",
        "node_types/ctrl.nix",
        "app_modules/postgresql.nix",
        "app_modules/valkey.nix",
        "app_modules/container.nix",
        "checks/mesh.nix",
        "checks/overlay.nix",
        "checks/credentials.nix",
        "lib/cluster-flake.nix",
    } <= names


@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_parses(path: object) -> None:
    proc = subprocess.run(
        ["nix-instantiate", "--parse", str(path)], env=bare_env(), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
