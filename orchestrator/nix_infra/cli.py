"""The `nix-infra` command line: a thin click layer over the library."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from nix_infra import __version__
from nix_infra.deploy import (
    Deployer,
    DeployOptions,
    NodeOutcome,
    human_size,
    ssh_target,
    summary_rows,
)
from nix_infra.errors import NixInfraError
from nix_infra.lock import in_repo_lock
from nix_infra.manifest import Manifest
from nix_infra.operate import desired_systems, node_status, run_everywhere
from nix_infra.options import (
    Options,
    SafePath,
    check_cluster_name,
    check_flake_ref,
    check_node_name,
    param,
    seconds_from_env,
)
from nix_infra.ssh import ssh_argv
from nix_infra.targets import one_node, select

if TYPE_CHECKING:
    from hcloud import Client

    from nix_infra.delivery import DeliveryResult
    from nix_infra.hetzner.model import Actual, Desired
    from nix_infra.hetzner.plan import Plan

# The Hetzner layer (hcloud, requests: a fifth of a second to import) is imported by the
# commands that talk to the cloud, so ssh/cmd/status start at once.

EXIT_CHANGES = 2  # `plan`: something would change (as terraform plan -detailed-exitcode)


def settle_facts(opts: Options, desired: Desired, actual: Actual, console: Console) -> None:
    """Complete the facts of servers a cut-off run created; warn about servers without any."""
    from nix_infra.hetzner.apply import complete_facts

    unknown = complete_facts(opts.facts(), desired, actual, lambda msg: console.print(msg))
    if unknown:
        console.print(
            f"[yellow]warning: no facts for {', '.join(unknown)}: their host keys are unknown, so nix-infra "
            "will not connect to them. `nix-infra destroy NODE` and provision again.[/yellow]"
        )


def progress_printer() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def current_plan(client: Client, desired: Desired) -> tuple[Actual, Plan]:
    """One snapshot of the project, and the plan from it."""
    from nix_infra.hetzner.model import read_actual
    from nix_infra.hetzner.plan import plan

    actual = read_actual(client, desired.cluster)
    return actual, plan(desired, actual)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--flake",
    default=".",
    show_default=True,
    metavar="REF",
    callback=param(check_flake_ref),
    help="Cluster flake whose nixInfra.manifest to evaluate, e.g. '.' or 'github:acme/infra'.",
)
@click.option(
    "--manifest",
    "manifest_file",
    type=SafePath(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="Read the manifest from a JSON file instead of evaluating a flake.",
)
@click.option("--json", "json_output", is_flag=True, help="Print results as JSON data instead of text.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option(
    "--facts",
    "facts_dir",
    type=SafePath(path_type=Path, file_okay=False),
    metavar="DIR",
    help="Per-node facts and pinned host keys (default: facts/ in the cluster repo).",
)
@click.option(
    "--ssh-key",
    type=SafePath(path_type=Path, dir_okay=False, exists=True),
    metavar="FILE",
    help="SSH private key for logging in to the nodes (default: ssh's own choice, e.g. the agent).",
)
@click.option(
    "--identity",
    "identity_file",
    type=SafePath(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="age identity or SSH private key that decrypts the repo's secrets and keys "
    "(default: $NIX_INFRA_IDENTITY, else ~/.ssh/id_ed25519).",
)
@click.option(
    "--ssh-port",
    type=click.IntRange(1, 65535),
    default=22,
    show_default=True,
    help="SSH port of the nodes (22 on Hetzner; test harnesses use others).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-v: info, -vv: debug).")
@click.version_option(__version__, prog_name="nix-infra")
@click.pass_context
def cli(
    ctx: click.Context,
    flake: str,
    manifest_file: Path | None,
    json_output: bool,
    yes: bool,
    debug: bool,
    facts_dir: Path | None,
    ssh_key: Path | None,
    identity_file: Path | None,
    ssh_port: int,
    verbose: int,
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
      nix-infra deploy                    # provision, build, copy, activate in waves
      nix-infra status                    # every node: reachable, running what it should
      nix-infra cmd -t @worker -- uptime  # a command on many nodes, exit codes checked
      nix-infra destroy worker003         # delete one node's server
      nix-infra --manifest m.json --json plan
    """
    level = logging.DEBUG if debug or verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Options(
        flake=flake,
        manifest_file=manifest_file,
        json_output=json_output,
        yes=yes,
        debug=debug,
        facts_dir=facts_dir,
        ssh_key=ssh_key,
        identity_file=identity_file,
        ssh_port=ssh_port,
        verbose=verbose,
    )


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
    from nix_infra.hetzner.render import render_plan

    client, desired = opts.hetzner()
    _, p = current_plan(client, desired)
    if opts.json_output:
        click.echo(json.dumps(p.to_json(), indent=2))
    else:
        render_plan(p, Console(highlight=False, soft_wrap=True))
    if p.has_changes or p.problems:
        raise click.exceptions.Exit(EXIT_CHANGES)


@cli.command("provision")
@click.pass_obj
@in_repo_lock
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
    from nix_infra.hetzner.apply import Applier, problems_error
    from nix_infra.hetzner.render import render_plan

    client, desired = opts.hetzner()
    console = progress_printer()
    actual, p = current_plan(client, desired)
    if opts.json_output:
        click.echo(json.dumps({"plan": p.to_json()}, indent=2), err=True)
    else:
        render_plan(p, console)
    if p.problems:
        raise problems_error(p)
    if not p.has_changes:
        settle_facts(opts, desired, actual, console)
        _result(opts, "nothing to do", p)
        return
    _confirm(opts, f"Apply these {len(p.changes)} changes to cluster {desired.cluster}?")
    Applier(client, desired, lambda msg: console.print(msg), opts.facts(), opts.ssh_port).apply(p)
    actual, after = current_plan(client, desired)
    settle_facts(opts, desired, actual, console)
    if after.has_changes:
        raise NixInfraError(
            f"provision finished, but {len(after.changes)} changes remain; run it again "
            "(or `nix-infra plan` to see them)"
        )
    _result(opts, "done", p)


@cli.command("destroy")
@click.argument("nodes", nargs=-1, callback=param(check_node_name))
@click.option("--all", "all_", is_flag=True, help="Delete every resource the cluster owns.")
@click.option(
    "--confirm",
    "confirm_name",
    metavar="CLUSTER",
    callback=param(check_cluster_name),
    help="With --all: the cluster's name, instead of typing it at the prompt.",
)
@click.pass_obj
@in_repo_lock
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
    from nix_infra.hetzner.apply import destroy

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
    deleted = destroy(client, desired.cluster, None if all_ else list(nodes), lambda m: console.print(m), opts.facts())
    if opts.json_output:
        click.echo(json.dumps({"deleted_servers": deleted, "all": all_}))
    else:
        console.print(f"deleted {len(deleted)} server(s)" + (" and every other resource" if all_ else ""))


def _deploy_options(
    opts: Options,
    parallel: int,
    batch_size: int | None,
    confirm_timeout: int,
    substitute: bool,
    activation_timeout: float = 240.0,
) -> DeployOptions:
    def seconds(name: str, default: float) -> float:
        value = os.environ.get(name)
        if value is None:
            return default
        return seconds_from_env(name, value)

    return DeployOptions(
        flake=opts.flake,
        parallel=parallel,
        batch_size=batch_size,
        confirm_timeout=confirm_timeout,
        activation_timeout=activation_timeout,
        substitute_on_destination=substitute,
        poll_interval=seconds("NIX_INFRA_POLL_INTERVAL", 0.5),
        reboot_timeout=seconds("NIX_INFRA_REBOOT_TIMEOUT", 600.0),
    )


def _event_printer(opts: Options, console: Console) -> Callable[[dict[str, Any]], None]:
    lock = threading.Lock()
    start: list[float] = []

    def show(event: dict[str, Any]) -> None:
        with lock:
            if opts.json_output:
                click.echo(json.dumps(event))
                return
            start[:] = start or [event["time"]]
            node = f"{event['time'] - start[0]:6.1f}s {event.get('node') or '':>12}"
            kind = event["event"]
            if kind == "phase":
                console.print(
                    f"{node:>14}  {event['phase']}"
                    + (f" (attempt {event['attempt']})" if event.get("attempt", 1) > 1 else "")
                )
            elif kind == "copied":
                console.print(f"{node:>14}  copied {event['paths']} path(s), {human_size(event.get('bytes', 0))}")
            elif kind == "batch":
                console.print(f"[bold]batch: {', '.join(event['nodes'])}[/bold]")
            elif kind in ("switched", "unchanged"):
                console.print(f"{node:>14}  [green]{kind}[/green]")
            elif kind in ("failed", "unhealthy"):
                console.print(f"{node:>14}  [red]{event.get('result', kind)}[/red]")
                for line in str(event.get("log") or event.get("reason") or "").splitlines()[-15:]:
                    console.print(f"{node:>14}  | {line}", markup=False)
            elif kind == "seeded":
                console.print(
                    f"{node:>14}  etcd seeded: {event['added']} added, {event['changed']} changed, "
                    f"{event['removed']} removed"
                )
            elif kind == "credentials":
                console.print(f"{node:>14}  {event['summary']}")
            elif kind == "issued":
                console.print(f"{node:>14}  issued certificate {event['certificate']} ({event['reason']})")
            elif kind == "retry":
                console.print(f"{node:>14}  [yellow]retrying {event['phase']}[/yellow]")

    return show


def _summary(opts: Options, outcomes: list[NodeOutcome], console: Console) -> None:
    if opts.json_output:
        click.echo(json.dumps({"event": "summary", "nodes": [o.to_json() for o in outcomes]}))
        return
    table = Table(title="deploy summary")
    for column in ("node", "old", "new", "copied", "result", "detail"):
        table.add_column(column)
    for row, o in zip(summary_rows(outcomes), outcomes, strict=True):
        color = "green" if o.ok else "red" if o.result != "not-started" else "yellow"
        table.add_row(*row[:4], f"[{color}]{row[4]}[/{color}]", row[5])
    console.print(table)


@cli.command("deploy")
@click.option(
    "--on",
    "on",
    multiple=True,
    metavar="SEL",
    help="Only these nodes: NODE[,NODE], @type (e.g. @worker) or @label=value. Repeatable.",
)
@click.option(
    "--parallel", type=click.IntRange(1, 200), default=10, show_default=True, help="Copies and activations at a time."
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    default=None,
    help="Non-ctrl nodes activated per health-gated batch (default: --parallel).",
)
@click.option(
    "--confirm-timeout",
    type=click.IntRange(5, 3600),
    default=30,
    show_default=True,
    help="Seconds a node waits for confirmation before it rolls back by itself.",
)
@click.option(
    "--substitute-on-destination",
    is_flag=True,
    help="Let nodes fetch paths from their binary caches instead of receiving them.",
)
@click.option(
    "--activation-timeout",
    type=click.IntRange(5, 7200),
    default=240,
    show_default=True,
    help="Seconds a switch may take before the node counts as failed.",
)
@click.option("--no-provision", is_flag=True, help="Skip the cloud step; deploy to the servers that exist.")
@click.option(
    "--no-seed", is_flag=True, help="Skip issuing certificates and seeding etcd (e.g. before the cluster has a PKI)."
)
@click.option("--break-lock", is_flag=True, help="Take over the cluster's deploy lock from a deploy known to be dead.")
@click.pass_obj
@in_repo_lock
def deploy_cmd(
    opts: Options,
    on: tuple[str, ...],
    parallel: int,
    batch_size: int | None,
    confirm_timeout: int,
    substitute_on_destination: bool,
    activation_timeout: int,
    no_provision: bool,
    no_seed: bool,
    break_lock: bool,
) -> None:
    """Provision, then build every system here, copy it, and activate it in waves.

    Each ctrl node is activated alone (etcd keeps its quorum), the others in
    health-gated batches. Every activation runs detached on the node and rolls
    back by itself unless this command confirms over a fresh SSH connection
    within --confirm-timeout. A failed batch stops the rollout. Certificates
    missing from pki/ are issued first; once the ctrl nodes are done, etcd gets
    the manifest's static mesh keys (as `etcd seed`). Exit status is 0 only when
    every target runs its new system and is healthy, and etcd is seeded.

    \b
    Examples:
      nix-infra deploy
      nix-infra deploy --on @worker --batch-size 2
      nix-infra --json deploy --on ctrl001,worker001 | jq -c .
    """
    from nix_infra.hetzner.apply import Applier, problems_error
    from nix_infra.hetzner.model import read_actual
    from nix_infra.hetzner.render import render_plan

    console = progress_printer()
    planned = opts.load_manifest()
    # before anything in the cloud or on a node is touched: every secret there, and it decrypts
    from nix_infra.cli_secrets import needed_secrets

    secrets = needed_secrets(opts, planned, [n.name for n in select(planned, on)])
    # one deploy per cluster at a time (etcd), held until click closes this command's context
    from nix_infra.deploylock import cluster_deploy_lock

    click.get_current_context().with_resource(
        cluster_deploy_lock(opts, planned, [n.name for n in select(planned, on)], "nix-infra deploy", break_lock)
    )
    if not no_provision:
        client, desired = opts.hetzner(planned)
        actual, p = current_plan(client, desired)
        if p.problems:
            raise problems_error(p)
        if p.has_changes:
            if not opts.json_output:
                render_plan(p, console)
            _confirm(opts, f"Apply these {len(p.changes)} cloud changes to cluster {desired.cluster}?")
            Applier(client, desired, lambda msg: console.print(msg), opts.facts(), opts.ssh_port).apply(p)
            actual = read_actual(client, desired.cluster)
        settle_facts(opts, desired, actual, console)
    manifest = planned  # evaluated once per run
    nodes = select(manifest, on)
    deployer = Deployer(
        manifest,
        opts.facts(),
        opts.ssh_settings(),
        _deploy_options(opts, parallel, batch_size, confirm_timeout, substitute_on_destination, activation_timeout),
        _event_printer(opts, console),
    )
    if not no_seed:
        deployer.seeder = _prepare_seeding(opts, manifest, deployer)
    deployer.deliverer = _prepare_delivery(opts, manifest, secrets, with_pki=not no_seed)
    outcomes = deployer.run(nodes)
    _summary(opts, outcomes, console)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise NixInfraError(
            f"deploy failed on {', '.join(o.node for o in failed if o.result != 'not-started')}; "
            f"{sum(o.result == 'not-started' for o in failed)} node(s) not started"
            + (f"\n{deployer.seed_error}" if deployer.seed_error else "")
        )
    if deployer.seed_error:
        raise NixInfraError(f"seeding etcd failed: {deployer.seed_error}")


def _prepare_delivery(
    opts: Options, manifest: Manifest, secrets: dict[str, bytes], with_pki: bool
) -> Callable[[str, list[str]], DeliveryResult | None]:
    """The per-node delivery step of deploy: the node's secrets (decrypted once, before anything
    was touched) plus its PKI material; what it did, or None when nothing was to do."""
    from nix_infra.cli_secrets import deliver_node

    def one(name: str, held: list[str]) -> DeliveryResult | None:
        return deliver_node(opts, manifest, name, secrets, with_pki, held)

    return one


def _prepare_seeding(opts: Options, manifest: Manifest, deployer: Deployer) -> Callable[[], None] | None:
    """Issue missing certificates now; return the step that seeds etcd after the ctrl nodes."""
    from nix_infra.controlplane import connect, issue_certificates, seed_control_plane
    from nix_infra.pki import Pki

    repo = opts.repo_dir()
    if not Pki(repo).ca_path.exists():
        if not manifest.etcd.members:
            return None
        raise NixInfraError(
            f"{Pki(repo).ca_path} does not exist: run `nix-infra init` to create the cluster PKI "
            "(or deploy --no-seed to skip certificates and etcd)"
        )
    for name, reason in issue_certificates(repo, manifest, opts.identity):
        deployer.emit("issued", certificate=name, reason=reason)
    if not manifest.etcd.members:
        return None
    facts, settings = deployer.facts, deployer.ssh

    def seeder() -> None:
        target = lambda node: ssh_target(manifest.nodes[node], facts, settings)  # noqa: E731
        with connect(repo, manifest, target, opts.identity) as etcd:
            result = seed_control_plane(etcd, manifest).keys
        counts = result.diff.counts()
        deployer.emit(
            "seeded",
            added=counts["added"],
            changed=counts["changed"],
            removed=counts["removed"],
            transactions=result.transactions,
        )

    return seeder


@cli.command("status")
@click.option("--on", "on", multiple=True, metavar="SEL", help="Only these nodes (as for deploy).")
@click.pass_obj
def status_cmd(opts: Options, on: tuple[str, ...]) -> None:
    """Cluster health at a glance: per node reachable, running vs desired system, failed units.

    Exit status is 1 when any node is unreachable, degraded, has failed units
    or does not run its desired system.

    \b
    Examples:
      nix-infra status
      nix-infra --json status --on @ctrl
    """
    manifest = opts.load_manifest()
    nodes = select(manifest, on)
    desired = desired_systems(opts.flake, nodes) if opts.manifest_file is None else {}
    rows = node_status(nodes, opts.facts(), opts.ssh_settings(), desired, parallel=10)
    if opts.json_output:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        table = Table(title=f"cluster {manifest.cluster}")
        for column in ("node", "type", "reachable", "system", "running", "failed units"):
            table.add_column(column)
        for r in rows:
            ok = "[green]yes[/green]" if r.reachable else "[red]no[/red]"
            table.add_row(
                r.node,
                manifest.nodes[r.node].type,
                ok,
                r.system_state,
                r.running_summary,
                ", ".join(r.failed_units) or "-",
            )
        Console(highlight=False, soft_wrap=True).print(table)
    if not all(r.ok for r in rows):
        raise click.exceptions.Exit(1)


@cli.command("cmd", context_settings={"ignore_unknown_options": True})
@click.option(
    "-t",
    "--targets",
    "on",
    multiple=True,
    required=True,
    metavar="SEL",
    help="Nodes to run on: NODE[,NODE], @type or @label=value. Repeatable.",
)
@click.option("--parallel", type=click.IntRange(1, 200), default=10, show_default=True)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def cmd_cmd(opts: Options, on: tuple[str, ...], parallel: int, command: tuple[str, ...]) -> None:
    """Run a shell command on many nodes in parallel; output prefixed by node.

    As with ssh, the words of COMMAND are joined by spaces and run by the
    node's shell. Exit status is non-zero when the command failed (or the
    node was unreachable) on any node; a per-node summary follows the output.

    \b
    Examples:
      nix-infra cmd -t @worker -- systemctl is-active podman-api
      nix-infra cmd -t ctrl001,ctrl002 -- 'journalctl -u etcd -n 200 | grep -i error'
    """
    manifest = opts.load_manifest()
    nodes = select(manifest, on, "--targets")
    # like ssh: the words are joined and the node's shell interprets them (pipes, globs, ...)
    results = run_everywhere(nodes, opts.facts(), opts.ssh_settings(), ["/bin/sh", "-c", " ".join(command)], parallel)
    width = max(len(n.name) for n in nodes)
    for name, result in results:
        for line in (result.stdout + result.stderr).splitlines():
            click.echo(f"{name:<{width}} | {line}")
    click.echo("")
    for name, result in results:
        state = (
            "ok"
            if result.returncode == 0
            else ("unreachable" if result.returncode == 255 else f"exit {result.returncode}")
        )
        click.echo(f"{name:<{width}}  {state}")
    failed = [n for n, r in results if r.returncode != 0]
    if failed:
        raise NixInfraError(f"the command failed on {len(failed)} of {len(results)} node(s): {', '.join(failed)}")


@cli.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("node", callback=param(check_node_name))
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def ssh_cmd(opts: Options, node: str, command: tuple[str, ...]) -> None:
    """Open a shell on NODE (or run COMMAND there), with its pinned host key.

    \b
    Examples:
      nix-infra ssh worker001
      nix-infra ssh ctrl001 -- journalctl -fu etcd
    """
    manifest = opts.load_manifest()
    target_node = one_node(manifest, node)
    target = ssh_target(target_node, opts.facts(), opts.ssh_settings())
    argv = ssh_argv(target, list(command), tty=not command and sys.stdin.isatty())
    os.execvp(argv[0], argv)


@cli.command("rollback")
@click.option("--on", "on", multiple=True, required=True, metavar="SEL", help="Nodes to roll back.")
@click.option("--confirm-timeout", type=click.IntRange(5, 3600), default=30, show_default=True)
@click.pass_obj
@in_repo_lock
def rollback_cmd(opts: Options, on: tuple[str, ...], confirm_timeout: int) -> None:
    """Switch nodes back to their previous system generation, with magic rollback.

    \b
    Examples:
      nix-infra rollback --on worker003
      nix-infra --yes rollback --on @worker
    """
    manifest = opts.load_manifest()
    nodes = select(manifest, on)
    _confirm(opts, f"Roll back {', '.join(n.name for n in nodes)} to the previous generation?")
    console = progress_printer()
    deployer = Deployer(
        manifest,
        opts.facts(),
        opts.ssh_settings(),
        _deploy_options(opts, 10, None, confirm_timeout, False),
        _event_printer(opts, console),
    )
    outcomes = deployer.rollback(nodes)
    _summary(opts, outcomes, console)
    if not all(o.ok for o in outcomes):
        raise NixInfraError(f"rollback failed on {', '.join(o.node for o in outcomes if not o.ok)}")


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


from nix_infra.cli_secrets import action_cmd, secret_group  # noqa: E402  (commands register on `cli`)
from nix_infra.cli_state import etcd_group, init_cmd, pki_group  # noqa: E402

cli.add_command(init_cmd)
cli.add_command(secret_group)
cli.add_command(action_cmd)
cli.add_command(pki_group)
cli.add_command(etcd_group)


def main() -> None:
    """Entry point: user errors become one message and an exit code, no traceback."""
    debug = "--debug" in sys.argv[1:]
    try:
        code = cli.main(standalone_mode=False, prog_name="nix-infra")  # returns the code of a ctx.exit() / Exit
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
