"""Nix commands as argv builders, and the parsing of what they print.

Systems are built once, locally, in one `nix build` for every target; nodes
never build. Closures travel with `nix copy --to ssh-ng://` over the pinned
SSH options.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from nix_infra.errors import NixInfraError
from nix_infra.ssh import SshTarget

NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]


def toplevel_installable(flake: str, system_attr: str) -> str:
    """`<flake>#nixosConfigurations.<node>.config.system.build.toplevel` (system_attr from the manifest)."""
    return f"{flake}#{system_attr}.config.system.build.toplevel"


def build_argv(flake: str, system_attrs: Sequence[str]) -> list[str]:
    """One `nix build` for every target system: Nix schedules and shares the work."""
    return [*NIX, "build", "--no-link", "--json", *(toplevel_installable(flake, a) for a in system_attrs)]


def parse_build_output(stdout: str, count: int) -> list[str]:
    """Out paths of `nix build --json`, in the order of the installables."""
    try:
        results = json.loads(stdout)
        paths = [r["outputs"]["out"] for r in results]
    except (ValueError, KeyError, TypeError) as exc:
        raise NixInfraError(f"nix build printed something unexpected: {stdout[:200]!r}") from exc
    if len(paths) != count:
        raise NixInfraError(f"nix build returned {len(paths)} systems for {count} targets")
    return paths


def copy_argv(path: str, target: SshTarget, *, substitute_on_destination: bool = False) -> list[str]:
    """Copy a closure to a node's store. NIX_SSHOPTS (ssh.nix_sshopts) carries the pinned options.

    --no-check-sigs: the closure was built here and travels over our pinned SSH
    connection to root, as deploy-rs does.
    """
    argv = [*NIX, "copy", "--no-check-sigs", "--to", f"ssh-ng://{target.destination}"]
    if substitute_on_destination:
        argv.append("--substitute-on-destination")
    return [*argv, path]


_COPIED = re.compile(r"^copying path '(/nix/store/[^']+)'", re.MULTILINE)


def copied_paths(stderr: str) -> list[str]:
    """The store paths `nix copy` reports it copied (none when the node had them all)."""
    return _COPIED.findall(stderr)
