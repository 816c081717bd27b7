"""The sandbox's servers let `sandbox up --ssh-key` log in (review finding: in a repo made from
the template, they authorized only cluster.nix's placeholder key, and deploy failed with
`Permission denied (publickey)`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from nix_infra.sandbox import daemon
from nix_infra.sandbox.fleet import FakeFleet


def test_the_operators_key_is_authorized_beside_the_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = (tmp_path / "id_ed25519.pub").read_text().strip()
    assert daemon.operator_public_key(str(key)) == public
    (tmp_path / "id_ed25519.pub").unlink()  # derived from the private key when the .pub is not there
    assert daemon.operator_public_key(str(key)).split()[:2] == public.split()[:2]
    assert daemon.operator_public_key(None) is None
    assert daemon.operator_public_key(str(tmp_path / "missing")) is None

    booted: list[list[str]] = []
    monkeypatch.setattr(FakeFleet, "boot", lambda self, server, keys, user_data: booted.append(keys))
    fleet = daemon.RecordingFleet(tmp_path / "fleet", lambda: None, public)
    server: dict[str, Any] = {"id": 1, "name": "sbx-worker001"}
    fleet.boot(server, ["ssh-ed25519 AAAAplaceholder ops@laptop"], None)
    assert booted == [["ssh-ed25519 AAAAplaceholder ops@laptop", public]]
