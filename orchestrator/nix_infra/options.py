"""The global command-line options and what they resolve to (repo, facts, SSH, identity)."""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nix_infra.agestore import Identity, identity_path, load_identity
from nix_infra.deploy import SshSettings
from nix_infra.errors import NixInfraError
from nix_infra.facts import FactsStore
from nix_infra.lock import LOCK_DIR
from nix_infra.manifest import DNS_LABEL_RULE, Manifest, is_dns_label, load_manifest_file, load_manifest_flake

if TYPE_CHECKING:
    from hcloud import Client

    from nix_infra.hetzner.model import Desired


# ---- what command-line values may be: checked where they enter (click), before any use ----------

_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]*")  # no control characters (newline, NUL, escape)
_ACTION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
ETCD_KEY_MAX = 4096


def seconds_from_env(name: str, value: str) -> float:
    """A positive, finite number of seconds from an environment variable (float() takes nan and inf)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise NixInfraError(f"{name}={value[:40]!r} is not a number of seconds (a positive number such as 0.5)")
    return number


def check_flake_ref(ref: str) -> str:
    """A flake reference for `nix eval/build REF#attr`: one argument that nix must not take for an
    option, nor a line of control characters."""
    if not ref or ref.startswith("-") or not _PRINTABLE.fullmatch(ref) or "#" in ref:
        raise NixInfraError(
            f"{ref!r} is not a flake reference (such as '.', 'path:/srv/infra' or 'github:acme/infra'); "
            "it may not be empty, start with '-', contain '#' or control characters"
        )
    return ref


def check_node_name(name: str) -> str:
    if not is_dns_label(name):
        raise NixInfraError(f"{name!r} is not a node name; a node name is {DNS_LABEL_RULE}")
    return name


def check_cluster_name(name: str) -> str:
    if not is_dns_label(name):
        raise NixInfraError(f"{name!r} is not a cluster name; a cluster name is {DNS_LABEL_RULE}")
    return name


def check_app_name(name: str) -> str:
    if not is_dns_label(name):
        raise NixInfraError(f"{name!r} is not an app name; an app name is {DNS_LABEL_RULE}")
    return name


def check_action_name(name: str) -> str:
    """A file name under /etc/nix-infra/actions/APP/ (and never an `env` assignment: no '=')."""
    if _ACTION.fullmatch(name) is None:
        raise NixInfraError(
            f"{name!r} is not an action name; an action name is 1-128 letters, digits, '.', '_', '-', "
            "not starting with '.' or '-'"
        )
    return name


def check_env_pair(item: str) -> str:
    key, sep, value = item.partition("=")
    if not sep or _ENV_KEY.fullmatch(key) is None or "\x00" in value:
        raise NixInfraError(
            f"{item!r} is not KEY=VALUE with KEY of letters, digits and '_' (not starting with a digit) "
            "and a VALUE without NUL"
        )
    return item


def check_etcd_key(key: str) -> str:
    """An etcd key or prefix the CLI reads or writes: absolute ('/...'), printable, bounded."""
    if not key.startswith("/") or not _PRINTABLE.fullmatch(key) or len(key) > ETCD_KEY_MAX:
        raise NixInfraError(
            f"{key[:60]!r} is not an etcd key; a key starts with '/', has no control characters "
            f"and at most {ETCD_KEY_MAX} characters (e.g. /cluster/nodes/)"
        )
    return key


def check_endpoint(url: str) -> str:
    """An etcd endpoint, by the etcd client's own rule (https://HOST:PORT, TLS only)."""
    from nix_infra.etcd import parse_endpoint

    if not _PRINTABLE.fullmatch(url):
        raise NixInfraError(f"{url[:60]!r} is not https://HOST:PORT: it contains control characters")
    parse_endpoint(url)
    return url


def local_flake_dir(ref: str) -> Path | None:
    """The directory of a flake reference to a local path ('.', 'path:/srv/infra',
    'git+file:///srv/infra'), else None (e.g. 'github:acme/infra')."""
    local = ref.removeprefix("path:").removeprefix("git+file://").split("?")[0]
    if ":" not in local and _is_dir(Path(local)):
        return Path(local)
    return None


def find_repo_root(start: Path) -> Path | None:
    """The cluster repo containing `start`: the nearest directory at or above it with a flake.nix."""
    try:
        here = start.resolve()
    except OSError:
        return None
    for directory in (here, *here.parents):
        try:
            if (directory / "flake.nix").is_file():
                return directory
        except OSError:
            return None
    return None


def at_repo_root(opts: Options) -> Options:
    """The options with --flake pointing at the cluster repo's root when it names a directory
    inside one (`cd app_modules && nix-infra plan` evaluates the repo's flake, not a missing one)."""
    if opts.manifest_file is not None:
        return opts
    local = local_flake_dir(opts.flake)
    if local is None or (local / "flake.nix").is_file():
        return opts
    root = find_repo_root(local)
    return opts if root is None else replace(opts, flake=str(root))


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long for the OS is no directory either
        return False


class SafePath(click.Path):
    """click.Path that refuses a name the OS cannot take (a NUL byte) as a usage error, not a traceback."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and "\x00" in value:
            self.fail(f"{value!r} contains a NUL byte; a file name cannot", param, ctx)
        try:
            return super().convert(value, param, ctx)
        except ValueError as exc:  # e.g. os.stat on a name the OS refuses
            self.fail(f"{value!r}: {exc}", param, ctx)


def param(check: Callable[[str], str]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that runs `check` on the value (each value of a multiple/nargs one); its
    message becomes click's usage error, which names the option or argument."""

    def callback(ctx: click.Context, p: click.Parameter, value: Any) -> Any:
        try:
            if value is None:
                return None
            if isinstance(value, tuple):
                return tuple(check(v) for v in value)
            return check(value)
        except NixInfraError as exc:
            raise click.BadParameter(exc.message, ctx=ctx, param=p) from None

    return callback


@functools.cache
def _identity(path: Path) -> Identity:
    # cached per process: a passphrase-protected key is asked for once
    return load_identity(path)


@dataclass(frozen=True)
class Options:
    """The global options, shared by every command."""

    flake: str
    manifest_file: Path | None
    json_output: bool
    yes: bool
    debug: bool
    facts_dir: Path | None = None
    ssh_key: Path | None = None
    ssh_port: int = 22
    identity_file: Path | None = None
    verbose: int = 0

    def facts(self) -> FactsStore:
        return FactsStore(self.facts_dir or self.repo_dir() / "facts")

    def ssh_settings(self) -> SshSettings:
        timeout = os.environ.get("NIX_INFRA_SSH_CONNECT_TIMEOUT", "10")
        if re.fullmatch(r"[0-9]{1,6}", timeout) is None:  # not isdigit(): "²".isdigit() is True
            raise NixInfraError(f"NIX_INFRA_SSH_CONNECT_TIMEOUT={timeout!r} is not a whole number of seconds")
        return SshSettings(identity=self.ssh_key, port=self.ssh_port, connect_timeout=int(timeout))

    def identity_path(self) -> Path:
        return identity_path(self.identity_file, os.environ)

    def identity(self) -> Identity:
        """The age/SSH identity that decrypts the repo's secrets (loaded once)."""
        return _identity(self.identity_path())

    def load_manifest(self) -> Manifest:
        if self.manifest_file is not None:
            return load_manifest_file(self.manifest_file)
        return load_manifest_flake(self.flake)

    def repo_dir(self) -> Path:
        """The cluster repo, where .env, facts/, secrets/ and pki/ live: the root of the local
        flake (the nearest directory with a flake.nix at or above it), wherever in it the command
        runs; with --manifest, the one at or above the working directory, else that directory."""
        if self.manifest_file is None:
            local = local_flake_dir(self.flake)
            if local is not None:
                return find_repo_root(local) or local
        return find_repo_root(Path.cwd()) or Path.cwd()

    def state_dir(self) -> Path:
        """Where nix-infra keeps this machine's run state of the cluster repo (never committed):
        the run lock's directory, `.nix-infra/`. deploy's cache (deploycache.py) lives there."""
        return self.repo_dir() / LOCK_DIR

    def hetzner(self, manifest: Manifest | None = None, placeholders_ok: bool = False) -> tuple[Client, Desired]:
        """Token first (a missing one fails before any work), then manifest, then a client.

        The template's placeholders (its example SSH key, documentation address ranges) are refused
        before a real cloud is touched, unless placeholders_ok (destroy) or the endpoint is a local
        stand-in (the fake API, the sandbox)."""
        from nix_infra.hetzner.client import make_client, resolve_token, settings_from_env
        from nix_infra.hetzner.model import desired_state
        from nix_infra.placeholders import is_local_endpoint, placeholder_problems

        token = resolve_token(os.environ, self.repo_dir())
        settings = settings_from_env(os.environ, self.repo_dir())
        loaded = manifest or self.load_manifest()
        problems = [] if placeholders_ok or is_local_endpoint(settings.endpoint) else placeholder_problems(loaded)
        if problems:
            raise NixInfraError(
                "the cluster spec still has the template's placeholders (nothing was sent to "
                f"{settings.endpoint}):\n" + "\n".join(f"  {p}" for p in problems)
            )
        desired = desired_state(loaded)
        return make_client(token, settings), desired


def confirm(opts: Options, question: str) -> None:
    """Ask on the terminal (the question says what waits for the answer); no answer, no change.

    `--yes` answers it; without a terminal and without `--yes` it refuses (raises NixInfraError);
    declining raises click's Abort (the CLI prints "aborted")."""
    if opts.yes:
        return
    if not sys.stdin.isatty():
        raise NixInfraError(f"{question} There is no terminal to ask; pass --yes to confirm")
    if not click.confirm(question, default=False, err=True):
        raise click.exceptions.Abort()
