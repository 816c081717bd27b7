"""Commands for backups: `backup run/list/restore NODE APP` (click layer only; nix_infra.backup does the work)."""

from __future__ import annotations

import json

import click

from nix_infra import backup
from nix_infra.deploy import ssh_target
from nix_infra.errors import NixInfraError
from nix_infra.options import Options, check_app_name, check_node_name, confirm, param
from nix_infra.ssh import SshTarget


def _target(opts: Options, node: str, app: str) -> SshTarget:
    manifest = opts.load_manifest()
    if node not in manifest.nodes:
        raise NixInfraError(f"NODE {node!r} is not in the manifest; nodes: {', '.join(manifest.nodes)}")
    if app not in manifest.nodes[node].apps:
        hosted = ", ".join(manifest.nodes[node].apps) or "none"
        raise NixInfraError(f"APP {app!r} does not run on {node}; apps there: {hosted}")
    return ssh_target(manifest.nodes[node], opts.facts(), opts.ssh_settings())


@click.group("backup")
def backup_group() -> None:
    """Back up and restore stateful apps (restic; see docs/data.md).

    \b
    Examples:
      nix-infra backup run service001 db
      nix-infra backup list service001 db
      nix-infra backup restore service001 db --snapshot 4f2a9c1e
      nix-infra backup restore service001 db --to /var/lib/restore-check
    """


@backup_group.command("run")
@click.argument("node", callback=param(check_node_name))
@click.argument("app", callback=param(check_app_name))
@click.pass_obj
def run_cmd(opts: Options, node: str, app: str) -> None:
    """Back APP up now: its dump, then restic backup and the retention policy, with progress."""
    backup.run_backup(_target(opts, node, app), app)
    click.echo(f"{node}: backed up {app}", err=True)


@backup_group.command("list")
@click.argument("node", callback=param(check_node_name))
@click.argument("app", callback=param(check_app_name))
@click.pass_obj
def list_cmd(opts: Options, node: str, app: str) -> None:
    """APP's snapshots in its repository, oldest first."""
    snapshots = backup.list_snapshots(_target(opts, node, app), app)
    if opts.json_output:
        click.echo(json.dumps([s.__dict__ for s in snapshots], indent=2, default=list))
        return
    if not snapshots:
        click.echo(f"{app}: no snapshots yet (nix-infra backup run {node} {app})")
    for s in snapshots:
        click.echo(f"{s.short_id}  {s.time[:19]}  {s.host}  {' '.join(s.paths)}")


@backup_group.command("restore")
@click.argument("node", callback=param(check_node_name))
@click.argument("app", callback=param(check_app_name))
@click.option("--snapshot", metavar="ID", callback=param(backup.check_snapshot), help="Snapshot ID (default: latest).")
@click.option(
    "--to",
    "to",
    metavar="PATH",
    callback=param(backup.check_restore_path),
    help="Restore the snapshot's files under PATH on the node and leave the app alone.",
)
@click.pass_obj
def restore_cmd(opts: Options, node: str, app: str, snapshot: str | None, to: str | None) -> None:
    """Restore APP from a snapshot: PostgreSQL loads the dump (the database is replaced), other apps'
    units are stopped, their paths replaced and started again. With --to only the files are restored.

    It asks first, naming what is replaced (or pass --yes)."""
    if to is None:
        confirm(opts, f"Replace the data of {app} on {node} with snapshot {snapshot or 'latest'}?")
    backup.restore(_target(opts, node, app), app, snapshot=snapshot, to=to)
    click.echo(f"{node}: restored {app}" + (f" to {to}" if to else ""), err=True)
