"""The `nix-infra` command line: a thin click layer over the library."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from nix_infra import __version__
from nix_infra.deploy import (
    Deployer,
    DeployOptions,
    NodeOutcome,
    SshSettings,
    generation_name,
    human_size,
    ssh_target,
    summary_rows,
)
from nix_infra.deploycache import CacheUse, cache_disabled, cache_use
from nix_infra.errors import NixInfraError
from nix_infra.lock import in_repo_lock
from nix_infra.manifest import DNS_LABEL_RULE, Manifest, Node, is_dns_label, parse_manifest
from nix_infra.operate import NodeStatus, desired_systems, node_status, run_everywhere
from nix_infra.options import (
    Options,
    SafePath,
    at_repo_root,
    check_flake_ref,
    check_node_name,
    confirm,
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


# ---- global options: before or after the command (`nix-infra --yes provision` = `provision --yes`) ----


def _late_option(*decls: str, field: str, check: Callable[[Any], Any] | None = None, **kwargs: Any) -> click.Option:
    """A global option as given after the command: it changes the Options the command gets."""

    def callback(ctx: click.Context, p: click.Parameter, value: Any) -> None:
        if value is None or value is False or (p.count and not value):  # type: ignore[attr-defined]
            return
        if check is not None:
            try:
                value = check(value)
            except NixInfraError as exc:
                raise click.BadParameter(exc.message, ctx=ctx, param=p) from None
        opts = ctx.obj
        if not isinstance(opts, Options):
            return
        if field == "verbose":
            value = opts.verbose + value
        opts = at_repo_root(replace(opts, **{field: value}))
        if field in ("verbose", "debug"):
            _set_log_level(opts)
        ctx.obj = opts

    return click.Option(decls, callback=callback, expose_value=False, hidden=True, **kwargs)


def _late_options() -> list[click.Option]:
    return [
        _late_option("--flake", field="flake", check=check_flake_ref, metavar="REF"),
        _late_option(
            "--manifest", field="manifest_file", type=SafePath(path_type=Path, dir_okay=False), metavar="FILE"
        ),
        _late_option("--json", field="json_output", is_flag=True),
        _late_option("--yes", "-y", field="yes", is_flag=True),
        _late_option("--debug", field="debug", is_flag=True),
        _late_option("--facts", field="facts_dir", type=SafePath(path_type=Path, file_okay=False), metavar="DIR"),
        _late_option(
            "--ssh-key", field="ssh_key", type=SafePath(path_type=Path, dir_okay=False, exists=True), metavar="FILE"
        ),
        _late_option("--identity", field="identity_file", type=SafePath(path_type=Path, dir_okay=False)),
        _late_option("--ssh-port", field="ssh_port", type=click.IntRange(1, 65535)),
        _late_option("-v", "--verbose", field="verbose", count=True),
    ]


def _add_late_options(group: click.Group) -> None:
    """Give every command below `group` the global options (once; also commands added later)."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _add_late_options(command)  # its commands, and the group itself (`etcd --json get /`)
        if not getattr(command, "_nix_infra_late_options", False):
            taken = {name for p in command.params for name in p.opts + p.secondary_opts}
            command.params.extend(o for o in _late_options() if not taken.intersection(o.opts))
            command._nix_infra_late_options = True  # type: ignore[attr-defined]


class RootGroup(click.Group):
    """The `nix-infra` group: global options are taken before or after the command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        _add_late_options(self)
        return super().parse_args(ctx, args)


class _Progress(logging.Handler):
    """Progress messages (the Hetzner layer's waits and retries) as plain lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _set_log_level(opts: Options) -> None:
    level = logging.DEBUG if opts.debug or opts.verbose >= 2 else logging.INFO if opts.verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)
    # what the cloud layer waits for, and why it retries, is shown without -v (no silent wait)
    hetzner = logging.getLogger("nix_infra.hetzner")
    if not any(isinstance(h, _Progress) for h in hetzner.handlers):
        hetzner.addHandler(_Progress())
    hetzner.setLevel(min(level, logging.INFO))
    hetzner.propagate = False


DEFAULT_COMMAND = "nix_infra.default_command"


@click.group(
    cls=RootGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
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
    cluster repo: the nearest directory with a flake.nix at or above the
    current one) or a manifest file (--manifest). Hetzner commands read the API
    token from HCLOUD_TOKEN or the cluster repo's .env file, and the endpoint
    from HCLOUD_ENDPOINT (default https://api.hetzner.cloud/v1).

    Without a command, nix-infra deploys: it shows the plan and asks first
    (unless --yes). Global options go before or after the command. With --json
    every command prints one JSON document on stdout (deploy and rollback: one
    event per line), errors too: {"error": {"message": ..., "exit_code": ...}}.

    \b
    Examples:
      nix-infra plan                      # what provision would change; exit 2 if anything
      nix-infra provision --yes           # create/update servers, network, firewalls, ...
      nix-infra                           # = deploy, after showing the plan and asking
      nix-infra deploy                    # provision, build, copy, activate in waves
      nix-infra status                    # every node: reachable, running what it should
      nix-infra cmd -t @worker -- uptime  # a command on many nodes, exit codes checked
      nix-infra destroy worker003         # delete one node's server
      nix-infra plan --manifest m.json --json
    """
    opts = at_repo_root(
        Options(
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
    )
    _set_log_level(opts)
    ctx.obj = opts
    if ctx.invoked_subcommand is None:  # `nix-infra`, `nix run .#deploy`: deploy, after asking
        ctx.meta[DEFAULT_COMMAND] = True
        ctx.invoke(deploy_cmd)


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
    creates, updates and deletes per resource, and the problems that would
    stop provision (a name taken outside the cluster, a server type or
    location that differs from the manifest). Exit status: 0 when nothing
    would change and there is no problem, 2 when
    something would change or a problem is listed (as terraform plan
    -detailed-exitcode; a plan of problems alone also exits 2, so a script
    that provisions on 2 must read them first), 1 on errors.

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


def check_volume_ref(ref: str) -> str:
    """NODE/VOLUME, both DNS labels."""
    node, slash, volume = ref.partition("/")
    if not slash or not is_dns_label(node) or not is_dns_label(volume):
        raise NixInfraError(f"{ref!r} is not NODE/VOLUME (a node name and a volume name, each {DNS_LABEL_RULE})")
    return ref


def check_confirm_name(name: str) -> str:
    if not is_dns_label(name):
        raise NixInfraError(f"{name!r} is not a cluster or node name ({DNS_LABEL_RULE})")
    return name


@cli.command("destroy")
@click.argument("nodes", nargs=-1, callback=param(check_node_name))
@click.option("--all", "all_", is_flag=True, help="Delete every resource the cluster owns.")
@click.option(
    "--volume",
    "volumes",
    multiple=True,
    metavar="NODE/VOLUME",
    callback=param(check_volume_ref),
    help="Delete a node's volume and every file on it (repeatable; needs --allow-data-loss).",
)
@click.option(
    "--allow-data-loss",
    is_flag=True,
    help="Go ahead although this destroys data: a stateful node's server, or a volume.",
)
@click.option(
    "--confirm",
    "confirm_names",
    multiple=True,
    metavar="NAME",
    callback=param(check_confirm_name),
    help="With --all: the cluster's name; with --allow-data-loss: the name of each node whose data "
    "goes (repeatable). Instead of typing it at the prompt.",
)
@click.pass_obj
@in_repo_lock
def destroy_cmd(
    opts: Options,
    nodes: tuple[str, ...],
    all_: bool,
    volumes: tuple[str, ...],
    allow_data_loss: bool,
    confirm_names: tuple[str, ...],
) -> None:
    """Delete servers: `destroy NODE...`, or `destroy --all` for the whole cluster.

    Only resources labelled nix-infra/cluster=<cluster> are touched. NODE is a
    node name (also one no longer in the manifest). A node's volumes are
    detached and kept (provision attaches them to a new server of the node);
    `--volume NODE/VOLUME` deletes one. --all also deletes the cluster's
    volumes, firewalls, placement groups, network and SSH keys, and asks you
    to type the cluster name (or pass it with --confirm).

    Whatever destroys data (the server of a stateful node: one with a volume
    or a stateful app, or delete-protected; a volume) is shown as DATA LOSS
    and refused unless --allow-data-loss is given and each such node's name
    is typed back (or passed with --confirm NODE); --yes is not enough.

    \b
    Examples:
      nix-infra destroy worker003
      nix-infra --yes destroy worker003 worker004
      nix-infra destroy db001 --allow-data-loss --confirm db001
      nix-infra destroy --volume db001/pgdata --allow-data-loss --confirm db001
      nix-infra destroy --all --confirm demo
    """
    from nix_infra.hetzner.apply import apply_destroy, problems_error
    from nix_infra.hetzner.model import read_actual
    from nix_infra.hetzner.plan import destroy_plan
    from nix_infra.hetzner.render import render_plan

    if not (nodes or volumes or all_) or (all_ and (nodes or volumes)):
        raise NixInfraError("say what to delete: `destroy NODE...`, `destroy --volume NODE/VOLUME` or `destroy --all`")
    client, desired = opts.hetzner(placeholders_ok=True)
    console = progress_printer()
    stateful = {
        s.node: "the manifest marks it stateful: it holds a volume or a stateful app"
        for s in desired.servers
        if s.protect
    }
    pairs = [(ref.split("/")[0], ref.split("/")[1]) for ref in volumes]
    p = destroy_plan(
        desired.cluster,
        read_actual(client, desired.cluster),
        None if all_ else list(nodes),
        pairs,
        stateful,
        # a node whose server is already gone but whose facts remain (a destroy killed in between)
        known=opts.facts().nodes(),
    )
    if opts.json_output:
        click.echo(json.dumps({"plan": p.to_json()}, indent=2), err=True)
    else:
        render_plan(p, console)
    if p.problems:
        raise problems_error(p)
    typed = list(confirm_names)
    losers = sorted({str(c.fields.get("node")) for c in p.data_loss})
    if p.data_loss and not allow_data_loss:
        raise NixInfraError(
            f"refused: {len(p.data_loss)} of these deletions destroy data for good "
            f"({'; '.join(f'{c.kind} {c.name}: {c.data_loss}' for c in p.data_loss)}); nothing deleted. "
            "If that is what you want, pass --allow-data-loss and type the node's name back "
            f"(--confirm {' --confirm '.join(losers) if not all_ else desired.cluster})"
        )

    def typed_back(name: str, what: str) -> None:
        if name in typed:
            return
        if typed:
            raise NixInfraError(
                f"confirmation {', '.join(map(repr, typed))} does not match {name}. {what}: to confirm, "
                f"pass --confirm {name}; nothing deleted"
            )
        if not sys.stdin.isatty():
            raise NixInfraError(f"{what}: to confirm, pass --confirm {name}; nothing deleted")
        answer = click.prompt(f"{what}. Type {name} to confirm", err=True)
        if answer != name:
            raise NixInfraError(f"confirmation {answer!r} does not match {name}; nothing deleted")

    if all_:
        typed_back(desired.cluster, f"This deletes every resource of cluster {desired.cluster}")
    elif p.data_loss:
        for node in losers:
            typed_back(node, f"This destroys the data of node {node}")
    else:
        _confirm(opts, f"Delete the servers of {', '.join(nodes)} in cluster {desired.cluster}?")
    deleted = apply_destroy(
        client, p, lambda m: console.print(m), facts=opts.facts(), nodes=None if all_ else list(nodes)
    )
    gone = [c.name for c in p.of("delete", "volume")]
    if opts.json_output:
        click.echo(json.dumps({"deleted_servers": deleted, "deleted_volumes": gone, "all": all_}))
    else:
        console.print(
            f"deleted {len(deleted)} server(s) and {len(gone)} volume(s)"
            + (" and every other resource" if all_ else "")
        )


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


PHASES = {  # what each deploy phase is doing, in the words the progress lines use
    "build": "building the systems (nix build)",
    "copy": "copying the system (nix copy)",
    "activate": "activating (detached on the node, rolls back by itself unless confirmed)",
    "confirm": "confirming over a fresh SSH connection; waiting for the node to report",
    "install": "installing NixOS (nixos-anywhere)",
    "seed": "seeding etcd",
    "rollback": "rolling back",
}
QUIET_SECONDS = 5.0  # the longest the progress output stays silent while something runs


class EventPrinter:
    """Deploy/rollback progress: a line per event; while a step runs, a line at least every
    QUIET_SECONDS saying what is being waited for (also with --json: a "waiting" event)."""

    def __init__(self, opts: Options, console: Console, quiet_seconds: float = QUIET_SECONDS) -> None:
        self.opts, self.console, self.quiet = opts, console, quiet_seconds
        self.lock = threading.Lock()
        self.start: float | None = None
        self.last_output = time.monotonic()
        self.running: dict[str, tuple[str, float]] = {}  # node ('' = all) -> (phase, since)
        self.stopped = threading.Event()
        self.ticker = threading.Thread(target=self._tick, name="progress", daemon=True)

    def __enter__(self) -> EventPrinter:
        self.ticker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.ticker.join()

    def _tick(self) -> None:
        while not self.stopped.wait(0.5):
            with self.lock:
                now = time.monotonic()
                if not self.running or now - self.last_output < self.quiet:
                    continue
                for node, (phase, since) in sorted(self.running.items()):
                    if self.opts.json_output:
                        click.echo(json.dumps({"event": "waiting", "node": node or None, "phase": phase,
                                               "seconds": round(now - since, 1), "time": time.time()}))  # fmt: skip
                    else:
                        label = PHASES.get(phase, phase)
                        self.console.print(f"{'':>7} {node:>12}  … still {label} ({now - since:.0f} s)", markup=False)
                self.last_output = now

    def __call__(self, event: dict[str, Any]) -> None:
        with self.lock:
            self._track(event)
            self.last_output = time.monotonic()
            if self.opts.json_output:
                click.echo(json.dumps(event))
                return
            self._show(event)

    def _track(self, event: dict[str, Any]) -> None:
        node = event.get("node") or ""
        kind = event["event"]
        if kind == "phase":
            if event["phase"] == "build":
                self.running.clear()
            self.running[node] = (event["phase"], time.monotonic())
            if node:
                self.running.pop("", None)  # the cluster-wide step (the build) is over
        elif kind in ("copied", "switched", "unchanged", "failed", "unhealthy", "rolled-back", "retry"):
            self.running.pop(node, None)
        elif kind == "seeded":
            self.running.pop("", None)

    def _show(self, event: dict[str, Any]) -> None:
        console = self.console
        self.start = self.start if self.start is not None else event["time"]
        node = f"{event['time'] - self.start:6.1f}s {event.get('node') or '':>12}"
        kind = event["event"]
        if kind == "phase":
            console.print(
                f"{node:>14}  {PHASES.get(event['phase'], event['phase'])}"
                + (f" (attempt {event['attempt']})" if event.get("attempt", 1) > 1 else ""),
                markup=False,
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
            reason = str(event.get("error") or "").strip().splitlines()
            console.print(
                f"{node:>14}  retrying {event['phase']} (attempt {event.get('attempt', '?')} failed"
                + (f": {reason[-1]})" if reason else ")"),
                style="yellow",
                markup=False,
            )
        elif kind == "pending":
            console.print(
                f"{node:>14}  activation {event['token']} left {event['status']} by an earlier run", markup=False
            )
        elif kind == "settled":
            console.print(f"{node:>14}  activation {event['token']}: {event['status']}", markup=False)
        elif kind == "cache" and event.get("hits"):
            console.print(
                f"{node:>14}  {len(event['hits'])} node(s) with the sources of their last deploy: not evaluated "
                "or built (--no-cache builds them)",
                markup=False,
            )
        elif kind == "cache-stale":
            console.print(
                f"{node:>14}  runs {generation_name(event.get('running'))}, not {generation_name(event['recorded'])} "
                "(its last deploy's): building and deploying it",
                markup=False,
            )
        elif kind == "cache-skipped":
            console.print(f"{node:>14}  not recorded in the deploy cache: {event['reason']}", style="yellow")


def _summary(opts: Options, outcomes: list[NodeOutcome], console: Console, what: str = "deploy") -> None:
    if opts.json_output:
        click.echo(json.dumps({"event": "summary", "command": what, "nodes": [o.to_json() for o in outcomes]}))
        return
    table = Table(title=f"{what} summary")
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
@click.option(
    "--no-cache",
    is_flag=True,
    help="Evaluate and build every node's system even when the flake is unchanged since the node's last "
    "successful deploy (also NIX_INFRA_NO_CACHE=1).",
)
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
    no_cache: bool,
) -> None:
    """Provision, then build every system here, copy it, and activate it in waves.

    Each ctrl node is activated alone (etcd keeps its quorum), the others in
    health-gated batches. Every activation runs detached on the node and rolls
    back by itself unless this command confirms over a fresh SSH connection
    within --confirm-timeout. A failed batch stops the rollout. Certificates
    missing from pki/ are issued first; once the ctrl nodes are done, etcd gets
    the manifest's static mesh keys (as `etcd seed`). Exit status is 0 only when
    every target runs its new system and is healthy, and etcd is seeded.

    A no-op deploy does no work: when the flake's files (those Nix sees: the
    tracked files of a git flake, every file of a path: flake), its lock, the
    versions of this program and of Nix, and the NIX_INFRA_* settings (but
    timeouts and poll intervals) are what they were at a node's last successful
    deploy, the manifest and that node's system are neither evaluated nor
    built; one connection checks that the node still runs the system recorded
    then (.nix-infra/deployed.json), and a node that runs anything else is
    built and deployed again. --no-cache (or
    NIX_INFRA_NO_CACHE=1) evaluates and builds everything.

    \b
    Examples:
      nix-infra deploy
      nix-infra deploy --on @worker --batch-size 2
      nix-infra --json deploy --on ctrl001,worker001 | jq -c .
    """
    console = progress_printer()
    cache = None if no_cache or cache_disabled(os.environ) else cache_use(opts.state_dir(), opts.flake, os.environ)
    planned = _deploy_manifest(opts, cache)
    # before anything in the cloud or on a node is touched: every secret there, and it decrypts
    from nix_infra.cli_secrets import needed_secrets

    secrets = needed_secrets(opts, planned, [n.name for n in select(planned, on)])
    ask_first = bool(click.get_current_context().meta.get(DEFAULT_COMMAND))
    targets = [n.name for n in select(planned, on)]
    if ask_first and no_provision:
        console.print(f"deploy to {len(targets)} node(s) of cluster {planned.cluster}: {', '.join(targets)}")
        _confirm(opts, "Deploy?")
    # one deploy per cluster at a time (etcd), held until click closes this command's context
    from nix_infra.deploylock import cluster_deploy_lock

    click.get_current_context().with_resource(
        cluster_deploy_lock(opts, planned, targets, "nix-infra deploy", break_lock)
    )
    if not no_provision:  # the Hetzner layer is imported here: a fifth of a second a --no-provision deploy saves
        from nix_infra.hetzner.apply import Applier, problems_error
        from nix_infra.hetzner.model import read_actual
        from nix_infra.hetzner.render import render_plan

        client, desired = opts.hetzner(planned)
        actual, p = current_plan(client, desired)
        if p.problems:
            raise problems_error(p)
        if ask_first:  # `nix-infra` alone: the whole plan first, then one question
            if not opts.json_output:
                render_plan(p, console)
            console.print(f"deploy to {len(targets)} node(s) of cluster {planned.cluster}: {', '.join(targets)}")
            cloud = f"apply these {len(p.changes)} cloud changes and deploy" if p.has_changes else "deploy"
            _confirm(opts, f"{cloud[0].upper()}{cloud[1:]}?")
        if p.has_changes:
            if not opts.json_output and not ask_first:
                render_plan(p, console)
            if not ask_first:
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
        printer := EventPrinter(opts, console),
        cache=cache,
    )
    if not no_seed:
        deployer.seeder = _prepare_seeding(opts, manifest, deployer)
    deployer.deliverer = _prepare_delivery(opts, manifest, secrets, with_pki=not no_seed)
    with printer:
        outcomes = deployer.run(nodes)
    _summary(opts, outcomes, console)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise NixInfraError(failure_message(failed) + (f"\n{deployer.seed_error}" if deployer.seed_error else ""))
    if deployer.seed_error:
        raise NixInfraError(f"seeding etcd failed: {deployer.seed_error}")


def _deploy_manifest(opts: Options, cache: CacheUse | None) -> Manifest:
    """The manifest: from the cache when the flake is unchanged since it was evaluated, else
    evaluated (and cached, unless the files changed while Nix read them). --manifest FILE is read."""
    if cache is None or opts.manifest_file is not None:
        return opts.load_manifest()
    data = cache.store.manifest(cache.key)
    if data is not None:
        return parse_manifest(data)
    manifest = opts.load_manifest()
    if cache.still_valid():
        cache.store.record_manifest(cache.key, manifest.raw)
    return manifest


def failure_message(failed: list[NodeOutcome], what: str = "deploy") -> str:
    """What failed and what never started, naming only what there is ("deploy failed on ;" never)."""
    broken = [o.node for o in failed if o.result != "not-started"]
    waiting = [o.node for o in failed if o.result == "not-started"]
    parts = []
    if broken:
        parts.append(f"{what} failed on {', '.join(broken)}")
    if waiting:
        parts.append(f"{len(waiting)} node(s) not started ({', '.join(waiting)})")
    return "; ".join(parts) if parts else f"{what} failed"


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


def per_node_status(
    opts: Options, nodes: list[Node], desired: dict[str, str], settings: SshSettings
) -> list[NodeStatus]:
    """One row per node, whatever each one's state: a node nix-infra cannot connect to (no facts,
    no pinned host key) is an unreachable row saying why, not an error for the whole table."""
    facts = opts.facts()
    rows: dict[str, NodeStatus] = {}
    reachable: list[Node] = []
    for node in nodes:
        try:
            ssh_target(node, facts, settings)
        except NixInfraError as exc:
            rows[node.name] = NodeStatus(node.name, False, "unreachable", None, desired.get(node.name), (), exc.message)
        else:
            reachable.append(node)
    for row in node_status(reachable, facts, settings, desired, parallel=10) if reachable else []:
        rows[row.node] = row
    lost = NodeStatus("", False, "unreachable", None, None, (), "no answer")
    return [rows.get(n.name) or replace(lost, node=n.name, desired=desired.get(n.name)) for n in nodes]


def _why(row: NodeStatus) -> str:
    """An unreachable node's reason, short enough for a table cell (--json has it whole)."""
    reason = row.error.removeprefix(f"{row.node}: ").split(". ")[0].split(", so ")[0].strip()
    return reason or "no answer over SSH"


@cli.command("status")
@click.option("--on", "on", multiple=True, metavar="SEL", help="Only these nodes (as for deploy).")
@click.option(
    "--drift",
    is_flag=True,
    help="Also evaluate each node's desired NixOS system (slow: every configuration); compare with the running one.",
)
@click.pass_obj
def status_cmd(opts: Options, on: tuple[str, ...], drift: bool) -> None:
    """Cluster health at a glance: per node reachable (or why not), system state, failed units.

    Every node is a row, also one without facts or unreachable (the last
    column says why). With --drift each node's desired system is evaluated
    (every NixOS configuration: slow) and compared with the one it runs.
    Exit status is 1 when any node is unreachable, degraded, has failed units
    or (with --drift) does not run its desired system.

    \b
    Examples:
      nix-infra status
      nix-infra status --drift
      nix-infra --json status --on @ctrl
    """
    manifest = opts.load_manifest()
    nodes = select(manifest, on)
    if drift and opts.manifest_file is not None:
        raise NixInfraError("--drift needs the cluster flake (it evaluates the NixOS systems), not --manifest")
    desired = desired_systems(opts.flake, nodes) if drift else {}
    rows = per_node_status(opts, nodes, desired, opts.ssh_settings())
    if opts.json_output:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        table = Table(title=f"cluster {manifest.cluster}")
        for column in ("node", "type", "reachable", "system", "running", "failed units", "detail"):
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
                _why(r) if not r.reachable else "-",
            )
        console = Console(highlight=False)
        if not console.is_terminal:  # piped or captured: whole rows, not rows folded into 80 columns
            console = Console(highlight=False, width=200)
        console.print(table)
    if not all(r.ok for r in rows):
        raise click.exceptions.Exit(1)


@cli.command("cmd", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
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

    def state(code: int) -> str:
        return "ok" if code == 0 else ("unreachable" if code == 255 else f"exit {code}")

    rows = [
        {"node": n, "exit_code": r.returncode, "state": state(r.returncode), "stdout": r.stdout, "stderr": r.stderr}
        for n, r in results
    ]
    failed = [n for n, r in results if r.returncode != 0]
    message = f"the command failed on {len(failed)} of {len(results)} node(s): {', '.join(failed)}"
    if opts.json_output:  # one document: the results, and the error when there is one
        error = {"error": {"message": message, "exit_code": 1}} if failed else {}
        click.echo(json.dumps({"results": rows, **error}, indent=2))
        if failed:
            click.secho(f"error: {message}", fg="red", err=True)
            raise click.exceptions.Exit(1)
        return
    for name, result in results:
        for line in (result.stdout + result.stderr).splitlines():
            click.echo(f"{name:<{width}} | {line}")
    click.echo("")
    for name, result in results:
        click.echo(f"{name:<{width}}  {state(result.returncode)}")
    if failed:
        raise NixInfraError(message)


@cli.command("ssh", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("node", callback=param(check_node_name))
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def ssh_cmd(opts: Options, node: str, command: tuple[str, ...]) -> None:
    """Open a shell on NODE (or run COMMAND there), with its pinned host key.

    Every word after NODE belongs to COMMAND (global options go before NODE); as
    with OpenSSH and `cmd`, the words are joined by spaces and run by the node's
    shell, so quote what the shell must not see (`-- 'echo hi; exit 3'`).

    \b
    Examples:
      nix-infra ssh worker001
      nix-infra ssh ctrl001 -- journalctl -fu etcd
    """
    if command[:1] == ("--",):  # after NODE every word is the command's; `--` only separates
        command = command[1:]
    manifest = opts.load_manifest()
    target_node = one_node(manifest, node)
    target = ssh_target(target_node, opts.facts(), opts.ssh_settings())
    # as OpenSSH (and `cmd`): the words are joined by spaces and run by the node's shell
    remote = ["/bin/sh", "-c", " ".join(command)] if command else []
    argv = ssh_argv(target, remote, tty=not command and sys.stdin.isatty())
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
        printer := EventPrinter(opts, console),
    )
    with printer:
        outcomes = deployer.rollback(nodes)
    _summary(opts, outcomes, console, "rollback")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise NixInfraError(failure_message(failed, "rollback"))


_confirm = confirm  # nix_infra.options.confirm, shared with the command groups in other files


def _result(opts: Options, status: str, p: Plan) -> None:
    if opts.json_output:
        click.echo(json.dumps({"status": status, "applied": p.to_json()}, indent=2))
    else:
        click.echo(status)


from nix_infra.cli_backup import backup_group  # noqa: E402
from nix_infra.cli_secrets import action_cmd, secret_group  # noqa: E402  (commands register on `cli`)
from nix_infra.cli_state import etcd_group, init_cmd, pki_group  # noqa: E402

cli.add_command(init_cmd)
cli.add_command(secret_group)
cli.add_command(action_cmd)
cli.add_command(pki_group)
cli.add_command(etcd_group)
cli.add_command(backup_group)
from nix_infra.cli_sandbox import install as install_sandbox  # noqa: E402

install_sandbox(cli)  # `sandbox`, and every other command targets a running sandbox


def _wants_json(argv: list[str]) -> bool:
    """--json among the options (not in a remote command after `--`)."""
    words = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in words


def _printable(message: str) -> str:
    """The message with C0/C1 control characters (but newline and tab) and bidi overrides escaped:
    values from repo files and manifests reach it, and a terminal would obey them."""
    return "".join(
        c
        if c in "\n\t" or not (unicodedata.category(c) in ("Cc", "Cf") or "\u2066" <= c <= "\u2069")
        else c.encode("unicode_escape").decode("ascii")
        for c in message
    )


def _fail(message: str, code: int, as_json: bool) -> NoReturn:
    """The error as text on stderr, and with --json also as the one JSON document on stdout."""
    message = _printable(message)
    click.secho(f"error: {message}" if code != EXIT_INTERRUPTED else message, fg="red", err=True)
    if as_json:
        click.echo(json.dumps({"error": {"message": message, "exit_code": code}}))
    sys.exit(code)


EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT (128 + 2)


def main() -> None:
    """Entry point: user errors become one message and an exit code, no traceback."""
    args = sys.argv[1:]
    debug = "--debug" in (args[: args.index("--")] if "--" in args else args)
    as_json = _wants_json(args)
    try:
        code = cli.main(standalone_mode=False, prog_name="nix-infra")  # returns the code of a ctx.exit() / Exit
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except NixInfraError as exc:
        if debug:
            raise
        _fail(exc.message, exc.exit_code, as_json)
    except KeyboardInterrupt:  # outside a deploy's own handling (which says what is left running)
        if debug:
            raise
        _fail("interrupted", EXIT_INTERRUPTED, as_json)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt):
            _fail("interrupted", EXIT_INTERRUPTED, as_json)
        if as_json:
            _fail("aborted", 1, as_json)
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        if as_json:
            click.echo(json.dumps({"error": {"message": exc.format_message(), "exit_code": exc.exit_code}}))
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    finally:
        # the run's SSH sessions end with it (imported only by commands that reach nodes)
        sessions = sys.modules.get("nix_infra.session")
        if sessions is not None:
            sessions.SESSIONS.close_all()
