"""bin/setup's confd and flanneld are in .tools/bin at the wanted versions, found through tools.tool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from . import tools
from .tools import tool


def test_confd_is_the_version_bin_setup_builds() -> None:
    proc = subprocess.run([str(tool("confd")), "-version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("confd 0.16.0 ")


def test_flanneld_is_the_version_nixpkgs_packages() -> None:
    proc = subprocess.run([str(tool("flanneld")), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).strip() == "v0.28.9"


def test_a_missing_tool_fails_the_test_naming_bin_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tools, "TOOLS_BIN", tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r"run \./bin/setup"):
        tool("confd")
    (tmp_path / "confd").write_text("#!/bin/sh\n")  # present but not executable
    with pytest.raises(pytest.fail.Exception, match=r"not executable: run \./bin/setup"):
        tool("confd")


def test_an_unknown_tool_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown tool"):
        tool("etcd")
