"""age encryption for the cluster repo: recipients, the operator's identity, encrypted files.

Everything private in a cluster repo (secrets, the CA key, node keys) is an
`.age` file encrypted with pyrage to every recipient in
`secrets/recipients.txt`: age public keys (`age1...`) and SSH public keys
(`ssh-ed25519 ...`), one per line, `#` comments allowed. Plaintext exists only
in this process's memory.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pyrage import ssh, x25519

from nix_infra.errors import NixInfraError
from nix_infra.files import write_atomically

log = logging.getLogger(__name__)

RECIPIENTS_FILE = Path("secrets") / "recipients.txt"
MAX_IDENTITY_BYTES = 1 << 20  # an age identity file or an OpenSSH key is a few KiB

# pyrage ships no type information: its key objects are Any to mypy
RecipientKey = Any
IdentityKey = Any


@dataclass(frozen=True)
class Recipient:
    """One line of recipients.txt: the key text, the parsed key and where it came from."""

    text: str
    key: RecipientKey
    source: str


def _what(text: str) -> str:
    """What to say about a line that is not a recipient, without repeating it: it may be a
    private key pasted by mistake, or carry terminal control sequences."""
    if "AGE-SECRET-KEY-" in text.upper() or "PRIVATE KEY" in text.upper():
        return "this line is a PRIVATE key: remove it from the file (and treat that key as exposed)"
    token = text.split()[0] if text.split() else ""
    if token.isascii() and token.isprintable() and len(token) <= 32:
        return f"a line starting with {token!r}"
    return "a line that is not printable text"


def parse_recipient(text: str, source: str) -> Recipient:
    """One public key: `age1...` or an OpenSSH `ssh-ed25519`/`ssh-rsa` line (comment allowed).

    Errors never repeat the line (it may be a private key pasted by mistake)."""
    try:
        if text.startswith("age1"):
            return Recipient(text, x25519.Recipient.from_str(text), source)
        if text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
            key_text = " ".join(text.split()[:2])  # pyrage rejects the trailing comment
            return Recipient(key_text, ssh.Recipient.from_str(key_text), source)
    except pyrage.RecipientError as e:
        raise NixInfraError(f"{source}: not a valid public key ({e}): {_what(text)}") from None
    raise NixInfraError(
        f"{source}: {_what(text)} is not a recipient; allowed: an age public key (age1...) "
        "or an SSH public key (ssh-ed25519 ... / ssh-rsa ...)"
    )


def parse_recipients(text: str, source: str) -> list[Recipient]:
    """Every recipient in a recipients.txt text; blank lines and `#` comments are skipped."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            found.append(parse_recipient(line, f"{source}:{number}"))
    return found


def load_recipients(repo: Path) -> list[Recipient]:
    path = repo / RECIPIENTS_FILE
    if not path.is_file():
        raise NixInfraError(f"{path} does not exist: run `nix-infra init` or list your public keys there, one per line")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise NixInfraError(
            f"{path} is not UTF-8 text (byte {e.start} is invalid); it lists public keys, one per line"
        ) from None
    except OSError as e:
        raise NixInfraError(f"{path}: cannot be read ({e.strerror})") from None
    recipients = parse_recipients(text, str(path))
    if not recipients:
        raise NixInfraError(f"{path} lists no recipients: add an age or ssh-ed25519 public key, one per line")
    return recipients


def encrypt(plaintext: bytes, recipients: list[Recipient]) -> bytes:
    if not recipients:
        raise NixInfraError("no recipients to encrypt to")
    ciphertext: bytes = pyrage.encrypt(plaintext, [r.key for r in recipients])
    return ciphertext


def write_encrypted(path: Path, plaintext: bytes, recipients: list[Recipient]) -> None:
    write_atomically(path, encrypt(plaintext, recipients))


PassphrasePrompt = Callable[[str], str]


def ask_passphrase(path: str) -> str:
    return getpass.getpass(f"Passphrase for {path}: ")


@dataclass(frozen=True)
class Identity:
    """The operator's decryption identity (age or SSH private key), loaded once."""

    source: str
    keys: tuple[IdentityKey, ...]
    public: tuple[str, ...]

    def decrypt(self, ciphertext: bytes, what: str) -> bytes:
        try:
            plaintext: bytes = pyrage.decrypt(ciphertext, list(self.keys))
            return plaintext
        except pyrage.DecryptError as e:
            raise NixInfraError(
                f"{what}: cannot decrypt with identity {self.source} ({e}); is its public key one of "
                f"the recipients it was encrypted to? (choose another with --identity or NIX_INFRA_IDENTITY)"
            ) from None

    def decrypt_file(self, path: Path) -> bytes:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NixInfraError(f"{path} does not exist") from None
        return self.decrypt(data, str(path))


def identity_path(explicit: Path | None, environ: Mapping[str, str]) -> Path:
    """--identity, else NIX_INFRA_IDENTITY, else ~/.ssh/id_ed25519."""
    if explicit is not None:
        return explicit
    if environ.get("NIX_INFRA_IDENTITY"):
        return Path(environ["NIX_INFRA_IDENTITY"])
    return Path(environ.get("HOME", str(Path.home()))) / ".ssh" / "id_ed25519"


def load_identity(path: Path, prompt: PassphrasePrompt = ask_passphrase) -> Identity:
    """Read an age identity file (AGE-SECRET-KEY-1... lines) or an OpenSSH private key."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_IDENTITY_BYTES + 1)
    except OSError as e:
        raise NixInfraError(
            f"identity {path}: cannot be read ({e.strerror}); choose one with --identity FILE or NIX_INFRA_IDENTITY"
        ) from None
    if len(data) > MAX_IDENTITY_BYTES:
        raise NixInfraError(f"identity {path}: larger than {MAX_IDENTITY_BYTES} bytes; that is no key file")
    text = data.decode("utf-8", errors="replace")
    if "AGE-SECRET-KEY-" in text:
        keys: list[IdentityKey] = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("AGE-SECRET-KEY-"):
                try:
                    keys.append(x25519.Identity.from_str(line))
                except pyrage.IdentityError:
                    raise NixInfraError(f"identity {path}: an AGE-SECRET-KEY line is malformed") from None
        return Identity(str(path), tuple(keys), tuple(str(k.to_public()) for k in keys))
    if "OPENSSH PRIVATE KEY" in text:
        return _ssh_identity(path, data, prompt)
    raise NixInfraError(f"identity {path}: neither an age identity (AGE-SECRET-KEY-1...) nor an OpenSSH private key")


def _ssh_identity(path: Path, data: bytes, prompt: PassphrasePrompt) -> Identity:
    try:
        private = serialization.load_ssh_private_key(data, password=None)
    except TypeError:  # encrypted: ask once, keep the unlocked key in memory only
        passphrase = prompt(str(path))
        try:
            private = serialization.load_ssh_private_key(data, password=passphrase.encode())
        except ValueError:
            raise NixInfraError(f"identity {path}: wrong passphrase") from None
        data = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    except ValueError as e:
        raise NixInfraError(f"identity {path}: not a usable OpenSSH private key ({e})") from None
    if not isinstance(private, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        raise NixInfraError(f"identity {path}: age supports ssh-ed25519 and ssh-rsa keys only")
    try:
        key = ssh.Identity.from_buffer(data)
    except pyrage.IdentityError as e:
        raise NixInfraError(f"identity {path}: {e}") from None
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return Identity(str(path), (key,), (public.decode(),))
