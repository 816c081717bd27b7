"""modules/scripts/stage-container-secrets.sh, the ExecStartPre of a container
unit with secrets (modules/apps.nix): the unit's decrypted credentials, which
systemd makes root-only 0400, are staged on tmpfs for the container's user, so
an image whose USER is not root can read /run/secrets/<name> (issue 11, 10).
Run for real as root; the reads are done as the container's uid with setpriv."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = REPO / "modules" / "scripts" / "stage-container-secrets.sh"
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")


def stage(src: Path, dst: Path, owner: str, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), str(src), str(dst), owner, "--", *names], capture_output=True, text=True, check=False
    )


def read_as(uid: int, gid: int, path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "cat", "--", str(path)],
        capture_output=True,
        check=False,
    )


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    # pytest's base directory is root-only; the container's uid must reach the
    # staged files by name (in a container, the file is bind-mounted instead)
    path = Path(tempfile.mkdtemp(prefix="nix-infra-secrets-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    # what systemd gives the unit: root-only files in $CREDENTIALS_DIRECTORY
    src = tmp_path / "credentials"
    src.mkdir(mode=0o700)
    (src / "api-token").write_bytes(b"s3cret\n\x00binary")
    (src / "db-url").write_bytes(b"postgres://app@127.0.0.1:15432/app")
    for f in src.iterdir():
        f.chmod(0o400)
    return src


def test_the_containers_user_reads_its_secrets_and_nobody_else(credentials: Path, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o755)
    dst = tmp_path / "run" / "api"
    proc = stage(credentials, dst, "1000:1001", "api-token", "db-url")
    assert proc.returncode == 0, proc.stderr
    # before: the container's user could not read the unit's credentials
    assert read_as(1000, 1001, credentials / "api-token").returncode != 0
    for name in ("api-token", "db-url"):
        st = (dst / name).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1001, 0o400)
        seen = read_as(1000, 1001, dst / name)
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout == (credentials / name).read_bytes()
        assert read_as(1002, 1002, dst / name).returncode != 0
    assert sorted(p.name for p in dst.iterdir()) == ["api-token", "db-url"]  # no temp files left
    assert (dst.stat().st_mode & 0o777) == 0o711


def test_root_by_default_and_a_uid_alone_means_its_own_group(credentials: Path, tmp_path: Path) -> None:
    assert stage(credentials, tmp_path / "a", "", "api-token").returncode == 0
    st = (tmp_path / "a" / "api-token").stat()
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert stage(credentials, tmp_path / "b", "1000", "api-token").returncode == 0
    st = (tmp_path / "b" / "api-token").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)


@pytest.mark.parametrize(
    ("owner", "names", "says"),
    [
        ("app", ["api-token"], "is not uid[:gid]"),
        ("1000;id", ["api-token"], "is not uid[:gid]"),
        ("1000", ["../etc/shadow"], "not a safe file name"),
        ("1000", ["-rf"], "not a safe file name"),
        ("1000", ["missing"], "credential missing is missing"),
    ],
)
def test_bad_arguments_are_refused_and_name_the_problem(
    credentials: Path, tmp_path: Path, owner: str, names: list[str], says: str
) -> None:
    proc = stage(credentials, tmp_path / "out", owner, *names)
    assert proc.returncode == 2
    assert says in proc.stderr


def test_a_link_planted_as_the_destination_is_refused(credentials: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (tmp_path / "dst").symlink_to(elsewhere)
    proc = stage(credentials, tmp_path / "dst", "1000", "api-token")
    assert proc.returncode == 2 and "is a symbolic link" in proc.stderr
    assert list(elsewhere.iterdir()) == []
    assert (elsewhere.stat().st_mode & 0o777) == 0o755


def test_a_directory_in_the_way_is_replaced_by_the_file(credentials: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    (dst / "api-token").mkdir(parents=True)
    proc = stage(credentials, dst, "1000", "api-token")
    assert proc.returncode == 0, proc.stderr
    assert (dst / "api-token").is_file()
    assert (dst / "api-token").read_bytes() == (credentials / "api-token").read_bytes()
    assert sorted(p.name for p in dst.iterdir()) == ["api-token"]


def test_ids_beyond_what_the_kernel_allows_are_refused(credentials: Path, tmp_path: Path) -> None:
    proc = stage(credentials, tmp_path / "dst", "4294967295", "api-token")
    assert proc.returncode == 2 and "above 4294967294" in proc.stderr
    assert not (tmp_path / "dst").exists()
