"""The `nix-infra` command line: a thin click layer over the library."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from nix_infra import __version__
from nix_infra.errors import NixInfraError
from nix_infra.manifest import Manifest, load_manifest_file, load_manifest_flake


@dataclass(frozen=True)
class Options:
    """The global options, shared by every command."""

    flake: str
    manifest_file: Path | None
    json_output: bool
    yes: bool
    debug: bool

    def load_manifest(self) -> Manifest:
        if self.manifest_file is not None:
            return load_manifest_file(self.manifest_file)
        return load_manifest_flake(self.flake)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--flake", default=".", show_default=True, metavar="REF",
              help="Cluster flake whose nixInfra.manifest to evaluate, e.g. '.' or 'github:acme/infra'.")
@click.option("--manifest", "manifest_file", type=click.Path(path_type=Path, dir_okay=False),
              metavar="FILE", help="Read the manifest from a JSON file instead of evaluating a flake.")
@click.option("--json", "json_output", is_flag=True, help="Print results as JSON data instead of text.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", count=True, help="More log output (-v: info, -vv: debug).")
@click.version_option(__version__, prog_name="nix-infra")
@click.pass_context
def cli(ctx: click.Context, flake: str, manifest_file: Path | None, json_output: bool,
        yes: bool, debug: bool, verbose: int) -> None:
    """nix-infra: NixOS clusters on Hetzner Cloud, described in one flake.

    \b
    Examples:
      nix-infra manifest                  # the evaluated manifest of ./flake.nix
      nix-infra --manifest m.json manifest --json
    """
    level = logging.DEBUG if debug or verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Options(flake=flake, manifest_file=manifest_file, json_output=json_output,
                      yes=yes, debug=debug)


@cli.command("manifest")
@click.pass_obj
def manifest_cmd(opts: Options) -> None:
    """Show the cluster's manifest: nodes, addresses, waves, secrets.

    \b
    Examples:
      nix-infra manifest
      nix-infra --json manifest | jq '.nodes | keys'
    """
    m = opts.load_manifest()
    if opts.json_output:
        click.echo(json.dumps(m.raw, indent=2, sort_keys=True))
        return
    click.echo(f"cluster {m.cluster} ({m.provider_type}, {m.location}, network {m.network.ip_range})")
    for node in m.nodes.values():
        creds = ", ".join(node.credentials) or "-"
        click.echo(f"  {node.name:<20} {node.type:<9} {node.private_ip:<15} wave {node.wave}  "
                   f"credentials: {creds}")


def main() -> None:
    """Entry point: user errors become one message and an exit code, no traceback."""
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(standalone_mode=False)
    except NixInfraError as exc:
        if debug:
            raise
        click.secho(f"error: {exc.message}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
