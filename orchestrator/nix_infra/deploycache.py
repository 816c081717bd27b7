"""No-op deploys do no work: what each node's last successful deploy left running, keyed by
everything that determined it, so an unchanged flake is neither evaluated nor built again.

The source key (`source_key`, hex SHA-256) covers what decides a node's system path:

  the flake's source   a git flake (a path inside a git work tree, or git+file:): every file git
                       tracks (`git ls-files`: what Nix copies), with its working-tree content
                       (dirty trees included), mode and symlink target; untracked files are
                       left out, as Nix leaves them out. A path: flake (or a directory outside
                       git): every file under it, but the orchestrator's own run state
                       (.nix-infra/, rewritten by every run). The manifest, facts/, secrets/
                       and pki/ files the flake reads are files of that tree.
  the lock             flake.lock as it is on disk (also when git does not track it yet), and the
                       trees of its `path` inputs (a path input's content may change under an
                       unchanged lock entry)
  the tools            nix-infra's version and the digest of its own code, `nix --version`, the
                       machine and OS, NIX_CONFIG and the nix.conf files Nix reads, and every
                       NIX_INFRA_* setting but those that only tune timing (BUILD_NEUTRAL_SETTINGS)
  the reference        the flake reference as given (so `?dir=` is in it); a remote reference
                       (github:..., or git+file: with ref=/rev=) has no key: always evaluated

The cache lives in the cluster repo's state directory, `.nix-infra/deployed.json` (the run
lock's directory: never committed; a running sandbox's in `.nix-infra/sandbox/`, removed with
it), written whole or not at all (files.write_atomically):

  {"version": 1,
   "nodes": {NODE: {"key": HEX, "system": "/nix/store/...", "recorded": ISO-8601 UTC}},
   "manifest": {"key": HEX, "data": {...the evaluated manifest...}}}

A node's entry is written only after its deploy succeeded and was verified (the node confirmed
its activation and passed the health gate, or the probe found it running that system), with
the system that is now active there. A hit is still checked: deploy's probe (one connection)
asks the node what it runs; anything else than the recorded system (a rollback, a switch by
hand) and the node is built and deployed as without a cache. A crash between an activation and
the write leaves the old entry, whose key no longer matches or whose system no longer runs:
the next run evaluates again, never a false no-op.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
import platform
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import nix_infra
from nix_infra.activate import STORE_PATH
from nix_infra.errors import NixInfraError
from nix_infra.files import write_atomically
from nix_infra.lock import LOCK_DIR
from nix_infra.process import run

log = logging.getLogger(__name__)

CACHE_FILE = "deployed.json"
FORMAT = 1
# NIX_INFRA_* settings that change how long nix-infra waits, never what is built; every other
# one (also one added later) is part of the key
BUILD_NEUTRAL_SETTINGS = frozenset(
    {
        "NIX_INFRA_HCLOUD_ACTION_TIMEOUT",
        "NIX_INFRA_HCLOUD_BACKOFF",
        "NIX_INFRA_HCLOUD_POLL_INTERVAL",
        "NIX_INFRA_POLL_INTERVAL",
        "NIX_INFRA_REBOOT_TIMEOUT",
        "NIX_INFRA_SSH_CONNECT_TIMEOUT",
        "NIX_INFRA_NO_CACHE",
    }
)
NO_CACHE_ENV = "NIX_INFRA_NO_CACHE"


def cache_disabled(environ: Mapping[str, str]) -> bool:
    """NIX_INFRA_NO_CACHE=1 (or true/yes) bypasses the cache; 0/false/no/empty keeps it."""
    value = environ.get(NO_CACHE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise NixInfraError(f"{NO_CACHE_ENV}={value[:20]!r} is not 1 or 0 (true/false, yes/no)")


@dataclass(frozen=True)
class FlakeSource:
    """Where a local flake's files are and how Nix picks them: `git` (tracked files of the work
    tree at `root`) or `path` (every file under `root`)."""

    kind: str  # "git" | "path"
    root: Path


def _git_toplevel(directory: Path) -> Path | None:
    for d in (directory, *directory.parents):
        if (d / ".git").exists():
            return d
    return None


def flake_source(ref: str) -> FlakeSource | None:
    """How Nix reads the flake `ref`, or None when it is not a local tree this machine can hash
    (github:, https:, a git ref pinned by ref=/rev=, which Nix fetches from history)."""
    if ref.startswith("path:"):
        parts = urlsplit(ref)
        directory = Path(unquote(ref[len("path:") :].split("?", 1)[0]))
        query = parse_qs(parts.query)
        if set(query) - {"dir"} or not directory.is_dir():
            return None
        return FlakeSource("path", directory.resolve())
    if ref.startswith("git+file:"):
        parts = urlsplit(ref)
        query = parse_qs(parts.query)
        if set(query) - {"dir"}:
            return None
        directory = Path(unquote(parts.path))
        return FlakeSource("git", directory.resolve()) if directory.is_dir() else None
    if ":" in ref.split("/", 1)[0] or "?" in ref:  # another scheme, or a query on a bare path
        return None
    directory = Path(ref)
    if not directory.is_dir():
        return None
    resolved = directory.resolve()
    top = _git_toplevel(resolved)
    return FlakeSource("git", top) if top is not None else FlakeSource("path", resolved)


def _hash_entry(h: Any, root: Path, relative: str) -> None:
    """Feed one file's name, kind, mode and content into `h` (a missing file counts as such)."""
    path = root / relative
    h.update(b"\0F" + relative.encode("utf-8", "surrogateescape") + b"\0")
    try:
        st = path.lstat()
    except FileNotFoundError:
        h.update(b"missing")
        return
    if stat.S_ISLNK(st.st_mode):
        h.update(b"link\0" + os.readlink(path).encode("utf-8", "surrogateescape"))
    elif stat.S_ISREG(st.st_mode):
        h.update(b"exec\0" if st.st_mode & 0o111 else b"file\0")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        h.update(digest.digest())
    elif stat.S_ISDIR(st.st_mode):
        h.update(b"dir")  # a git submodule: Nix leaves it out unless asked (submodules=1)
    else:
        h.update(b"special")


def git_files(root: Path) -> list[str]:
    """The files git tracks in the work tree at `root` (those in its index), as Nix copies them."""
    result = run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--"], what=f"listing the files git tracks in {root}"
    )
    return sorted({name for name in result.stdout_bytes.decode("utf-8", "surrogateescape").split("\0") if name})


def tree_files(root: Path, skip_top: Iterable[str] = ()) -> list[str]:
    """Every file, symlink and directory under `root` (Nix copies empty directories too), relative,
    sorted; top-level names in `skip_top` left out."""
    skipped = set(skip_top)
    found: list[str] = []
    for directory, dirs, names in os.walk(root):
        rel = os.path.relpath(directory, root)
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in skipped]
            names = [n for n in names if n not in skipped]
        # a symlink to a directory is a symlink (Nix copies the link, not its target)
        links = [d for d in dirs if os.path.islink(os.path.join(directory, d))]
        dirs[:] = [d for d in dirs if d not in links]
        found += [n if rel == "." else f"{rel}/{n}" for n in (*names, *links, *dirs)]
    return sorted(found)


def tree_digest(source: FlakeSource) -> str:
    """The digest of the files Nix sees in `source` (see the module doc)."""
    h = hashlib.sha256(f"{source.kind}\0".encode())
    files = git_files(source.root) if source.kind == "git" else tree_files(source.root, skip_top=(LOCK_DIR,))
    for name in files:
        _hash_entry(h, source.root, name)
    return h.hexdigest()


def _flake_dir(ref: str, source: FlakeSource) -> Path:
    """The directory holding flake.nix (the tree's root, or its ?dir= subdirectory; a bare path
    inside a git work tree is that path)."""
    if ref.startswith(("path:", "git+file:")):
        sub = parse_qs(urlsplit(ref).query).get("dir", [""])[0]
        return source.root / sub if sub else source.root
    return Path(ref).resolve()


def lock_digest(flake_dir: Path) -> str:
    """flake.lock's content, and the trees of its `path` inputs (relative ones from `flake_dir`)."""
    h = hashlib.sha256(b"lock\0")
    lock = flake_dir / "flake.lock"
    try:
        data = lock.read_bytes()
    except FileNotFoundError:
        return h.hexdigest()
    h.update(data)
    try:
        nodes = json.loads(data).get("nodes", {})
    except (ValueError, AttributeError):
        return h.hexdigest()  # Nix refuses it; nothing gets built, so nothing gets cached either
    for name, node in sorted(nodes.items()) if isinstance(nodes, dict) else []:
        locked = node.get("locked") if isinstance(node, dict) else None
        if not isinstance(locked, dict) or locked.get("type") != "path" or not isinstance(locked.get("path"), str):
            continue
        path = (flake_dir / locked["path"]).resolve()
        h.update(f"\0input {name} {path}\0".encode())
        h.update(tree_digest(FlakeSource("path", path)).encode() if path.is_dir() else b"missing")
    return h.hexdigest()


@functools.cache
def _own_code_digest() -> str:
    """nix-infra's version and a digest of its own files (an upgrade or a local change invalidates)."""
    package = Path(nix_infra.__file__).resolve().parent
    h = hashlib.sha256(f"nix-infra {nix_infra.__version__}\0".encode())
    for name in tree_files(package):
        if "__pycache__" not in name.split("/"):
            _hash_entry(h, package, name)
    return h.hexdigest()


@functools.cache
def _nix_version() -> str:
    return run(["nix", "--version"], what="asking nix for its version").stdout.strip()


def _nix_conf_files(environ: Mapping[str, str]) -> list[Path]:
    system = Path(environ.get("NIX_CONF_DIR", "/etc/nix")) / "nix.conf"
    if "NIX_USER_CONF_FILES" in environ:
        user = [Path(p) for p in environ["NIX_USER_CONF_FILES"].split(":") if p]
    else:
        config = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "/")) / ".config")
        dirs = [d for d in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":") if d]
        user = [Path(config) / "nix" / "nix.conf", *(Path(d) / "nix" / "nix.conf" for d in dirs)]
    return [system, *user]


def _hash_nix_conf(h: Any, path: Path, depth: int = 0) -> None:
    """Feed `path` and, as Nix reads them, the files it `include`s or `!include`s (relative to its
    directory) into `h`; a missing file counts as "absent"."""
    try:
        data = path.read_bytes()
    except OSError:
        h.update(b"absent\0")
        return
    h.update(data + b"\0")
    if depth >= 8:  # Nix has no limit; a loop of includes must not hang the key
        return
    for line in data.decode("utf-8", "replace").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 2 and words[0] in ("include", "!include"):
            _hash_nix_conf(h, path.parent / words[1], depth + 1)


def tools_digest(environ: Mapping[str, str]) -> str:
    """What besides the flake decides a build: nix-infra, Nix and its settings, this machine."""
    h = hashlib.sha256(b"tools\0")
    parts = [_own_code_digest(), _nix_version(), platform.machine(), platform.system()]
    parts.append(environ.get("NIX_CONFIG", ""))
    parts += [
        f"{k}={v}" for k, v in sorted(environ.items()) if k.startswith("NIX_INFRA_") and k not in BUILD_NEUTRAL_SETTINGS
    ]
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    for conf in _nix_conf_files(environ):
        _hash_nix_conf(h, conf)
    return h.hexdigest()


def source_key(ref: str, environ: Mapping[str, str]) -> str | None:
    """The key of everything that decides the flake's systems (see the module doc), or None when
    the flake is not a local tree (then nothing is cached)."""
    source = flake_source(ref)
    if source is None:
        return None
    h = hashlib.sha256(f"nix-infra deploy cache {FORMAT}\0{ref}\0".encode())
    try:
        parts = (tree_digest(source), lock_digest(_flake_dir(ref, source)), tools_digest(environ))
    except (NixInfraError, OSError) as exc:  # an unreadable file, git refusing the repo: no cache
        message = exc.message if isinstance(exc, NixInfraError) else str(exc)
        log.warning("deploy cache not used (every node is evaluated and built): %s", message.splitlines()[0])
        return None
    for part in parts:
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def node_key(key: str, node: str, system_attr: str) -> str:
    """A node's key: the source key and the attribute its system is built from."""
    return hashlib.sha256(f"{key}\0{node}\0{system_attr}".encode()).hexdigest()


class DeployCache:
    """`deployed.json` in a state directory (module doc): the cluster repo's `.nix-infra/`, or a
    running sandbox's `.nix-infra/sandbox/` (its servers, gone with `sandbox down`). Thread-safe
    within a process, written only while the repo's run lock is held (deploy holds it)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CACHE_FILE
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"version": FORMAT, "nodes": {}}
        except (OSError, ValueError, RecursionError):  # damaged (or nested past json's depth): a miss
            return {"version": FORMAT, "nodes": {}}  # rewritten on the next record
        if not isinstance(data, dict) or data.get("version") != FORMAT or not isinstance(data.get("nodes"), dict):
            return {"version": FORMAT, "nodes": {}}
        return data

    def _write(self, data: dict[str, Any]) -> None:
        try:
            write_atomically(self.path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(), mode=0o600)
        except OSError as exc:
            raise NixInfraError(f"{self.path}: cannot write the deploy cache ({exc.strerror})") from None

    def lookup(self, node: str, key: str) -> str | None:
        """The system the node's last verified deploy under `key` left active, or None (a miss)."""
        with self._lock:
            entry = self._read()["nodes"].get(node)
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        system = entry.get("system")
        return system if isinstance(system, str) and STORE_PATH.fullmatch(system) else None

    def record(self, systems: Mapping[str, tuple[str, str]]) -> None:
        """Record {node: (key, system now active and verified)} in one write."""
        if not systems:
            return
        now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        with self._lock:
            data = self._read()
            for node, (key, system) in systems.items():
                if not STORE_PATH.fullmatch(system):
                    raise NixInfraError(f"{node}: {system!r} is not a store path; not recorded")
                data["nodes"][node] = {"key": key, "system": system, "recorded": now}
            self._write(data)

    def forget(self, nodes: Iterable[str]) -> None:
        """Drop the nodes' entries (their next deploy evaluates and builds)."""
        with self._lock:
            data = self._read()
            dropped = [n for n in nodes if data["nodes"].pop(n, None) is not None]
            if dropped:
                self._write(data)

    def manifest(self, key: str) -> dict[str, Any] | None:
        """The manifest evaluated under `key`, or None."""
        with self._lock:
            entry = self._read().get("manifest")
        if isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("data"), dict):
            data: dict[str, Any] = entry["data"]
            return data
        return None

    def record_manifest(self, key: str, data: Mapping[str, Any]) -> None:
        with self._lock:
            cache = self._read()
            cache["manifest"] = {"key": key, "data": data}
            self._write(cache)


@dataclass(frozen=True)
class CacheUse:
    """The cache as one deploy uses it: the store, the source key at the start of the run, and
    how to compute the key again (a tree edited while Nix evaluated it records nothing)."""

    store: DeployCache
    key: str
    rekey: Callable[[], str | None]

    def node_key(self, node: str, system_attr: str) -> str:
        return node_key(self.key, node, system_attr)

    def again(self) -> CacheUse | None:
        """The cache keyed by the sources as they are now (a step of the run wrote to the tree:
        provisioning's and the install's facts, issued certificates)."""
        key = self.rekey()
        return None if key is None else CacheUse(self.store, key, self.rekey)

    def still_valid(self) -> bool:
        """Whether the sources are still those of the key (after an evaluation read them)."""
        return self.rekey() == self.key


def cache_use(state_dir: Path, flake: str, environ: Mapping[str, str]) -> CacheUse | None:
    """The cache in `state_dir` for the local flake `flake`; None when the flake is not a local
    tree (nothing to key it by)."""
    key = source_key(flake, environ)
    if key is None:
        return None
    return CacheUse(DeployCache(state_dir), key, lambda: source_key(flake, environ))
