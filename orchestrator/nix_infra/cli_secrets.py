"""Commands for secrets: `secret set/list/rm/rotate/rekey` and `action` (click layer only)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import BinaryIO

import click

from nix_infra.controlplane import node_pki_credentials
from nix_infra.delivery import DeliveryResult, check_node_names, deliver, node_values, pki_credential_names
from nix_infra.deploy import ssh_target
from nix_infra.errors import NixInfraError
from nix_infra.lock import in_repo_lock, repo_lock
from nix_infra.manifest import Manifest
from nix_infra.options import (
    Options,
    SafePath,
    check_action_name,
    check_app_name,
    check_env_pair,
    check_node_name,
    param,
)
from nix_infra.process import run_attached
from nix_infra.secrets import (
    CREDENTIAL_SIZE_MAX,
    SecretStore,
    check_delivery_sizes,
    check_name,
    missing_secrets,
    secret_users,
    strip_final_newline,
)
from nix_infra.ssh import run_remote, ssh_argv


def _read_capped(stream: BinaryIO, what: str) -> bytes:
    """At most what the store accepts (plus the newline that may be stripped); more is an error,
    so a runaway pipe is never read into memory whole."""
    data = stream.read(CREDENTIAL_SIZE_MAX + 3)
    if len(data) > CREDENTIAL_SIZE_MAX + 2:
        raise NixInfraError(
            f"{what}: the value is over {CREDENTIAL_SIZE_MAX} bytes, the most a systemd credential holds; "
            "nothing was stored"
        )
    return data


def read_value(from_file: Path | None, name: str, keep_newline: bool = False) -> bytes:
    """The new value: --from-file, else stdin when it is not a terminal, else a hidden prompt (twice).

    One rule for every channel: exactly one trailing newline ("\\n" or "\\r\\n") is dropped, unless
    keep_newline (then the bytes are kept exactly as read)."""
    if from_file is not None:
        try:
            with from_file.open("rb") as f:
                value = _read_capped(f, f"--from-file {from_file}")
        except IsADirectoryError:
            raise NixInfraError(f"--from-file {from_file}: is a directory; expected a file") from None
        except OSError as e:
            raise NixInfraError(f"--from-file {from_file}: cannot be read ({e.strerror})") from None
    elif not sys.stdin.isatty():
        value = _read_capped(sys.stdin.buffer, "stdin")
    else:
        typed: str = click.prompt(f"Value of {name}", hide_input=True, confirmation_prompt=True, err=True)
        value = typed.encode()
    return value if keep_newline else strip_final_newline(value)


KEEP_NEWLINE_HELP = (
    "Keep the value's bytes exactly. By default one trailing newline (\\n or \\r\\n) is dropped, "
    "whether the value comes from stdin, --from-file or the prompt."
)


def needed_secrets(opts: Options, manifest: Manifest, nodes: list[str]) -> dict[str, bytes]:
    """The values of every secret the nodes need, decrypted into memory; a missing secret
    (naming the nodes) or an identity that cannot decrypt one is an error."""
    for name in nodes:  # names that would reach the nodes (delivery checks them again)
        check_node_names(manifest.nodes[name], manifest)
    store = SecretStore(opts.repo_dir())
    missing = missing_secrets(store, manifest, nodes)
    if missing:
        raise NixInfraError(missing_message(missing))
    wanted = sorted({s for n in nodes for s in manifest.nodes[n].credentials})
    values = {s: store.get(s, opts.identity()) for s in wanted}
    check_delivery_sizes(manifest, nodes, values)
    return values


def deliver_node(
    opts: Options, manifest: Manifest, name: str, secrets: dict[str, bytes], with_pki: bool, held: list[str] | None
) -> DeliveryResult | None:
    """One node's credentials: its secrets (from `secrets`) plus, with_pki, its etcd TLS material.
    None, without connecting, when the node needs none and holds none (`held` from the probe;
    None: unknown, so deliver)."""
    node = manifest.nodes[name]
    extra = node_pki_credentials(opts.repo_dir(), node, opts.identity) if with_pki else {}
    values = node_values(node, secrets.__getitem__, extra)
    if not values and held == []:
        return None
    # without the PKI step (deploy --no-seed) its credentials are left as they are, not pruned
    keep = () if with_pki else pki_credential_names(node)
    return deliver(ssh_target(node, opts.facts(), opts.ssh_settings()), node, values, keep=keep)


def deliver_to_nodes(opts: Options, manifest: Manifest, nodes: list[str]) -> list[DeliveryResult]:
    """Deliver every credential the given nodes need (secrets and PKI material), now."""
    secrets = needed_secrets(opts, manifest, nodes)
    results = [deliver_node(opts, manifest, name, secrets, True, None) for name in nodes]
    return [r for r in results if r is not None]


def missing_message(missing: dict[str, list[str]]) -> str:
    lines = [f"  {secret}: needed by {', '.join(nodes)}" for secret, nodes in sorted(missing.items())]
    return (
        "secrets missing from secrets/ (nothing was touched):\n"
        + "\n".join(lines)
        + "\nset each with `nix-infra secret set NAME`"
    )


@click.group("secret")
def secret_group() -> None:
    """The encrypted secret store: secrets/<name>.age, age-encrypted to secrets/recipients.txt.

    Values never touch the disk in the clear, never appear in argv or logs.
    deploy delivers each node the secrets of its apps as systemd credentials.
    Secret names: 1-64 letters, digits, '.', '_', '-', not starting with '.' or '-'.
    """


@secret_group.command("set")
@click.argument("name", callback=param(check_name))
@click.option("--from-file", type=SafePath(path_type=Path, dir_okay=False), metavar="FILE", help="Read the value.")
@click.option("--keep-newline", is_flag=True, help=KEEP_NEWLINE_HELP)
@click.pass_obj
@in_repo_lock
def secret_set_cmd(opts: Options, name: str, from_file: Path | None, keep_newline: bool) -> None:
    """Store NAME's value (stdin, --from-file, or a hidden prompt), encrypted to every recipient.

    One trailing newline is dropped from the value, however it came in (so
    `openssl rand -hex 32 | ...` stores the 64 characters); --keep-newline keeps
    the bytes exactly. A value is 1 byte to 1 MiB (systemd's credential limit).

    \b
    Examples:
      nix-infra secret set api-token                 # asks, hidden, twice
      openssl rand -hex 32 | nix-infra secret set db-pass
      nix-infra secret set tls.key --from-file ./tls.key
    """
    check_name(name)
    SecretStore(opts.repo_dir()).set(name, read_value(from_file, name, keep_newline))
    click.echo(json.dumps({"stored": f"secrets/{name}.age"}) if opts.json_output else f"stored secrets/{name}.age")


@secret_group.command("list")
@click.pass_obj
def secret_list_cmd(opts: Options) -> None:
    """Every secret: recipients, which node/app uses it (per the manifest), whether it decrypts for you.

    When your identity cannot be loaded (missing file, wrong passphrase) the
    list says why instead of whether each decrypts. Exit status is 1 when a
    secret the manifest uses is MISSING.

    \b
    Examples:
      nix-infra secret list
      nix-infra --json secret list
    """
    store = SecretStore(opts.repo_dir())
    manifest = opts.load_manifest()
    identity_error = None
    try:
        identity = opts.identity()
    except NixInfraError as exc:
        identity, identity_error = None, exc.message
    rows = store.info(manifest, identity)
    missing = [r.name for r in rows if r.recipients == 0]
    if opts.json_output:
        click.echo(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "stored": r.recipients > 0,
                        "recipients": r.recipients,
                        "decrypts": r.decrypts,
                        "used_by": list(r.users),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
    else:
        unknown = "- (identity not loaded)" if identity_error else "-"
        for r in rows:
            state = "MISSING" if r.recipients == 0 else f"{r.recipients} recipient(s)"
            dec = {True: "decrypts", False: "does NOT decrypt for you", None: unknown}[r.decrypts]
            click.echo(f"{r.name:<24} {state:<16} {dec:<26} used by: {', '.join(r.users) or 'nothing'}")
    if identity_error:
        click.echo(f"warning: cannot tell whether the secrets decrypt for you: {identity_error}", err=True)
    if missing:
        click.echo(
            f"{len(missing)} secret(s) MISSING: {', '.join(missing)}; set each with `nix-infra secret set NAME`",
            err=True,
        )
        raise click.exceptions.Exit(1)


@secret_group.command("rm")
@click.argument("name", callback=param(check_name))
@click.option("--force", is_flag=True, help="Remove it even though the manifest still uses it.")
@click.pass_obj
@in_repo_lock
def secret_rm_cmd(opts: Options, name: str, force: bool) -> None:
    """Remove a secret from the store (refused while the manifest still uses it, unless --force).

    \b
    Examples:
      nix-infra secret rm old-token
    """
    check_name(name)
    users = secret_users(opts.load_manifest()).get(name, [])
    if users and not force:
        raise NixInfraError(f"secret {name} is still used by {', '.join(users)}; remove it from the flake or --force")
    SecretStore(opts.repo_dir()).remove(name)
    click.echo(json.dumps({"removed": f"secrets/{name}.age"}) if opts.json_output else f"removed secrets/{name}.age")


@secret_group.command("rotate")
@click.argument("name", callback=param(check_name))
@click.option("--from-file", type=SafePath(path_type=Path, dir_okay=False), metavar="FILE", help="Read the value.")
@click.option("--keep-newline", is_flag=True, help=KEEP_NEWLINE_HELP)
@click.option("--deploy", "deploy_now", is_flag=True, help="Deliver it now and restart the units that load it.")
@click.pass_obj
@in_repo_lock
def secret_rotate_cmd(opts: Options, name: str, from_file: Path | None, keep_newline: bool, deploy_now: bool) -> None:
    """Replace NAME's value; the next deploy delivers it (or now, with --deploy) and restarts its units.

    The value is read as for `secret set` (one trailing newline dropped unless --keep-newline).

    \b
    Examples:
      openssl rand -hex 32 | nix-infra secret rotate db-pass --deploy
    """
    check_name(name)
    store = SecretStore(opts.repo_dir())
    if not store.exists(name):
        raise NixInfraError(f"secret {name} does not exist; use `nix-infra secret set {name}`")
    manifest = opts.load_manifest()
    store.set(name, read_value(from_file, name, keep_newline))
    nodes = sorted(n.name for n in manifest.nodes.values() if name in n.credentials)
    units = sorted({f"{n}: {u}" for n in nodes for u in manifest.nodes[n].credential_units.get(name, ())})
    if not deploy_now:
        if opts.json_output:
            click.echo(
                json.dumps({"stored": f"secrets/{name}.age", "delivered": False, "nodes": nodes, "units": units})
            )
            return
        click.echo(f"stored; the next deploy delivers it to {', '.join(nodes) or 'no node'} and restarts: "
                   f"{'; '.join(units) or 'nothing'}")  # fmt: skip
        return
    results = deliver_to_nodes(opts, manifest, nodes)
    report(opts, results)


def report(opts: Options, results: list[DeliveryResult]) -> None:
    if opts.json_output:
        click.echo(json.dumps([r.__dict__ for r in results], indent=2, default=list))
        return
    for r in results:
        click.echo(
            f"{r.node}: {len(r.changed)} changed, {len(r.unchanged)} unchanged, {len(r.removed)} removed; "
            f"restarted: {', '.join(r.restarted) or 'nothing'}"
            + (f"; restart FAILED: {', '.join(r.restart_failed)}\n{r.message}" if r.restart_failed else "")
        )
    failed = [r.node for r in results if r.restart_failed]
    if failed:
        raise NixInfraError(f"delivered, but units did not restart on {', '.join(failed)}")


@secret_group.command("rekey")
@click.pass_obj
@in_repo_lock
def secret_rekey_cmd(opts: Options) -> None:
    """Re-encrypt every secret and PKI key to the current secrets/recipients.txt.

    Run it after adding or removing a recipient. Everything is decrypted
    (in memory) before anything is rewritten.

    \b
    Examples:
      echo 'ssh-ed25519 AAAA... alice' >> secrets/recipients.txt && nix-infra secret rekey
    """
    files = SecretStore(opts.repo_dir()).rekey(opts.identity())
    click.echo(
        json.dumps({"reencrypted": [str(f) for f in files]})
        if opts.json_output
        else f"re-encrypted {len(files)} file(s)"
    )


@click.command("action", context_settings={"ignore_unknown_options": True})
@click.argument("node", callback=param(check_node_name))
@click.argument("app", callback=param(check_app_name))
@click.argument("action", callback=param(check_action_name))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--env", "env", multiple=True, metavar="K=V", callback=param(check_env_pair), help="Environment for the action."
)
@click.option(
    "--store-as-secret",
    "secret_name",
    metavar="NAME",
    callback=param(check_name),
    help="Put the action's stdout into the secret store as NAME; it is never printed.",
)
@click.option(
    "--keep-newline",
    is_flag=True,
    help="With --store-as-secret: store the output's bytes exactly (by default one trailing newline is dropped).",
)
@click.pass_obj
def action_cmd(
    opts: Options,
    node: str,
    app: str,
    action: str,
    args: tuple[str, ...],
    env: tuple[str, ...],
    secret_name: str | None,
    keep_newline: bool,
) -> None:
    """Run an app's action script on a node: /etc/nix-infra/actions/APP/ACTION [ARGS].

    The exit status is checked (and becomes this command's). With
    --store-as-secret NAME the output goes straight into the encrypted store,
    never to the terminal.

    \b
    Examples:
      nix-infra action worker001 api migrate
      nix-infra action service001 postgres create-user app --env ROLE=rw --store-as-secret db-pass
    """
    manifest = opts.load_manifest()
    if node not in manifest.nodes:
        raise NixInfraError(f"node {node!r} is not in the manifest; nodes: {', '.join(manifest.nodes)}")
    if app not in manifest.nodes[node].apps:
        hosted = ", ".join(manifest.nodes[node].apps) or "none"
        raise NixInfraError(f"app {app!r} does not run on {node}; apps there: {hosted}")
    if secret_name is not None:
        check_name(secret_name)
        SecretStore(opts.repo_dir()).recipients()  # fail before running anything if they are missing
    command = ["env", *env, f"/etc/nix-infra/actions/{app}/{action}", *args]
    target = ssh_target(manifest.nodes[node], opts.facts(), opts.ssh_settings())
    if secret_name is None:
        code = run_attached(ssh_argv(target, command), what=f"{node}: action {app}/{action}")
        if code != 0:
            raise NixInfraError(f"{node}: action {app}/{action} failed (exit {code})", exit_code=code)
        return
    # stdout is captured as bytes and goes only into the store
    result = run_remote(target, command, check=False)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-5:]
        raise NixInfraError(
            f"{node}: action {app}/{action} failed (exit {result.returncode}); nothing was stored"
            + ("\n" + "\n".join(tail) if tail else ""),
            exit_code=result.returncode,
        )
    output = result.stdout_bytes if keep_newline else strip_final_newline(result.stdout_bytes)
    with repo_lock(opts.repo_dir(), "nix-infra action --store-as-secret"):  # only the store's write
        SecretStore(opts.repo_dir()).set(secret_name, output)
    click.echo(f"stored the output of {app}/{action} as secrets/{secret_name}.age ({shlex.quote(node)})", err=True)
    if opts.json_output:
        click.echo(json.dumps({"stored": f"secrets/{secret_name}.age", "node": node, "app": app, "action": action}))
