"""A sample of the kill-point sweep (tests/killpoints.py; all points: ./bin/killpoint-sweep).

Each case kills a nix-infra command at one step boundary, re-runs it, and checks the repo is
intact (values, recipients, PKI, pins) and clean (no temp file, plaintext or old ciphertext)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .killpoints import SCENARIOS, provision_point, run_point

# (scenario, point, signal): early points catch a temp file written but not renamed
SAMPLE = [
    ("init", 3, "KILL"),
    ("pki-issue", 2, "KILL"),
    ("secret-set", 1, "KILL"),
    ("secret-rotate", 1, "INT"),
    ("secret-rekey", 1, "KILL"),
    ("secret-rekey", 6, "INT"),
]


@pytest.mark.parametrize(("scenario", "point", "sig"), SAMPLE, ids=[f"{s}-{p}-{g}" for s, p, g in SAMPLE])
def test_a_killed_command_rerun_leaves_the_repo_intact_and_clean(
    tmp_path: Path, example_manifest: dict[str, Any], scenario: str, point: int, sig: str
) -> None:
    outcome = run_point(SCENARIOS[scenario], example_manifest, tmp_path, point, sig)
    assert outcome.killed, "the command was not interrupted at this point"
    assert outcome.intact and outcome.clean, outcome.problems


@pytest.mark.parametrize(("point", "sig"), [(9, "KILL"), (20, "INT")])
def test_a_killed_provision_rerun_pins_the_keys_the_servers_have(
    tmp_path: Path, example_manifest: dict[str, Any], point: int, sig: str
) -> None:
    outcome, _ = provision_point(example_manifest, tmp_path, point, sig)
    assert outcome.killed, "provision was not interrupted at this point"
    assert outcome.intact and outcome.clean, outcome.problems
