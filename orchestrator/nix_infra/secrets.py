"""The secret store: `secrets/<name>.age`, each encrypted to every recipient in secrets/recipients.txt.

Values are bytes held in memory only; the files are standard age files.
docs/secrets.md has the threat model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nix_infra.agestore import Identity, Recipient, load_recipients, write_encrypted
from nix_infra.errors import NixInfraError
from nix_infra.manifest import Manifest, is_secret_name
from nix_infra.pki import PKI_DIR

SECRETS_DIR = Path("secrets")
NAME_RULE = "1-64 characters: letters, digits, '.', '_', '-', not starting with '.' or '-'"

# systemd's limits (src/shared/creds-util.h): CREDENTIAL_SIZE_MAX, the most one credential may hold
# decrypted, and CREDENTIALS_TOTAL_SIZE_MAX, the most all credentials of one unit may hold together
# (both 1 MiB). The encrypted file may be larger (CREDENTIAL_ENCRYPTED_SIZE_MAX adds room for the
# header), so the plaintext bound is the one to check.
CREDENTIAL_SIZE_MAX = 1024 * 1024
CREDENTIALS_TOTAL_SIZE_MAX = 1024 * 1024


def is_name(name: str) -> bool:
    return is_secret_name(name)  # a fullmatch: `^...$` would let "x\n" through


def check_name(name: str) -> str:
    if not is_name(name):
        raise NixInfraError(f"secret name {name!r} is not allowed; a name is {NAME_RULE}")
    return name


def strip_final_newline(value: bytes) -> bytes:
    """The one input rule for secret values: exactly one trailing "\n" or "\r\n" is dropped
    (what `echo`, `openssl rand -hex` and editors add); everything else is kept as it is."""
    if value.endswith(b"\r\n"):
        return value[:-2]
    if value.endswith(b"\n"):
        return value[:-1]
    return value


def check_value(name: str, value: bytes) -> bytes:
    """A value the store accepts: not empty, and within what systemd delivers as one credential."""
    if not value:
        raise NixInfraError(f"secret {name}: the value is empty")
    if len(value) > CREDENTIAL_SIZE_MAX:
        raise NixInfraError(
            f"secret {name}: the value is {len(value)} bytes; a systemd credential holds at most "
            f"{CREDENTIAL_SIZE_MAX} bytes (1 MiB); nothing was stored"
        )
    return value


def delivery_size_errors(manifest: Manifest, nodes: Iterable[str], values: Mapping[str, bytes]) -> list[str]:
    """What systemd would refuse at delivery, checked before anything is touched: a value over
    CREDENTIAL_SIZE_MAX, or the credentials one unit loads over CREDENTIALS_TOTAL_SIZE_MAX together."""
    errors = [
        f"secret {name}: {len(value)} bytes, over systemd's credential limit of {CREDENTIAL_SIZE_MAX} bytes"
        for name, value in sorted(values.items())
        if len(value) > CREDENTIAL_SIZE_MAX
    ]
    for node_name in nodes:
        node = manifest.nodes[node_name]
        per_unit: dict[str, list[str]] = {}
        for secret, units in node.credential_units.items():
            for unit in units:
                per_unit.setdefault(unit, []).append(secret)
        for unit, secrets in sorted(per_unit.items()):
            total = sum(len(values.get(s, b"")) for s in secrets)
            if total > CREDENTIALS_TOTAL_SIZE_MAX:
                errors.append(
                    f"{node_name}: {unit} loads {', '.join(sorted(secrets))}: {total} bytes together, over "
                    f"systemd's limit of {CREDENTIALS_TOTAL_SIZE_MAX} bytes for one unit's credentials"
                )
    return errors


def check_delivery_sizes(manifest: Manifest, nodes: Iterable[str], values: Mapping[str, bytes]) -> None:
    """deploy's pre-flight: raise naming every value systemd would refuse (nothing is touched yet)."""
    errors = delivery_size_errors(manifest, nodes, values)
    if errors:
        raise NixInfraError(
            "secrets too large for systemd credentials (nothing was touched):\n  " + "\n  ".join(errors)
        )


def recipient_count(ciphertext: bytes) -> int:
    """How many recipients an age file is encrypted to: its header's X25519 and SSH stanzas
    (age also adds a random "grease" stanza, which is no recipient)."""
    header = ciphertext.split(b"\n---", 1)[0]
    return sum(
        1 for line in header.splitlines() if line.startswith((b"-> X25519 ", b"-> ssh-ed25519 ", b"-> ssh-rsa "))
    )


@dataclass(frozen=True)
class SecretInfo:
    name: str
    recipients: int
    decrypts: bool | None  # None: not checked
    users: tuple[str, ...]  # "node/app" using it per the manifest


class SecretStore:
    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.root = repo / SECRETS_DIR

    def path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.age"

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name.removesuffix(".age") for p in self.root.glob("*.age") if is_name(p.stem))

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def recipients(self) -> list[Recipient]:
        return load_recipients(self.repo)

    def set(self, name: str, value: bytes) -> None:
        check_value(name, value)
        write_encrypted(self.path(name), value, self.recipients())

    def get(self, name: str, identity: Identity) -> bytes:
        path = self.path(name)
        if not path.is_file():
            raise NixInfraError(f"secret {name} does not exist ({path}); set it with `nix-infra secret set {name}`")
        return identity.decrypt_file(path)

    def remove(self, name: str) -> None:
        path = self.path(name)
        if not path.is_file():
            raise NixInfraError(f"secret {name} does not exist ({path})")
        path.unlink()

    def encrypted_files(self) -> list[Path]:
        """Every age file of the repo: the secrets and the PKI's keys."""
        return sorted(self.root.glob("*.age")) + sorted((self.repo / PKI_DIR).rglob("*.age"))

    def rekey(self, identity: Identity) -> list[Path]:
        """Re-encrypt every age file to the current recipients. All are decrypted first, so a file
        the identity cannot open stops it before anything is rewritten."""
        recipients = self.recipients()
        files = self.encrypted_files()
        plain = {path: identity.decrypt_file(path) for path in files}
        for path, value in plain.items():
            write_encrypted(path, value, recipients)
        return files

    def info(self, manifest: Manifest | None, identity: Identity | None) -> list[SecretInfo]:
        users = secret_users(manifest) if manifest else {}
        out = []
        for name in sorted(set(self.names()) | set(users)):
            path = self.path(name)
            if not path.is_file():
                out.append(SecretInfo(name, 0, None, tuple(users.get(name, ()))))
                continue
            data = path.read_bytes()
            decrypts = None
            if identity is not None:
                try:
                    identity.decrypt(data, str(path))
                    decrypts = True
                except NixInfraError:
                    decrypts = False
            out.append(SecretInfo(name, recipient_count(data), decrypts, tuple(users.get(name, ()))))
        return out


def secret_users(manifest: Manifest) -> dict[str, list[str]]:
    """Secret name → ["node/app", ...] per the manifest."""
    users: dict[str, list[str]] = {}
    for node in manifest.nodes.values():
        for app in node.apps:
            for secret in manifest.apps[app].secrets:
                users.setdefault(secret, []).append(f"{node.name}/{app}")
    return {k: sorted(v) for k, v in users.items()}


def missing_secrets(store: SecretStore, manifest: Manifest, nodes: Iterable[str]) -> dict[str, list[str]]:
    """Secret → the nodes (of `nodes`) that need it, for every needed secret the store lacks."""
    missing: dict[str, list[str]] = {}
    for name in nodes:
        for secret in manifest.nodes[name].credentials:
            if not store.exists(secret):
                missing.setdefault(secret, []).append(name)
    return missing
