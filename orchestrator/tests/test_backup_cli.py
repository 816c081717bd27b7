"""`nix-infra backup`: what it refuses before reaching a node, the node command it builds, and
restic's snapshot list as it is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nix_infra import backup
from nix_infra.errors import NixInfraError

from .conftest import run_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restore", "worker001", "api", "--snapshot", "$(reboot)"], "a snapshot ID is 8 to 64 hex digits"),
        (["restore", "worker001", "api", "--snapshot", "-rf"], "a snapshot ID is 8 to 64 hex digits"),
        (["restore", "worker001", "api", "--to", "relative"], "an absolute path on the node"),
        (["restore", "worker001", "api", "--to", "/var/lib/../../etc"], "an absolute path on the node"),
        (["restore", "worker001", "api", "--to", "/tmp/a b"], "an absolute path on the node"),
        (["run", "worker001", "Api;id"], "is not an app name"),
        (["run", "-worker", "api"], "No such option"),
        (["run", "nosuch", "api"], "NODE 'nosuch' is not in the manifest"),
        (["list", "ctrl001", "api"], "APP 'api' does not run on ctrl001"),
    ],
)
def test_refused_before_any_node_is_reached(
    manifest_file: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run_cli(capsys, "--manifest", str(manifest_file), "backup", *args)
    assert code != 0
    assert message in err
    assert "Traceback" not in err


def test_the_node_command_is_the_wrapper_with_validated_arguments() -> None:
    assert backup.backup_command("db", "run") == ["/etc/nix-infra/backup/db", "run"]
    assert backup.backup_command("db", "restore", snapshot="4f2a9c1e", to="/srv/check") == [
        "/etc/nix-infra/backup/db",
        "restore",
        "--snapshot",
        "4f2a9c1e",
        "--to",
        "/srv/check",
    ]
    with pytest.raises(NixInfraError, match="options of restore"):
        backup.backup_command("db", "run", snapshot="4f2a9c1e")
    with pytest.raises(NixInfraError, match="unknown verb"):
        backup.backup_command("db", "forget")


def test_snapshots_are_read_from_restic_json() -> None:
    text = json.dumps(
        [
            {
                "id": "b" * 64,
                "short_id": "bbbbbbbb",
                "time": "2026-11-30T02:00:00Z",
                "hostname": "svc",
                "paths": ["/srv/data/backup/db"],
                "tags": ["app=db"],
            },
            {
                "id": "a" * 64,
                "short_id": "aaaaaaaa",
                "time": "2026-11-29T02:00:00Z",
                "hostname": "svc",
                "paths": ["/srv/data/backup/db"],
                "tags": None,
            },
        ]
    )
    snaps = backup.parse_snapshots(text)
    assert [s.short_id for s in snaps] == ["aaaaaaaa", "bbbbbbbb"]  # oldest first
    assert snaps[0].tags == () and snaps[1].paths == ("/srv/data/backup/db",)
    assert backup.parse_snapshots("null") == [] and backup.parse_snapshots("") == []
    with pytest.raises(NixInfraError, match="did not print JSON"):
        backup.parse_snapshots("Fatal: wrong password")
    with pytest.raises(NixInfraError, match="without an id"):
        backup.parse_snapshots('[{"short_id": "x"}]')
