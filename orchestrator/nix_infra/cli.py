"""The `nix-infra` command line: a thin click layer over the library."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click
from hcloud import Client
from rich.console import Console

from nix_infra import __version__
from nix_infra.errors import NixInfraError
from nix_infra.hetzner.apply import Applier, destroy, problems_error
from nix_infra.hetzner.client import make_client, resolve_token, settings_from_env
from nix_infra.hetzner.model import Desired, desired_state, read_actual
from nix_infra.hetzner.plan import Plan, plan
from nix_infra.hetzner.render import render_plan
from nix_infra.manifest import Manifest, load_manifest_file, load_manifest_flake

EXIT_CHANGES = 2  # `plan`: something would change (as terraform plan -detailed-exitcode)


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

    def repo_dir(self) -> Path:
        """The cluster repo, where .env lives: a local flake's directory, else the working directory."""
        if self.manifest_file is None:
            local = self.flake.removeprefix("path:").removeprefix("git+file://").split("?")[0]
            if ":" not in local and Path(local).is_dir():
                return Path(local)
        return Path.cwd()

    def hetzner(self) -> tuple[Client, Desired]:
        """Token first (a missing one fails before any work), then manifest, then a client."""
        token = resolve_token(os.environ, self.repo_dir())
        settings = settings_from_env(os.environ, self.repo_dir())
        desired = desired_state(self.load_manifest())
        return make_client(token, settings), desired


def progress_printer() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def current_plan(client: Client, desired: Desired) -> Plan:
    return plan(desired, read_actual(client, desired.cluster))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--flake",
    default=".",
    show_default=True,
    metavar="REF",
    help="Cluster flake whose nixInfra.manifest to evaluate, e.g. '.' or 'github:acme/infra'.",
)
@click.option(
    "--manifest",
    "manifest_file",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="Read the manifest from a JSON file instead of evaluating a flake.",
)
@click.option("--json", "json_output", is_flag=True, help="Print results as JSON data instead of text.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", count=True, help="More log output (-v: info, -vv: debug).")
@click.version_option(__version__, prog_name="nix-infra")
@click.pass_context
def cli(
    ctx: click.Context, flake: str, manifest_file: Path | None, json_output: bool, yes: bool, debug: bool, verbose: int
) -> None:
    """nix-infra: NixOS clusters on Hetzner Cloud, described in one flake.

    The cluster comes from a flake's nixInfra.manifest (--flake, default the
    current directory) or a manifest file (--manifest). Hetzner commands read
    the API token from HCLOUD_TOKEN or the cluster repo's .env file, and the
    endpoint from HCLOUD_ENDPOINT (default https://api.hetzner.cloud/v1).

    \b
    Examples:
      nix-infra plan                      # what provision would change; exit 2 if anything
      nix-infra provision --yes           # create/update servers, network, firewalls, ...
      nix-infra destroy worker003         # delete one node's server
      nix-infra --manifest m.json --json plan
    """
    level = logging.DEBUG if debug or verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Options(flake=flake, manifest_file=manifest_file, json_output=json_output, yes=yes, debug=debug)


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
        click.echo(f"  {node.name:<20} {node.type:<9} {node.private_ip:<15} wave {node.wave}  credentials: {creds}")


@cli.command("plan")
@click.pass_obj
def plan_cmd(opts: Options) -> None:
    """Show what `provision` would change in the cloud; change nothing.

    Compares the manifest with what the Hetzner project holds (only resources
    labelled nix-infra/cluster=<cluster> are ever changed) and prints the
    creates, updates and deletes per resource. Exit status: 0 when nothing
    would change, 2 when something would (as terraform plan
    -detailed-exitcode), 1 on errors.

    \b
    Examples:
      nix-infra plan
      nix-infra --json plan | jq '.summary'
      HCLOUD_ENDPOINT=http://127.0.0.1:8080/v1 nix-infra --manifest m.json plan
    """
    client, desired = opts.hetzner()
    p = current_plan(client, desired)
    if opts.json_output:
        click.echo(json.dumps(p.to_json(), indent=2))
    else:
        render_plan(p, Console(highlight=False, soft_wrap=True))
    if p.has_changes or p.problems:
        raise click.exceptions.Exit(EXIT_CHANGES)


@cli.command("provision")
@click.pass_obj
def provision_cmd(opts: Options) -> None:
    """Create or update the cloud resources the manifest asks for.

    Shows the plan, asks for confirmation (skip with --yes), then creates
    SSH keys, the private network, spread placement groups, firewalls and
    servers, and attaches each server with its manifest private IP. Idempotent
    and resumable: if it stops half-way, run it again. It never deletes
    servers; use `destroy` for that.

    \b
    Examples:
      nix-infra provision             # asks before changing anything
      nix-infra --yes provision       # for scripts and CI
    """
    client, desired = opts.hetzner()
    console = progress_printer()
    p = current_plan(client, desired)
    if opts.json_output:
        click.echo(json.dumps({"plan": p.to_json()}, indent=2), err=True)
    else:
        render_plan(p, console)
    if p.problems:
        raise problems_error(p)
    if not p.has_changes:
        _result(opts, "nothing to do", p)
        return
    _confirm(opts, f"Apply these {len(p.changes)} changes to cluster {desired.cluster}?")
    Applier(client, desired, lambda msg: console.print(msg)).apply(p)
    after = current_plan(client, desired)
    if after.has_changes:
        raise NixInfraError(
            f"provision finished, but {len(after.changes)} changes remain; run it again "
            "(or `nix-infra plan` to see them)"
        )
    _result(opts, "done", p)


@cli.command("destroy")
@click.argument("nodes", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Delete every resource the cluster owns.")
@click.option(
    "--confirm",
    "confirm_name",
    metavar="CLUSTER",
    help="With --all: the cluster's name, instead of typing it at the prompt.",
)
@click.pass_obj
def destroy_cmd(opts: Options, nodes: tuple[str, ...], all_: bool, confirm_name: str | None) -> None:
    """Delete servers: `destroy NODE...`, or `destroy --all` for the whole cluster.

    Only resources labelled nix-infra/cluster=<cluster> are touched. NODE is a
    node name (also one no longer in the manifest). --all also deletes the
    cluster's firewalls, placement groups, network and SSH keys, and asks you
    to type the cluster name (or pass it with --confirm).

    \b
    Examples:
      nix-infra destroy worker003
      nix-infra --yes destroy worker003 worker004
      nix-infra destroy --all --confirm demo
    """
    if bool(nodes) == all_:
        raise NixInfraError("say which servers to delete: `destroy NODE...` or `destroy --all`")
    client, desired = opts.hetzner()
    console = progress_printer()
    if all_:
        if confirm_name is None:
            if not sys.stdin.isatty():
                raise NixInfraError(f"destroy --all needs confirmation: pass --confirm {desired.cluster}")
            confirm_name = click.prompt(
                f"This deletes every resource of cluster {desired.cluster}. Type the cluster name to confirm"
            )
        if confirm_name != desired.cluster:
            raise NixInfraError(f"confirmation {confirm_name!r} does not match the cluster name; nothing deleted")
    else:
        _confirm(opts, f"Delete the servers of {', '.join(nodes)} in cluster {desired.cluster}?")
    deleted = destroy(client, desired.cluster, None if all_ else list(nodes), lambda m: console.print(m))
    if opts.json_output:
        click.echo(json.dumps({"deleted_servers": deleted, "all": all_}))
    else:
        console.print(f"deleted {len(deleted)} server(s)" + (" and every other resource" if all_ else ""))


def _confirm(opts: Options, question: str) -> None:
    if opts.yes:
        return
    if not sys.stdin.isatty():
        raise NixInfraError("this changes the cloud and there is no terminal to ask; pass --yes to confirm")
    if not click.confirm(question, default=False, err=True):
        raise NixInfraError("nothing changed")


def _result(opts: Options, status: str, p: Plan) -> None:
    if opts.json_output:
        click.echo(json.dumps({"status": status, "applied": p.to_json()}, indent=2))
    else:
        click.echo(status)


def main() -> None:
    """Entry point: user errors become one message and an exit code, no traceback."""
    debug = "--debug" in sys.argv[1:]
    try:
        code = cli.main(standalone_mode=False)  # returns the code of a ctx.exit() / Exit
        if isinstance(code, int) and code != 0:
            sys.exit(code)
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
