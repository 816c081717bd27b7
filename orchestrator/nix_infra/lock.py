"""The cluster repo's run lock: one state-changing nix-infra command at a time per repo.

`.nix-infra/lock` under the repo is locked with flock(2), so the kernel releases
it when the holder exits, however it exits (SIGKILL included): a lock is never
left stale. While held, the file names its holder (pid, host, user, command,
since when), so the next operator is told who to wait for.

The lock is re-entrant within one process: a command that runs another step
which also takes it (e.g. `secret rotate --deploy`) does not block on itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import getpass
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nix_infra.errors import NixInfraError
from nix_infra.files import remove_stale_temp_files, write_atomically

log = logging.getLogger(__name__)

LOCK_DIR = ".nix-infra"
LOCK_FILE = "lock"
MAX_HOLDER_BYTES = 4096

_held: dict[Path, int] = {}  # resolved lock path -> nesting depth, for this process
_guard = threading.Lock()


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    user: str
    command: str
    since: str  # UTC, ISO 8601
    machine: str = ""  # machine_id() of the holder ("" when unknown): host names repeat, boot ids do not

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "pid": self.pid, "host": self.host, "user": self.user, "command": self.command, "since": self.since
        }  # fmt: skip
        if self.machine:
            data["machine"] = self.machine
        return data

    def describe(self) -> str:
        return f"`{self.command}` (pid {self.pid} on {self.host}, user {self.user}, since {self.since})"

    @classmethod
    def from_text(cls, text: str) -> Holder | None:
        """The holder a lock file names, or None when it names none (being written, or damaged)."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        pid, host, user, command, since = (data.get(k) for k in ("pid", "host", "user", "command", "since"))
        if not isinstance(pid, int) or not all(isinstance(v, str) for v in (host, user, command, since)):
            return None
        # printable only: the text comes from a file anyone with write access to the repo can edit
        clean = ["".join(c if c.isprintable() else "?" for c in str(v))[:200] for v in (host, user, command, since)]
        machine = data.get("machine")
        machine = machine if isinstance(machine, str) and _MACHINE_ID.fullmatch(machine) else ""
        return cls(pid, clean[0], clean[1], clean[2], clean[3], machine)

    def is_gone(self) -> bool:
        """True only when this holder is known to have ended: it ran on this very machine, in this
        pid namespace (same `machine`), and its pid is no longer running. Anything unsure -- another
        machine, no machine id, a pid now used by another process -- is False: only a holder we can
        see is dead is overruled (a reused pid only means waiting for the holder's lease to expire)."""
        if not self.machine or self.machine != machine_id() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # EPERM: it exists, owned by someone else
            return False
        return False


_MACHINE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/[0-9]{1,20}")


def machine_id() -> str:
    """Where a pid names one process: this boot of this kernel (its random boot id, so cloned
    machines and reboots differ) and this process's pid namespace (containers differ), as
    `<boot id>/<pid namespace inode>`; "" when either is unknown."""
    try:
        pidns = os.stat("/proc/self/ns/pid").st_ino
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
    return f"{boot}/{pidns}" if _MACHINE_ID.fullmatch(f"{boot}/{pidns}") else ""


def me(command: str) -> Holder:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return Holder(os.getpid(), socket.gethostname(), user, command, now, machine_id())


def lock_path(repo: Path) -> Path:
    return repo / LOCK_DIR / LOCK_FILE


def current_holder(repo: Path) -> Holder | None:
    """Who holds the repo's lock now, or None when nobody does."""
    path = lock_path(repo)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return Holder.from_text(os.read(fd, MAX_HOLDER_BYTES).decode("utf-8", "replace"))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def repo_lock(repo: Path, command: str) -> Iterator[None]:
    """Hold the repo's run lock for the block, or fail at once naming who holds it."""
    directory = repo / LOCK_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
        ignore = directory / ".gitignore"
        if not ignore.is_file() or not ignore.read_bytes():  # also: one a kill left empty
            write_atomically(ignore, b"*\n")  # the lock is this machine's business, never committed
    except OSError as exc:
        raise NixInfraError(f"{directory}: cannot create the run lock's directory ({exc.strerror})") from None
    path = lock_path(repo).resolve()
    with _guard:
        if path in _held:
            _held[path] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[path] -= 1
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise NixInfraError(f"{path}: cannot open the run lock ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Holder.from_text(os.pread(fd, MAX_HOLDER_BYTES, 0).decode("utf-8", "replace"))
            who = holder.describe() if holder else "another nix-infra process (it has not said which yet)"
            raise NixInfraError(
                f"the cluster repo {repo} is busy: {who} holds its run lock ({path}). "
                "Wait for it to finish and run this again; the lock goes when that process ends, "
                "also if it is killed."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me(command).to_json()) + "\n").encode(), 0)
        with _guard:
            _held[path] = 1
        try:
            _clean(repo)
            yield
        finally:
            with _guard:
                del _held[path]
            os.ftruncate(fd, 0)  # nobody holds it any more: name nobody
    finally:
        os.close(fd)  # releases the flock


def _clean(repo: Path) -> None:
    """Remove what killed runs left: temp files of cut-off writes (old ciphertext among them)."""
    removed = remove_stale_temp_files([repo / "secrets", repo / "facts", repo / LOCK_DIR], recursive=False)
    removed += remove_stale_temp_files([repo / "pki"])  # pki/nodes/<node>/...
    if removed:
        log.warning(
            "removed %d temp file(s) left by an interrupted run: %s",
            len(removed),
            ", ".join(str(p.relative_to(repo)) for p in removed),
        )


F = TypeVar("F", bound=Callable[..., Any])


def locked(repo_of: Callable[..., Path]) -> Callable[[F], F]:
    """Decorate a click command callback: hold the run lock of `repo_of(*args, **kwargs)` around it.

    The command is named by click's command path (`nix-infra secret set`), never by its
    arguments, so no value given on the command line lands in the lock file."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            import click

            ctx = click.get_current_context(silent=True)
            command = ctx.command_path if ctx is not None else fn.__name__
            with repo_lock(repo_of(*args, **kwargs), command):
                return fn(*args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap


def _opts_repo(opts: Any, *args: Any, **kwargs: Any) -> Path:
    repo: Path = opts.repo_dir()  # nix_infra.options.Options
    return repo


in_repo_lock = locked(_opts_repo)
"""For commands whose first argument is the Options (click.pass_obj): lock `opts.repo_dir()`."""
