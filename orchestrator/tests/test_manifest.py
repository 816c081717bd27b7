"""Loading the manifest: dataclasses, version check, errors naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nix_infra.errors import NixInfraError
from nix_infra.manifest import eval_manifest_argv, load_manifest_file, parse_manifest


def test_parses_the_example(example_manifest: dict[str, Any]) -> None:
    m = parse_manifest(example_manifest)
    assert m.cluster == "demo"
    assert list(m.nodes) == ["ctrl001", "worker001"]
    w = m.nodes["worker001"]
    assert (w.type, w.private_ip, w.location, w.server_type) == ("worker", "10.10.64.1", "nbg1", "cpx21")
    assert w.credentials == ("api-token",)
    assert w.private_ports.tcp == (8080,)
    assert m.waves == (("ctrl001",), ("worker001",))
    assert m.owner_labels == {"nix-infra/cluster": "demo"}


def test_unknown_version_is_a_clear_error(example_manifest: dict[str, Any]) -> None:
    with pytest.raises(NixInfraError, match=r"version 2 is not supported .* reads version 1"):
        parse_manifest({**example_manifest, "version": 2})


def test_missing_field_is_named(example_manifest: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(example_manifest))
    del broken["nodes"]["ctrl001"]["privateIp"]
    with pytest.raises(NixInfraError, match=r"field nodes\.ctrl001\.privateIp is missing"):
        parse_manifest(broken)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(NixInfraError, match="cannot read manifest"):
        load_manifest_file(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(NixInfraError, match="not valid JSON"):
        load_manifest_file(bad)


def test_flake_eval_command() -> None:
    assert eval_manifest_argv("github:acme/infra")[-2:] == ["--json", "github:acme/infra#nixInfra.manifest"]
