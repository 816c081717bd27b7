"""The cluster repo's control-plane state: `init`, certificate issuance, reaching etcd.

Library functions behind `nix-infra init`, `nix-infra pki ...` and
`nix-infra etcd ...` (and the deploy step that seeds etcd).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nix_infra.agestore import (
    RECIPIENTS_FILE,
    Identity,
    Recipient,
    load_recipients,
    parse_recipients,
)
from nix_infra.errors import NixInfraError
from nix_infra.files import write_atomically
from nix_infra.manifest import Manifest, Node
from nix_infra.pki import ADMIN_CN, Pki, wanted_certificates
from nix_infra.ssh import SshTarget
from nix_infra.tunnel import forward

if TYPE_CHECKING:  # the etcd client pulls in grpc (0.1 s): imported when a command needs it
    from nix_infra.etcd import AuthResult, Etcd, SeedResult, TlsMaterial

RECIPIENTS_HEADER = """\
# Who can decrypt this cluster's secrets and keys: age public keys (age1...)
# or SSH public keys (ssh-ed25519 ...), one per line. After a change, run
# `nix-infra secret rekey` to re-encrypt everything to the new list.
"""


@dataclass(frozen=True)
class InitReport:
    created: tuple[str, ...]
    kept: tuple[str, ...]


def init_repo(
    repo: Path, cluster: str, recipients: Sequence[str], identity: Callable[[], Identity] | None
) -> InitReport:
    """Create what is missing of a cluster repo's state; never change what exists.

    recipients.txt, when missing, lists `recipients`, or else the public key of
    the operator's identity. Then facts/ and the CA (key encrypted to the recipients).
    """
    created: list[str] = []
    kept: list[str] = []
    path = repo / RECIPIENTS_FILE
    if path.exists():
        kept.append(str(RECIPIENTS_FILE))
    else:
        keys = list(recipients)
        if not keys:
            if identity is None:
                raise NixInfraError("init: no recipients; pass --recipient KEY (an age or ssh-ed25519 public key)")
            keys = list(identity().public)
        parsed = parse_recipients("\n".join(keys), "--recipient")  # validate before writing anything
        write_atomically(path, (RECIPIENTS_HEADER + "".join(f"{r.text}\n" for r in parsed)).encode())
        created.append(str(RECIPIENTS_FILE))
    facts = repo / "facts"
    if facts.is_dir():
        kept.append("facts/")
    else:
        facts.mkdir(parents=True)
        created.append("facts/")
    ignore = facts / ".gitignore"
    if not ignore.is_file() or not ignore.read_bytes():  # also: an init killed between mkdir and write
        write_atomically(ignore, b".nix-infra.lock\n")
    pki = Pki(repo)
    if pki.create_ca(cluster, load_recipients(repo)):
        created += ["pki/ca.crt", "pki/ca.key.age"]
    else:
        kept += ["pki/ca.crt", "pki/ca.key.age"]
    return InitReport(tuple(created), tuple(kept))


def issue_certificates(repo: Path, manifest: Manifest, identity: Callable[[], Identity]) -> list[tuple[str, str]]:
    """Issue the manifest's missing or expiring certificates; returns (name, reason) of those issued.

    The identity (which may ask for a passphrase) is loaded only when something must be issued.
    """
    pki = Pki(repo)
    specs = wanted_certificates(manifest)
    todo = pki.plan(specs)
    if not todo:
        return []
    recipients: list[Recipient] = load_recipients(repo)
    issued = pki.issue(specs, identity(), recipients)
    return [(s.spec.name, s.reason or "") for s in issued]


@dataclass(frozen=True)
class DirectEndpoint:
    """--etcd-endpoint and its TLS files, for operators (and tests) with direct access."""

    url: str
    ca: Path
    cert: Path
    key: Path

    def tls(self) -> TlsMaterial:
        from nix_infra.etcd import TlsMaterial

        def read(option: str, path: Path) -> bytes:
            try:
                return path.read_bytes()
            except OSError as e:
                raise NixInfraError(f"{option} {path}: cannot be read ({e.strerror})") from None

        return TlsMaterial(read("--etcd-ca", self.ca), read("--etcd-cert", self.cert), read("--etcd-key", self.key))


def admin_tls(repo: Path, identity: Identity) -> TlsMaterial:
    from nix_infra.etcd import TlsMaterial

    pki = Pki(repo)
    return TlsMaterial(ca=pki.ca_pem(), cert=pki.certificate_pem("admin"), key=pki.private_key_pem("admin", identity))


@contextmanager
def connect(
    repo: Path,
    manifest: Manifest,
    target: Callable[[str], SshTarget],
    identity: Callable[[], Identity],
    timeout: float = 10.0,
) -> Iterator[Etcd]:
    """An etcd client through an SSH tunnel to a ctrl node's 127.0.0.1:<clientPort>, as nix-infra's admin.

    Tries the ctrl nodes in manifest order and uses the first whose tunnel comes up.
    """
    from nix_infra.etcd import Etcd

    if not manifest.etcd.members:
        raise NixInfraError("the manifest has no ctrl node, so there is no etcd to reach")
    tls = admin_tls(repo, identity())
    errors = []
    with ExitStack() as stack:
        for member in manifest.etcd.members:
            try:
                local_port = stack.enter_context(forward(target(member), manifest.etcd.client_port))
            except NixInfraError as e:  # unreachable or unknown node: try the next member
                errors.append(e.message)
                continue
            url = f"https://127.0.0.1:{local_port}"
            # the server certificate names the ctrl node; check that name, not the tunnel's address
            etcd = stack.enter_context(Etcd(url, tls, timeout=timeout, server_name=member))
            etcd.url = f"{url} (SSH tunnel to {member}:127.0.0.1:{manifest.etcd.client_port})"
            yield etcd
            return
    raise NixInfraError("no ctrl node could be reached for etcd:\n" + "\n".join(errors))


def node_pki_credentials(repo: Path, node: Node, identity: Callable[[], Identity]) -> dict[str, bytes]:
    """The etcd TLS material a node gets as credentials (none when the repo has no PKI yet).

    Every node: the CA, its client certificate and key (confd, flannel, registration);
    ctrl nodes also etcd's server and peer certificates and keys.
    """
    pki = Pki(repo)
    if not pki.ca_path.exists():
        return {}
    kinds = ["client", "server", "peer"] if node.type == "ctrl" else ["client"]
    values = {"nix-infra-etcd-ca": pki.ca_pem()}
    for kind in kinds:
        name = f"nodes/{node.name}/{kind}"
        values[f"nix-infra-etcd-{kind}-cert"] = pki.certificate_pem(name)
        values[f"nix-infra-etcd-{kind}-key"] = pki.private_key_pem(name, identity())
    return values


@dataclass(frozen=True)
class ControlPlaneSeed:
    """What `etcd seed` did: the static keys, then the users and roles (docs/etcd.md)."""

    keys: SeedResult
    auth: AuthResult


def seed_control_plane(etcd: Etcd, manifest: Manifest, *, dry_run: bool = False) -> ControlPlaneSeed:
    """Seed the manifest's static keys, then keep etcd's users and roles in line with it and enable auth.

    Both are derived (and validated) before anything is written.
    """
    from nix_infra.etcd import manifest_auth, seed, sync_auth

    want = manifest_auth(manifest, ADMIN_CN)
    try:
        keys = seed(etcd, manifest.etcd_seed, dry_run=dry_run)
        auth = sync_auth(etcd, want, dry_run=dry_run)
    except NixInfraError as e:
        if "PERMISSION_DENIED" not in e.message:
            raise
        raise NixInfraError(
            f"{e.message}\n(auth is on and {ADMIN_CN} was refused: it lost etcd's root role by hand, or is gone; "
            "only a root user can restore it, see docs/etcd.md, Authorization)"
        ) from None
    return ControlPlaneSeed(keys, auth)
