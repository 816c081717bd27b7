"""Writing the cluster repo's files: whole or not at all, and no litter left behind.

A write goes to a temp file next to its target, named `.<target>.nix-infra-tmp.<random>`, and is
renamed over the target. A process killed in between leaves that temp file; the next run that
holds the repo's lock removes it (`remove_stale_temp_files`), so no old ciphertext (readable by
a recipient `secret rekey` has since dropped) or half-written file stays in the repo.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

TEMP_MARK = ".nix-infra-tmp."
# what write_atomically left before temp files were marked: mkstemp's ".<name>.<8 random chars>"
_LEGACY_TEMP = re.compile(r"\.(?P<name>[^/]+\.(age|crt|json|txt)|known_hosts)\.[a-z0-9_]{8}")


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` in one rename, so a crash leaves the old file or the new one.

    The default mode is for what the repo holds: public data or ciphertext, committed to git.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename durable: without this a power cut may bring the old file back."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temp_file(name: str) -> bool:
    """Whether a file name is one of write_atomically's temp files (this version's or an older one's)."""
    if name.startswith(".") and TEMP_MARK in name:
        return True
    return _LEGACY_TEMP.fullmatch(name) is not None


def stale_temp_files(directories: Iterable[Path], recursive: bool = True) -> list[Path]:
    """The temp files in `directories` (and below, if `recursive`): litter of writes that were cut off."""
    found: list[Path] = []
    for directory in directories:
        if not directory.is_dir() or directory.is_symlink():
            continue
        if not recursive:
            found.extend(p for p in directory.iterdir() if p.is_file() and is_temp_file(p.name))
            continue
        for root, dirs, names in os.walk(directory):
            dirs[:] = [d for d in dirs if not d.startswith(".git")]
            found.extend(Path(root) / n for n in names if is_temp_file(n))
    return sorted(found)


def remove_stale_temp_files(directories: Iterable[Path], recursive: bool = True) -> list[Path]:
    """Delete the temp files in `directories`; only call it while holding the lock every writer
    there holds (else a write in progress loses its temp file). Returns what was removed."""
    removed = []
    for path in stale_temp_files(directories, recursive):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed
