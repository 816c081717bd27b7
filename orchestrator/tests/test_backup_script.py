"""The node-side scripts of volumes and backups, run here: modules/scripts/backup.sh on a local
restic repository (kind files: the unit stopped, the paths' contents replaced, the unit
started; credentials from $CREDENTIALS_DIRECTORY as in the unit; hostile arguments refused)
and modules/scripts/format-volume.sh on image files (formats a blank volume, never a used one)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BACKUP = REPO / "modules" / "scripts" / "backup.sh"
FORMAT = REPO / "modules" / "scripts" / "format-volume.sh"

needs_restic = pytest.mark.skipif(shutil.which("restic") is None, reason="restic (bin/setup installs it)")


def _env(tmp_path: Path, data: Path) -> dict[str, str]:
    creds = tmp_path / "creds"
    creds.mkdir(exist_ok=True)
    (creds / "files-backup-repository").write_text(str(tmp_path / "repo"))
    (creds / "files-backup-password").write_text("pw")
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    # systemctl stand-in: records what a restore does to the app's unit
    (stub / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/systemctl.log\n')
    (stub / "systemctl").chmod(0o755)
    return {
        "PATH": f"{stub}:{os.environ['PATH']}",
        "CREDENTIALS_DIRECTORY": str(creds),
        "NIX_INFRA_BACKUP_APP": "files",
        "NIX_INFRA_BACKUP_LOCK_DIR": str(tmp_path),
        "NIX_INFRA_BACKUP_KIND": "files",
        "NIX_INFRA_BACKUP_PATHS": str(data),
        "NIX_INFRA_BACKUP_UNIT": "app-files.service",
        "NIX_INFRA_BACKUP_REPOSITORY_SECRET": "files-backup-repository",
        "NIX_INFRA_BACKUP_PASSWORD_SECRET": "files-backup-password",
        "NIX_INFRA_BACKUP_CREDENTIALS_DIR": str(tmp_path / "no-such-dir"),
        "RESTIC_CACHE_DIR": str(tmp_path / "cache"),
    }


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(BACKUP), *args], env=env, capture_output=True, text=True, timeout=120)


@needs_restic
def test_files_backup_and_restore_replace_the_contents(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a").write_text("one")
    (data / ".hidden").write_text("dot")
    env = _env(tmp_path, data)
    run = _run(env, "run")
    assert run.returncode == 0, run.stderr
    assert "initialising the repository" in run.stderr
    (data / "a").write_text("changed")
    (data / ".hidden").unlink()
    (data / "new").write_text("not in the snapshot")
    restore = _run(env, "restore")
    assert restore.returncode == 0, restore.stderr
    assert sorted(p.name for p in data.iterdir()) == [".hidden", "a"]
    assert (data / "a").read_text() == "one"
    assert (tmp_path / "systemctl.log").read_text().splitlines() == [
        "stop -- app-files.service",
        "start -- app-files.service",
    ]
    listing = _run(env, "list")
    assert listing.returncode == 0 and f'"app={env["NIX_INFRA_BACKUP_APP"]}"' in listing.stdout


@needs_restic
def test_one_run_at_a_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = _env(tmp_path, data)
    lock = str(tmp_path / "nix-infra-backup-files.lock")
    # another run of the app (the timer's) holds the lock
    holder = subprocess.Popen(["flock", lock, "sleep", "60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["flock", "-n", lock, "true"]).returncode == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for args in (["run"], ["restore"], ["check"]):
            p = _run(env, *args)
            assert p.returncode == 2 and "another backup, restore or check of" in p.stderr, p.stderr
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep, which holds the lock too
        holder.wait()
    assert _run(env, "run").returncode == 0


@needs_restic
def test_list_and_restore_never_create_a_repository(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = _env(tmp_path, data)
    for args in (["list"], ["restore"], ["check"]):
        p = _run(env, *args)
        assert p.returncode == 2 and "there is no repository yet" in p.stderr, p.stderr
    assert not (tmp_path / "repo").exists()
    assert not (tmp_path / "systemctl.log").exists()


@needs_restic
def test_a_snapshot_of_another_app_is_refused_before_the_unit_stops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a").write_text("one")
    env = _env(tmp_path, data)
    assert _run(env, "run").returncode == 0
    other = env | {"NIX_INFRA_BACKUP_PATHS": str(tmp_path / "elsewhere")}
    p = _run(other, "restore", "--snapshot", "latest")
    assert p.returncode != 0
    assert not (tmp_path / "systemctl.log").exists()
    assert (data / "a").read_text() == "one"


@needs_restic
@pytest.mark.parametrize(
    ("args", "overrides", "message"),
    [
        (["restore", "--snapshot", "$(id)"], {}, "--snapshot must be a snapshot ID"),
        (["restore", "--to", "relative/path"], {}, "--to must be an absolute path"),
        (["restore", "--to", "/tmp/../etc"], {}, "--to must be an absolute path"),
        (["restore", "--to", "/"], {}, "--to must be an absolute path other than /"),
        (["restore", "--bogus"], {}, "unknown argument '--bogus'"),
        (["destroy"], {}, "usage: backup.sh"),
        (["run"], {"NIX_INFRA_BACKUP_APP": "../x"}, "NIX_INFRA_BACKUP_APP must be an app name"),
        (["run"], {"NIX_INFRA_BACKUP_KIND": "mysql"}, "NIX_INFRA_BACKUP_KIND must be postgresql, valkey or files"),
        (["run"], {"NIX_INFRA_BACKUP_PATHS": "relative"}, "'relative' is not an absolute path"),
        (["run"], {"NIX_INFRA_BACKUP_PASSWORD_SECRET": "../../etc/shadow"}, "bad credential name"),
        (["run"], {"NIX_INFRA_BACKUP_REPOSITORY_SECRET": "missing"}, "credential missing is not on this node"),
        (["run"], {"NIX_INFRA_BACKUP_LIMIT_UPLOAD": "1; rm -rf /"}, "NIX_INFRA_BACKUP_LIMIT_UPLOAD must be KiB/s"),
    ],
)
def test_hostile_arguments_are_refused(
    tmp_path: Path, args: list[str], overrides: dict[str, str], message: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = _env(tmp_path, data) | overrides
    p = _run(env, *args)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr
    assert not (tmp_path / "systemctl.log").exists()


needs_mkfs = pytest.mark.skipif(shutil.which("mkfs.ext4") is None or shutil.which("blkid") is None, reason="e2fsprogs")


def _uuid(image: Path) -> str:
    return subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "UUID", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()


@needs_mkfs
def test_format_volume_formats_a_blank_volume_once(tmp_path: Path) -> None:
    image = tmp_path / "volume.img"
    with image.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    first = subprocess.run(["bash", str(FORMAT), str(image), "ext4", "1"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    uuid = _uuid(image)
    assert uuid
    again = subprocess.run(["bash", str(FORMAT), str(image), "xfs", "1"], capture_output=True, text=True)
    assert again.returncode == 0 and "left as it is" in again.stderr
    assert _uuid(image) == uuid  # never reformatted, not even for another fsType


@needs_mkfs
def test_format_volume_refuses_data_it_does_not_recognise(tmp_path: Path) -> None:
    image = tmp_path / "volume.img"
    image.write_bytes(b"\0" * 4096 + os.urandom(1024) + b"\0" * (8 * 1024 * 1024))
    p = subprocess.run(["bash", str(FORMAT), str(image), "ext4", "1"], capture_output=True, text=True)
    assert p.returncode == 1 and "refusing to format" in p.stderr
    assert _uuid_or_none(image) is None


def _uuid_or_none(image: Path) -> str | None:
    p = subprocess.run(["blkid", "-p", "-o", "value", "-s", "UUID", str(image)], capture_output=True, text=True)
    return p.stdout.strip() or None


def test_format_volume_waits_for_the_device_then_fails(tmp_path: Path) -> None:
    p = subprocess.run(["bash", str(FORMAT), str(tmp_path / "absent"), "ext4", "0"], capture_output=True, text=True)
    assert p.returncode == 1 and "did not appear" in p.stderr
