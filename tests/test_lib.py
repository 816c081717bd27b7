"""The pure Nix library, evaluated with a bare nix-instantiate."""

from __future__ import annotations

import json
import re
import subprocess

import jsonschema
import pytest
from conftest import REPO, bare_env, nix_eval, nix_json

SCHEMA = json.loads((REPO / "docs" / "manifest.schema.json").read_text())
EXAMPLE = "((import ./lib).evalCluster (import ./lib/example.nix)).manifest"


def test_named_lib_tests_pass() -> None:
    result = nix_json("import ./lib/tests")
    assert result["failures"] == []
    assert result["total"] >= 90


def test_lib_needs_nothing_outside_itself() -> None:
    # restrict-eval refuses every path outside the -I entries: lib may read only
    # its own files (no <nixpkgs>, no NIX_PATH, no network).
    proc = subprocess.run(
        [
            "nix-instantiate",
            "--eval",
            "--strict",
            "--json",
            "--option",
            "restrict-eval",
            "true",
            "-I",
            f"lib={REPO / 'lib'}",
            "--expr",
            "((import <lib>).evalCluster (import <lib/example.nix>)).manifest.version",
        ],
        env=bare_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


def test_lib_uses_no_nixpkgs() -> None:
    for path in (REPO / "lib").rglob("*.nix"):
        text = path.read_text()
        assert "<nixpkgs>" not in text, path
        assert not re.search(r"\bpkgs\.", text), path


def test_example_manifest_validates_against_schema() -> None:
    manifest = nix_json(EXAMPLE)
    jsonschema.validate(manifest, SCHEMA)
    assert manifest["version"] == 1
    assert set(manifest["nodes"]) == {"ctrl001", "worker001"}


def test_template_and_bench_clusters_validate() -> None:
    for expr in [
        "((import ./lib).evalCluster (import ./templates/cluster/cluster.nix)).manifest",
        "((import ./lib).evalCluster (import ./bench/cluster.nix { size = 100; })).manifest",
    ]:
        jsonschema.validate(nix_json(expr), SCHEMA)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.update(version=2),
        lambda m: m.pop("nodes"),
        lambda m: m["nodes"]["ctrl001"].update(privateIp="10.10.0.300"),
        lambda m: m["nodes"]["ctrl001"].update(type="database"),
        lambda m: m["etcdSeed"].update({"/cluster/backends/api/instances/w1": {}}),
    ],
    ids=["version", "no-nodes", "bad-ip", "bad-type", "seeded-instance"],
)
def test_schema_rejects_broken_manifests(mutate: object) -> None:
    manifest = nix_json(EXAMPLE)
    mutate(manifest)  # type: ignore[operator]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, SCHEMA)


def test_etcd_seed_is_the_design_data_model() -> None:
    seed = nix_json(EXAMPLE)["etcdSeed"]
    assert seed == {
        "/cluster/nodes/ctrl001": {"name": "ctrl001", "ipv4": "10.10.32.1", "services": []},
        "/cluster/nodes/worker001": {
            "name": "worker001",
            "ipv4": "10.10.64.1",
            "services": ["services", "backends"],
        },
        "/cluster/backends/api/meta_data": {
            "publish": {"port": 5001},
            "port": 8080,
            "env_prefix": "API",
            "env": {"PROTOCOL": "http", "HOST": "127.0.0.1", "PORT": "5001", "PATH": "/"},
        },
        "/coreos.com/network/config": {
            "Network": "10.244.0.0/16",
            "SubnetLen": 24,
            "Backend": {"Type": "wireguard", "ListenPort": 51820, "PersistentKeepaliveInterval": 25},
        },
    }


ERROR_CASES: dict[str, str] = nix_json("builtins.mapAttrs (_: c: c.field) (import ./lib/tests/errors.nix)")


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_spec_error_names_its_field(case: str) -> None:
    field = ERROR_CASES[case]
    proc = nix_eval(f"((import ./lib).evalCluster (import ./lib/tests/errors.nix).{json.dumps(case)}.spec).manifest")
    assert proc.returncode != 0, f"{case}: the bad spec evaluated"
    assert "nix-infra: the cluster spec has" in proc.stderr
    # every listed error starts with a field path; this case's field must be one of them
    assert re.search(rf"^\s*- {re.escape(field)}:", proc.stderr, re.MULTILINE), proc.stderr


def test_all_errors_reported_at_once() -> None:
    proc = nix_eval(
        "let e = import ./lib/example.nix; in ((import ./lib).evalCluster (e // {"
        ' name = "Bad"; nodes = e.nodes // { db = { type = "database"; }; }; })).manifest'
    )
    assert proc.returncode != 0
    assert "has 3 errors" in proc.stderr
    for field in ["name", "nodes.db.type", "nodes.db.serverType"]:
        assert re.search(rf"^\s*- {re.escape(field)}:", proc.stderr, re.MULTILINE), field
