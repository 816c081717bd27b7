"""The global command-line options and what they resolve to (repo, facts, SSH, identity)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nix_infra.agestore import Identity, identity_path, load_identity
from nix_infra.deploy import SshSettings
from nix_infra.errors import NixInfraError
from nix_infra.facts import FactsStore
from nix_infra.manifest import Manifest, load_manifest_file, load_manifest_flake

if TYPE_CHECKING:
    from hcloud import Client

    from nix_infra.hetzner.model import Desired


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
        if not timeout.isdigit():
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
        """The cluster repo, where .env lives: a local flake's directory, else the working directory."""
        if self.manifest_file is None:
            local = self.flake.removeprefix("path:").removeprefix("git+file://").split("?")[0]
            if ":" not in local and Path(local).is_dir():
                return Path(local)
        return Path.cwd()

    def hetzner(self, manifest: Manifest | None = None) -> tuple[Client, Desired]:
        """Token first (a missing one fails before any work), then manifest, then a client."""
        from nix_infra.hetzner.client import make_client, resolve_token, settings_from_env
        from nix_infra.hetzner.model import desired_state

        token = resolve_token(os.environ, self.repo_dir())
        settings = settings_from_env(os.environ, self.repo_dir())
        desired = desired_state(manifest or self.load_manifest())
        return make_client(token, settings), desired
