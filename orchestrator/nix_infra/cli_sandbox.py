"""`nix-infra sandbox up|down|status|demo`, and the redirection of every other command to a running sandbox."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import click

from nix_infra.errors import NixInfraError
from nix_infra.options import Options, SafePath
from nix_infra.sandbox import control
from nix_infra.sandbox.state import SandboxPaths


@dataclass(frozen=True)
class SandboxOptions(Options):
    """The global options of a command in a repo whose sandbox runs: its stand-in flake, its facts,
    its servers' SSH port, the SSH key and identity it was started with; the repo stays the repo."""

    sandbox_repo: Path = Path(".")

    def repo_dir(self) -> Path:
        return self.sandbox_repo

    def state_dir(self) -> Path:
        """The sandbox's own state directory: what deploy caches about its servers goes with them."""
        return SandboxPaths(self.sandbox_repo).root


def sandbox_options(opts: Options, target: control.Target) -> SandboxOptions:
    values: dict[str, Any] = {f.name: getattr(opts, f.name) for f in fields(Options)}
    values.update(
        flake=opts.flake if opts.manifest_file is not None else control.standin_flake_ref(target.paths),
        facts_dir=target.paths.facts,
        ssh_port=control.SSH_PORT,
        sandbox_repo=target.paths.repo,
    )
    if opts.ssh_key is None and target.config.ssh_key:
        values["ssh_key"] = Path(target.config.ssh_key)
    if opts.identity_file is None and target.config.identity and not _env_identity():
        values["identity_file"] = Path(target.config.identity)
    return SandboxOptions(**values)


def _env_identity() -> bool:
    import os

    return bool(os.environ.get("NIX_INFRA_IDENTITY"))


def install(group: click.Group) -> None:
    """Wrap the group's callback: in a repo with a running sandbox, every command (but `sandbox`
    itself) targets it and says so first."""
    original = group.callback
    assert original is not None

    @functools.wraps(original)
    def callback(*args: Any, **kwargs: Any) -> Any:
        value = original(*args, **kwargs)
        ctx = click.get_current_context()
        if ctx.invoked_subcommand in (None, "sandbox") or not isinstance(ctx.obj, Options):
            return value
        target = control.find_target(ctx.obj.repo_dir())
        if target is not None:
            click.echo(target.banner(), err=True)
            ctx.with_resource(control.environment(target.environment()))
            ctx.obj = sandbox_options(ctx.obj, target)
        return value

    group.callback = callback
    group.add_command(sandbox_group)


def _say(msg: str) -> None:
    click.echo(msg, err=True)


@click.group("sandbox")
def sandbox_group() -> None:
    """A local stand-in for a Hetzner project: rehearse the whole pipeline on this machine.

    `sandbox up` (in a cluster repo) starts, in the background, a fake Hetzner API, a local
    server for each server it creates (sshd in its own mount namespace, its own Nix store, the
    real systemd-creds) and a real etcd with the cluster's PKI. While it runs, every command in
    the repo targets it and says so. Nodes run small stand-in systems built with plain Nix from
    each node's manifest entry (not NixOS); everything else is the real pipeline. See
    docs/sandbox.md.

    \b
    Examples:
      nix-infra sandbox demo                 # the whole job, in a new directory
      nix-infra init && nix-infra sandbox up # in your cluster repo
      nix-infra sandbox status
      nix-infra sandbox down                 # nothing left running or on disk
    """


def _repo(opts: Options) -> Path:
    return opts.repo_dir().resolve()


@sandbox_group.command("up")
@click.pass_obj
def up_cmd(opts: Options) -> None:
    """Start the repo's sandbox in the background (idempotent).

    Needs the cluster's PKI (`nix-infra init`) when the cluster has a ctrl node. The SSH key
    (--ssh-key) and identity (--identity / NIX_INFRA_IDENTITY) given here become the sandbox's
    defaults for every command in the repo.
    """
    identity_path = opts.identity_path()
    state = control.up(_repo(opts), identity_path, opts.identity, opts.ssh_key, _say)
    if opts.json_output:
        click.echo(json.dumps(control.status(_repo(opts)).to_json(), indent=2))
    else:
        click.echo(f"sandbox running (pid {state.pid}); `nix-infra sandbox status` shows it")


@sandbox_group.command("down")
@click.pass_obj
def down_cmd(opts: Options) -> None:
    """Stop everything the repo's sandbox started and remove its state (.nix-infra/sandbox)."""
    stopped = control.down(_repo(opts), _say)
    if opts.json_output:
        click.echo(json.dumps({"stopped": stopped}))
    else:
        click.echo("sandbox down" if stopped else "no sandbox was running; its state (if any) is removed")


@sandbox_group.command("status")
@click.pass_obj
def status_cmd(opts: Options) -> None:
    """What the repo's sandbox runs: pids, ports, servers. Exit 1 when none runs."""
    st = control.status(_repo(opts))
    if opts.json_output:
        click.echo(json.dumps(st.to_json(), indent=2))
    elif not st.running:
        click.echo(
            "no sandbox runs here"
            + ("; state of one that stopped is left: `nix-infra sandbox down` removes it" if st.leftovers else "")
        )
    else:
        click.echo(f"sandbox of {st.repo}: process {st.pid}")
        click.echo(f"  Hetzner API  {st.endpoint}")
        click.echo(f"  etcd         {st.etcd_url or '-'}" + (f" (pid {st.etcd_pid})" if st.etcd_pid else ""))
        for name, server in st.servers.items():
            click.echo(f"  server {name:<24} {server['ip']}:{server['port']}  sshd pid {server['pid']}")
        if not st.servers:
            click.echo("  no servers yet (`nix-infra provision` creates them)")
    if not st.running:
        raise click.exceptions.Exit(1)


@sandbox_group.command("demo")
@click.argument("directory", type=SafePath(path_type=Path, file_okay=False), default="nix-infra-demo", required=False)
def demo_cmd(directory: Path) -> None:
    """The whole job in a new cluster repo DIRECTORY (default ./nix-infra-demo), in under 3 minutes.

    A repo from the template (generated SSH key, age identity and secrets), init, sandbox up,
    plan, provision, deploy with live progress, status, etcd get; then a second deploy in which
    one node's activation fails and rolls back by itself. The sandbox stays up for exploring.
    """
    from nix_infra.sandbox.demo import demo

    result = demo(directory, _say)
    if result.failed_node is None:
        raise NixInfraError("the demo cluster has no node besides ctrl nodes; the rollback was not shown")
