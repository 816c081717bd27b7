"""Commands for the cluster repo's state: `init`, `pki`, `etcd` (click layer only)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nix_infra.controlplane import DirectEndpoint, connect, init_repo, issue_certificates
from nix_infra.deploy import ssh_target
from nix_infra.errors import NixInfraError
from nix_infra.lock import in_repo_lock, locked, repo_lock
from nix_infra.options import (
    Options,
    SafePath,
    check_cluster_name,
    check_endpoint,
    check_etcd_key,
    confirm,
    find_repo_root,
    local_flake_dir,
    param,
)
from nix_infra.pki import Pki, wanted_certificates

if TYPE_CHECKING:  # grpc (via the etcd client) loads only for the etcd commands
    from nix_infra.controlplane import ControlPlaneSeed
    from nix_infra.etcd import Etcd


@click.command("init")
@click.argument("directory", type=SafePath(path_type=Path, file_okay=False), default=None, required=False)
@click.option(
    "--cluster",
    metavar="NAME",
    callback=param(check_cluster_name),
    help="Cluster name for the CA (default: the manifest's, else the directory's).",
)
@click.option(
    "--recipient",
    "recipients",
    multiple=True,
    metavar="KEY",
    help="Public key (age1... or 'ssh-ed25519 AAAA...') for secrets/recipients.txt. Repeatable. "
    "Default: the public key of your identity.",
)
@click.pass_obj
@locked(lambda opts, **kw: init_directory(opts, kw["directory"]))
def init_cmd(opts: Options, directory: Path | None, cluster: str | None, recipients: tuple[str, ...]) -> None:
    """Create the cluster repo's state: recipients, facts/, the cluster CA.

    Writes secrets/recipients.txt (who can decrypt), facts/, pki/ca.crt (in
    the clear) and pki/ca.key.age (the CA key, only ever encrypted to the
    recipients). Anything that exists is left as it is, so running it again
    changes nothing. The state goes to the cluster repo's root (the nearest
    directory with a flake.nix at or above DIRECTORY, default the current
    one), wherever in it init runs; outside a cluster repo it refuses (with
    --manifest, DIRECTORY or the current directory is the repo).

    \b
    Examples:
      nix-infra init                                  # your ~/.ssh/id_ed25519.pub is the recipient
      nix-infra init infra --recipient age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
      nix-infra --identity ~/.config/age/key.txt init
    """
    directory = init_directory(opts, directory)
    name = cluster
    if name is None:
        try:
            name = opts.load_manifest().cluster
        except NixInfraError:
            name = directory.resolve().name
    report = init_repo(directory, name, recipients, opts.identity)
    if opts.json_output:
        click.echo(json.dumps({"created": report.created, "kept": report.kept}, indent=2))
        return
    for item in report.created:
        click.echo(f"created {directory / item}")
    for item in report.kept:
        click.echo(f"kept    {directory / item} (exists)")


def init_directory(opts: Options, directory: Path | None) -> Path:
    """Where init writes: the root of the cluster repo DIRECTORY (default: here) is in."""
    if opts.manifest_file is not None:
        return directory if directory is not None else opts.repo_dir()
    start = directory if directory is not None else (local_flake_dir(opts.flake) or Path.cwd())
    root = find_repo_root(start)
    if root is None:
        raise NixInfraError(
            f"init: {start} is not in a cluster repo (no flake.nix there or in a directory above it); "
            "create one first: `nix flake init -t github:OWNER/nix-infra` (see the README), then run init in it"
        )
    return root if directory is None or root != directory.resolve() else directory


@click.group("pki")
def pki_group() -> None:
    """The cluster PKI: a CA and etcd certificates for every node and for nix-infra.

    ctrl nodes get etcd server and peer certificates (their name, private IP,
    localhost); every node gets a client certificate (CN = node name); nix-infra
    gets an admin client certificate. Keys are stored only age-encrypted.
    """


@pki_group.command("status")
@click.pass_obj
def pki_status_cmd(opts: Options) -> None:
    """List the certificates the manifest needs and whether each must be issued.

    Exit status is 1 when any must be issued (`nix-infra pki issue` or the next deploy does it).

    \b
    Examples:
      nix-infra pki status
      nix-infra --json pki status
    """
    pki = Pki(opts.repo_dir())
    rows = [pki.state(spec) for spec in wanted_certificates(opts.load_manifest())]
    if opts.json_output:
        click.echo(json.dumps([{"name": r.spec.name, "issue": r.reason} for r in rows], indent=2))
    else:
        for r in rows:
            click.echo(f"{r.spec.name:<32} {r.reason or 'ok'}")
    due = [r.spec.name for r in rows if r.reason is not None]
    if due:
        if not opts.json_output:
            click.echo(f"{len(due)} certificate(s) to issue: run `nix-infra pki issue`", err=True)
        raise click.exceptions.Exit(1)


@pki_group.command("issue")
@click.pass_obj
@in_repo_lock
def pki_issue_cmd(opts: Options) -> None:
    """Issue every certificate that is missing, expires within 30 days or names the wrong addresses.

    Needs the identity that decrypts pki/ca.key.age (asked for only when
    something must be issued). deploy does this too.

    \b
    Examples:
      nix-infra pki issue
    """
    issued = issue_certificates(opts.repo_dir(), opts.load_manifest(), opts.identity)
    if opts.json_output:
        click.echo(json.dumps([{"name": n, "reason": r} for n, r in issued], indent=2))
        return
    for name, reason in issued:
        click.echo(f"issued {name} ({reason})")
    click.echo(f"{len(issued)} certificate(s) issued")


# ---- etcd ----------------------------------------------------------------------------------------


@click.group("etcd")
@click.option(
    "--etcd-endpoint",
    metavar="URL",
    callback=param(check_endpoint),
    help="Talk to etcd directly at https://HOST:PORT (no SSH tunnel).",
)
@click.option("--etcd-ca", type=SafePath(path_type=Path, dir_okay=False), metavar="FILE", help="CA certificate.")
@click.option("--etcd-cert", type=SafePath(path_type=Path, dir_okay=False), metavar="FILE", help="Client cert.")
@click.option(
    "--etcd-key",
    type=SafePath(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="Client key: PEM, or age-encrypted as the repo keeps them (e.g. pki/admin.key.age; decrypted in memory).",
)
@click.pass_context
def etcd_group(
    ctx: click.Context,
    etcd_endpoint: str | None,
    etcd_ca: Path | None,
    etcd_cert: Path | None,
    etcd_key: Path | None,
) -> None:
    """The cluster's etcd: seed the static mesh keys, read, write, watch.

    By default nix-infra reaches etcd through an SSH tunnel (pinned host key) to
    127.0.0.1 on the first reachable ctrl node and authenticates with its admin
    certificate (pki/admin.crt, key decrypted in memory). With --etcd-endpoint
    and all three of --etcd-ca/--etcd-cert/--etcd-key it connects directly.

    \b
    Examples:
      nix-infra etcd seed --dry-run
      nix-infra etcd get /cluster/nodes
      nix-infra etcd --etcd-endpoint https://10.10.32.1:2379 --etcd-ca pki/ca.crt \\
          --etcd-cert pki/admin.crt --etcd-key pki/admin.key.age get /cluster
    """
    files = {"--etcd-ca": etcd_ca, "--etcd-cert": etcd_cert, "--etcd-key": etcd_key}
    given = [k for k, v in files.items() if v is not None]
    direct = None
    if etcd_endpoint is not None:
        missing = [k for k, v in files.items() if v is None]
        if missing:
            raise NixInfraError(f"--etcd-endpoint needs {', '.join(missing)} too (etcd requires client certificates)")
        assert etcd_ca and etcd_cert and etcd_key
        direct = DirectEndpoint(etcd_endpoint, etcd_ca, etcd_cert, etcd_key)
    elif given:
        raise NixInfraError(f"{', '.join(given)} only apply with --etcd-endpoint URL")
    ctx.meta["nix_infra.etcd_direct"] = direct


AGE_HEADERS = (b"age-encryption.org/v1\n", b"-----BEGIN AGE ENCRYPTED FILE-----")


@contextmanager
def _etcd(opts: Options) -> Iterator[Etcd]:
    direct: DirectEndpoint | None = click.get_current_context().meta.get("nix_infra.etcd_direct")
    from nix_infra.etcd import Etcd

    if direct is not None:
        tls = direct.tls()
        if tls.key.startswith(AGE_HEADERS):  # the repo's keys are only ever stored encrypted
            tls = replace(tls, key=opts.identity().decrypt(tls.key, f"--etcd-key {direct.key}"))
        with Etcd(direct.url, tls) as etcd:
            yield etcd
        return
    manifest = opts.load_manifest()
    facts = opts.facts()
    settings = opts.ssh_settings()
    with connect(
        opts.repo_dir(),
        manifest,
        lambda node: ssh_target(manifest.nodes[node], facts, settings),
        opts.identity,
    ) as etcd:
        yield etcd


def print_seed(opts: Options, seeded: ControlPlaneSeed, dry_run: bool) -> None:
    echo = click.echo
    result, auth = seeded.keys, seeded.auth.diff
    diff = result.diff
    counts = diff.counts()
    if opts.json_output:
        echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    **counts,
                    "written": 0 if dry_run else counts["added"] + counts["changed"] + counts["removed"],
                    "transactions": result.transactions,
                    "seconds": round(result.seconds, 3),
                    "add": sorted(diff.add),
                    "change": sorted(diff.change),
                    "remove": list(diff.remove),
                    "auth": auth.lines(),
                },
                indent=2,
            )
        )
        return
    if dry_run or (opts.verbose and not diff.empty):
        for key, value in diff.add.items():
            echo(f"+ {key} {value.decode()}")
        for key, value in diff.change.items():
            echo(f"~ {key} {value.decode()}")
        for key in diff.remove:
            echo(f"- {key}")
    if dry_run or opts.verbose:
        for line in auth.lines():
            echo(line)
    verb = "would be" if dry_run else "were"
    echo(
        f"{counts['added']} added, {counts['changed']} changed, {counts['removed']} removed "
        f"({'nothing written' if dry_run else f'{result.transactions} transaction(s)'}); keys {verb} under /cluster"
    )
    changes = len(auth.lines())
    echo(f"auth: {changes} change(s) to users and roles {verb} made" if changes else "auth: users and roles in line")


@etcd_group.command("seed")
@click.option("--dry-run", is_flag=True, help="Print the difference; write nothing.")
@click.pass_obj
def etcd_seed_cmd(opts: Options, dry_run: bool) -> None:
    """Write the manifest's static keys (nodes, apps' meta_data) to etcd: only the difference.

    Keys the manifest no longer has are deleted if nix-infra owns them
    (/cluster/nodes/*, /cluster/<group>/<app>/meta_data); instance keys and
    anything else are never touched. Each transaction fails if another writer
    changed its keys meanwhile. Then etcd's users and roles are brought in line
    with the manifest (each node may write only its own instance keys and
    flannel's leases) and auth is enabled. deploy runs this after the ctrl nodes.

    \b
    Examples:
      nix-infra etcd seed --dry-run
      nix-infra etcd seed
      nix-infra --json etcd seed
    """
    from nix_infra.controlplane import seed_control_plane

    manifest = opts.load_manifest()
    with nullcontext() if dry_run else repo_lock(opts.repo_dir(), "nix-infra etcd seed"), _etcd(opts) as etcd:
        seeded = seed_control_plane(etcd, manifest, dry_run=dry_run)
    print_seed(opts, seeded, dry_run)


@etcd_group.command("get")
@click.argument("prefix", callback=param(check_etcd_key))
@click.pass_obj
def etcd_get_cmd(opts: Options, prefix: str) -> None:
    """Print every key under PREFIX and its value, as pretty-printed JSON.

    \b
    Examples:
      nix-infra etcd get /cluster/nodes/
      nix-infra etcd get /cluster/backends/api/instances/
    """
    from nix_infra.etcd import decode_value

    with _etcd(opts) as etcd:
        found = etcd.get_prefix(prefix)
    click.echo(json.dumps({k: decode_value(v) for k, (v, _) in found.items()}, indent=2, sort_keys=True))


@etcd_group.command("put")
@click.argument("key", callback=param(check_etcd_key))
@click.argument("value")
@click.option("--force", is_flag=True, help="Also change an instance key (it keeps its lease).")
@click.pass_obj
@in_repo_lock
def etcd_put_cmd(opts: Options, key: str, value: str, force: bool) -> None:
    """Set KEY to VALUE ('-' reads the value from stdin). JSON values are stored canonically.

    Keys nix-infra owns are overwritten by the next seed: change the cluster
    flake instead. Useful for keys outside the mesh and for repairs. Instance
    keys (/cluster/<group>/<app>/instances/<node>) belong to their node's
    registration and are refused unless --force; a forced put keeps the key's
    lease, and a missing instance key is never created.

    \b
    Examples:
      nix-infra etcd put /ops/maintenance '{"until": "2026-12-01"}'
      echo on | nix-infra etcd put /ops/flag -
    """
    text = sys.stdin.read() if value == "-" else value
    try:
        data = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")).encode()
    except json.JSONDecodeError:
        data = text.encode()
    from nix_infra.etcd import operator_put

    with _etcd(opts) as etcd:
        operator_put(etcd, key, data, force=force)
    click.echo(json.dumps({"put": key}) if opts.json_output else f"put {key}")


@etcd_group.command("del")
@click.argument("key", callback=param(check_etcd_key))
@click.option("--prefix", is_flag=True, help="Delete every key that starts with KEY.")
@click.option("--force", is_flag=True, help="Also delete instance keys.")
@click.pass_obj
@in_repo_lock
def etcd_del_cmd(opts: Options, key: str, prefix: bool, force: bool) -> None:
    """Delete KEY (or, with --prefix, every key under it); prints how many were deleted.

    Instance keys (also under the prefix) are refused unless --force: their
    nodes' registration owns them. A prefix delete asks first (or --yes), and
    `/`, `/cluster/`, `/cluster/nodes/` and `/nix-infra/` need --force.

    \b
    Examples:
      nix-infra etcd del /ops/maintenance
      nix-infra etcd del --prefix /cluster/backends/old/
    """
    from nix_infra.etcd import operator_delete

    # the whole store, the mesh's data or the platform's own keys: a prefix that takes everything
    broad = ("/", "/cluster", "/cluster/", "/cluster/nodes", "/cluster/nodes/", "/nix-infra", "/nix-infra/")
    if prefix and key in broad and not force:
        raise NixInfraError(
            f"etcd del --prefix {key} deletes what the whole cluster runs on (the mesh's nodes and apps, "
            "or nix-infra's own keys); pass --force if you mean it"
        )
    with _etcd(opts) as etcd:
        ask = lambda n: confirm(opts, f"Delete the {n} key(s) under {key}?")  # noqa: E731
        count = operator_delete(etcd, key, prefix=prefix, force=force, confirm=ask)
    click.echo(json.dumps({"deleted": count}) if opts.json_output else f"deleted {count} key(s)")


@etcd_group.command("watch")
@click.argument("prefix", callback=param(check_etcd_key))
@click.option("--count", type=click.IntRange(1), default=None, help="Stop after this many events.")
@click.pass_obj
def etcd_watch_cmd(opts: Options, prefix: str, count: int | None) -> None:
    """Print changes under PREFIX as they happen, one pretty-printed JSON object each (Ctrl-C stops).

    \b
    Examples:
      nix-infra etcd watch /cluster/backends/
      nix-infra --json etcd watch /cluster/ --count 1
    """
    seen = 0
    with _etcd(opts) as etcd:
        events = etcd.watch(prefix)
        try:
            for event in events:
                out: dict[str, Any] = event
                click.echo(json.dumps(out, sort_keys=True) if opts.json_output else json.dumps(out, indent=2))
                sys.stdout.flush()
                seen += 1
                if count is not None and seen >= count:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            events.close()  # type: ignore[attr-defined]
