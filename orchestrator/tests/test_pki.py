"""`init`, the age layer and the cluster PKI (no daemons)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyrage import x25519

from nix_infra.agestore import Identity, encrypt, load_identity, parse_recipient, parse_recipients
from nix_infra.controlplane import init_repo, issue_certificates
from nix_infra.errors import NixInfraError
from nix_infra.manifest import parse_manifest
from nix_infra.pki import Pki, wanted_certificates

from .conftest import run_cli


def age_identity(tmp_path: Path) -> tuple[Path, Identity]:
    secret = x25519.Identity.generate()
    path = tmp_path / "key.txt"
    path.write_text(f"# test\n{secret}\n")
    return path, load_identity(path)


def ssh_key(tmp_path: Path, name: str = "id_ed25519", passphrase: str = "") -> Path:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)
    return path


def repo_files(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}


def test_init_creates_the_state_once(tmp_path: Path) -> None:
    key, identity = age_identity(tmp_path)
    repo = tmp_path / "repo"
    report = init_repo(repo, "demo", [], lambda: identity)
    assert set(report.created) == {"secrets/recipients.txt", "facts/", "pki/ca.crt", "pki/ca.key.age"}
    recipients = (repo / "secrets/recipients.txt").read_text()
    assert identity.public[0] in recipients
    ca = x509.load_pem_x509_certificate((repo / "pki/ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert "demo" in ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    # the CA key is an age file: the age tool itself decrypts it, and it is nowhere in the clear
    encrypted = (repo / "pki/ca.key.age").read_bytes()
    assert encrypted.startswith(b"age-encryption.org/v1\n")
    plain = subprocess.run(["age", "-d", "-i", str(key)], input=encrypted, capture_output=True, check=True).stdout
    assert b"BEGIN PRIVATE KEY" in plain
    assert not any(b"PRIVATE KEY" in data for data in repo_files(repo).values())

    before = repo_files(repo)
    again = init_repo(repo, "demo", [str(x25519.Identity.generate().to_public())], lambda: identity)
    assert again.created == ()
    assert repo_files(repo) == before


def test_init_with_an_ssh_identity_and_explicit_recipients(tmp_path: Path) -> None:
    key = ssh_key(tmp_path)
    identity = load_identity(key)
    other = x25519.Identity.generate().to_public()
    repo = tmp_path / "repo"
    init_repo(repo, "demo", [Path(f"{key}.pub").read_text().strip(), str(other)], lambda: identity)
    listed = parse_recipients((repo / "secrets/recipients.txt").read_text(), "r")
    assert [r.text.split()[0] for r in listed] == ["ssh-ed25519", str(other)]
    assert identity.decrypt_file(repo / "pki/ca.key.age").startswith(b"-----BEGIN PRIVATE KEY")


def test_init_refuses_a_bad_recipient_and_writes_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(NixInfraError, match="--recipient:1: a line starting with 'ssh-dss' is not a recipient"):
        init_repo(repo, "demo", ["ssh-dss AAAA"], None)
    assert not repo.exists() or repo_files(repo) == {}


def test_recipients_file_errors_name_the_line() -> None:
    with pytest.raises(NixInfraError, match=r"recipients.txt:3: not a valid public key"):
        good = str(x25519.Identity.generate().to_public())
        parse_recipients(f"# ops\n{good}\nssh-ed25519 AAAAnotakey\n", "recipients.txt")


def test_passphrase_protected_ssh_identity_is_asked_once(tmp_path: Path) -> None:
    key = ssh_key(tmp_path, passphrase="correct horse")
    asked: list[str] = []
    identity = load_identity(key, prompt=lambda what: asked.append(what) or "correct horse")
    assert asked == [str(key)]
    secret = encrypt(b"s3cret", [parse_recipient(Path(f"{key}.pub").read_text().strip(), "t")])
    assert identity.decrypt(secret, "t") == b"s3cret"
    with pytest.raises(NixInfraError, match="wrong passphrase"):
        load_identity(key, prompt=lambda what: "wrong")


def test_a_wrong_identity_is_a_clear_error(tmp_path: Path) -> None:
    _, identity = age_identity(tmp_path)
    ciphertext = encrypt(b"x", [parse_recipient(str(x25519.Identity.generate().to_public()), "t")])
    with pytest.raises(NixInfraError, match=r"cannot decrypt with identity .*key\.txt"):
        identity.decrypt(ciphertext, "secrets/x.age")
    with pytest.raises(NixInfraError, match="neither an age identity"):
        load_identity(Path(__file__))
    with pytest.raises(NixInfraError, match="cannot be read"):
        load_identity(tmp_path / "missing")


@pytest.fixture
def issued(tmp_path: Path, example_manifest: dict[str, Any]) -> tuple[Path, Identity, dict[str, Any]]:
    _, identity = age_identity(tmp_path)
    repo = tmp_path / "repo"
    init_repo(repo, "demo", [], lambda: identity)
    issue_certificates(repo, parse_manifest(example_manifest), lambda: identity)
    return repo, identity, example_manifest


def cert(repo: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((repo / "pki" / f"{name}.crt").read_bytes())


def sans(c: x509.Certificate) -> set[str]:
    ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    }


def usages(c: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_certificates_per_manifest(issued: tuple[Path, Identity, dict[str, Any]]) -> None:
    repo, identity, _ = issued
    names = {str(p.relative_to(repo / "pki")) for p in (repo / "pki").rglob("*.crt")}
    assert names == {
        "ca.crt",
        "admin.crt",
        "nodes/ctrl001/client.crt",
        "nodes/ctrl001/server.crt",
        "nodes/ctrl001/peer.crt",
        "nodes/worker001/client.crt",
    }
    ca = cert(repo, "ca")
    server = cert(repo, "nodes/ctrl001/server")
    assert sans(server) == {"ctrl001", "localhost", "10.10.32.1", "127.0.0.1"}
    assert usages(server) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert sans(cert(repo, "nodes/ctrl001/peer")) == {"ctrl001", "10.10.32.1"}
    client = cert(repo, "nodes/worker001/client")
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "worker001"
    assert usages(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert(repo, "admin").subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "nix-infra-admin"
    for name in ("admin", "nodes/ctrl001/server", "nodes/worker001/client"):
        cert(repo, name).verify_directly_issued_by(ca)
        key = identity.decrypt_file(repo / "pki" / f"{name}.key.age")
        assert b"BEGIN PRIVATE KEY" in key
    assert not any(b"PRIVATE KEY" in data for data in repo_files(repo).values())


def test_issuing_again_changes_nothing(issued: tuple[Path, Identity, dict[str, Any]]) -> None:
    repo, _, manifest = issued
    before = repo_files(repo)

    def no_identity() -> Identity:
        raise AssertionError("nothing to issue, so the identity must not be needed")

    assert issue_certificates(repo, parse_manifest(manifest), no_identity) == []
    assert repo_files(repo) == before


def test_expiring_or_changed_certificates_are_issued_again(
    issued: tuple[Path, Identity, dict[str, Any]], example_manifest: dict[str, Any]
) -> None:
    repo, identity, _ = issued
    pki = Pki(repo)
    specs = wanted_certificates(parse_manifest(example_manifest))
    recipients = parse_recipients((repo / "secrets/recipients.txt").read_text(), "r")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=340)  # valid for 365 days: 25 left
    pki.issue([s for s in specs if s.name == "nodes/worker001/client"], identity, recipients, now=long_ago)
    # issue() only replaces what needs it; force the old one in by deleting it first
    (repo / "pki/nodes/worker001/client.crt").unlink()
    pki.issue([s for s in specs if s.name == "nodes/worker001/client"], identity, recipients, now=long_ago)
    assert pki.state(next(s for s in specs if s.name == "nodes/worker001/client")).reason is not None

    moved = json.loads(json.dumps(example_manifest))
    moved["nodes"]["ctrl001"]["privateIp"] = "10.10.32.9"
    issued_now = dict(issue_certificates(repo, parse_manifest(moved), lambda: identity))
    assert issued_now == {
        "nodes/worker001/client": issued_now["nodes/worker001/client"],
        "nodes/ctrl001/server": "names or addresses changed",
        "nodes/ctrl001/peer": "names or addresses changed",
    }
    assert issued_now["nodes/worker001/client"].startswith("expires ")
    assert "10.10.32.9" in sans(cert(repo, "nodes/ctrl001/server"))


def test_cli_init_and_pki(
    tmp_path: Path,
    example_manifest: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, _ = age_identity(tmp_path)
    monkeypatch.setenv("NIX_INFRA_IDENTITY", str(key))
    repo = tmp_path / "repo"
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(example_manifest))
    code, out, err = run_cli(capsys, "--manifest", str(manifest), "init", str(repo))
    assert code == 0, err
    assert "created" in out and "pki/ca.crt" in out
    code, out, _ = run_cli(capsys, "--manifest", str(manifest), "init", str(repo))
    assert code == 0 and "created" not in out and "kept" in out
    monkeypatch.chdir(repo)
    code, out, _ = run_cli(capsys, "--manifest", str(manifest), "--json", "pki", "status")
    assert code == 1 and {r["issue"] for r in json.loads(out)} == {"missing"}  # exit 1: some must be issued
    code, out, _ = run_cli(capsys, "--manifest", str(manifest), "pki", "issue")
    assert code == 0 and "5 certificate(s) issued" in out
    code, out, _ = run_cli(capsys, "--manifest", str(manifest), "pki", "status")
    assert code == 0 and set(line.split()[1] for line in out.splitlines()) == {"ok"}
    monkeypatch.setenv("NIX_INFRA_IDENTITY", str(tmp_path / "nope"))
    (repo / "pki/admin.crt").unlink()
    code, _, err = run_cli(capsys, "--manifest", str(manifest), "pki", "issue")
    assert code == 1 and "identity" in err and "nope" in err and "Traceback" not in err


def test_a_ca_made_again_under_the_same_name_gets_every_certificate_issued_again(
    issued: tuple[Path, Identity, dict[str, Any]],
) -> None:
    """Same subject, new key: the old certificates no longer verify, so they are not "ok"."""
    repo, identity, manifest = issued
    pki = Pki(repo)
    pki.ca_path.unlink()
    pki.key_path("ca").unlink()
    recipients = parse_recipients((repo / "secrets/recipients.txt").read_text(), "r")
    assert pki.create_ca(parse_manifest(manifest).cluster, recipients)
    reasons = dict(issue_certificates(repo, parse_manifest(manifest), lambda: identity))
    assert set(reasons.values()) == {"not signed by the current CA"} and len(reasons) == 5
    for name in reasons:
        cert(repo, name).verify_directly_issued_by(cert(repo, "ca"))
