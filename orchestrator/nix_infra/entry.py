"""The `nix-infra` console script: Ctrl-C while the CLI's modules load (the first fraction of a
second) ends with exit 130 and no traceback, as it does later (nix_infra.cli.main)."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from nix_infra.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    cli_main()
