"""The cluster PKI: a CA and the etcd certificates every node and the orchestrator need.

Layout in the cluster repo (docs/etcd.md):

    pki/ca.crt                    the CA certificate, in the clear
    pki/ca.key.age                the CA key, age-encrypted to secrets/recipients.txt
    pki/admin.crt, admin.key.age  the orchestrator's client certificate (CN nix-infra-admin)
    pki/nodes/<node>/client.*     every node: client certificate, CN = node name
    pki/nodes/<node>/server.*     ctrl nodes: etcd server certificate (name, private IP, localhost)
    pki/nodes/<node>/peer.*       ctrl nodes: etcd peer certificate (name, private IP)

Keys are ECDSA P-256: modern, and accepted by every TLS stack involved (Go's for
etcd, confd and flannel; BoringSSL for the Python gRPC client; OpenSSL).
Private keys exist in the clear only in memory: they are written encrypted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nix_infra.agestore import Identity, Recipient, write_encrypted
from nix_infra.errors import NixInfraError
from nix_infra.files import write_atomically
from nix_infra.manifest import Manifest

PKI_DIR = Path("pki")
_CERT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
ADMIN_CN = "nix-infra-admin"
CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class CertSpec:
    """A certificate the manifest calls for; `name` is its path under pki/ without suffix."""

    name: str
    common_name: str
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False
    client: bool = True


def wanted_certificates(manifest: Manifest) -> list[CertSpec]:
    """Every certificate the cluster needs, derived from the manifest alone."""
    specs = [CertSpec("admin", ADMIN_CN)]
    for node in manifest.nodes.values():
        base = f"nodes/{node.name}"
        specs.append(CertSpec(f"{base}/client", node.name))
        if node.type == "ctrl":
            # etcd's gRPC gateway dials itself with the server certificate, so it needs clientAuth too.
            specs.append(
                CertSpec(
                    f"{base}/server",
                    node.name,
                    dns_names=(node.name, "localhost"),
                    ip_addresses=(node.private_ip, "127.0.0.1"),
                    server=True,
                )
            )
            specs.append(
                CertSpec(
                    f"{base}/peer", node.name, dns_names=(node.name,), ip_addresses=(node.private_ip,), server=True
                )
            )
    return specs


@dataclass(frozen=True)
class CertState:
    spec: CertSpec
    reason: str | None  # None: present and good; else why it must be issued


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _sans(spec: CertSpec) -> set[str]:
    return {f"DNS:{d}" for d in spec.dns_names} | {f"IP:{ipaddress.ip_address(i)}" for i in spec.ip_addresses}


def _cert_sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {f"DNS:{d}" for d in ext.get_values_for_type(x509.DNSName)} | {
        f"IP:{i}" for i in ext.get_values_for_type(x509.IPAddress)
    }


class Pki:
    """The PKI files of one cluster repo."""

    def __init__(self, repo: Path) -> None:
        self.root = repo / PKI_DIR

    def _path(self, name: str, suffix: str) -> Path:
        # the names come from the manifest (checked at load); here too, nothing leaves pki/
        if _CERT_NAME.fullmatch(name) is None:
            raise NixInfraError(f"pki: {name!r} is not a certificate name (DNS labels separated by '/')")
        return self.root / f"{name}{suffix}"

    def cert_path(self, name: str) -> Path:
        return self._path(name, ".crt")

    def key_path(self, name: str) -> Path:
        return self._path(name, ".key.age")

    def _load(self, path: Path) -> x509.Certificate:
        try:
            data = path.read_bytes()
        except IsADirectoryError:
            raise NixInfraError(f"{path} is a directory; expected a PEM certificate") from None
        except OSError as e:
            raise NixInfraError(f"{path}: cannot be read ({e.strerror})") from None
        try:
            return x509.load_pem_x509_certificate(data)
        except ValueError:
            raise NixInfraError(
                f"{path} is not a PEM certificate; restore it from git (or, for a node's, delete it and "
                "run `nix-infra pki issue`)"
            ) from None

    @property
    def ca_path(self) -> Path:
        return self.cert_path("ca")

    def ca_certificate(self) -> x509.Certificate:
        if not self.ca_path.exists():
            raise NixInfraError(f"{self.ca_path} does not exist: run `nix-infra init` first")
        return self._load(self.ca_path)

    def ca_pem(self) -> bytes:
        return self.ca_certificate().public_bytes(serialization.Encoding.PEM)

    def create_ca(self, cluster: str, recipients: list[Recipient]) -> bool:
        """Make the CA unless it exists; returns whether it was made. The key is written encrypted only."""
        if self.ca_path.exists():
            if not self.key_path("ca").exists():
                raise NixInfraError(f"{self.ca_path} exists but {self.key_path('ca')} does not: restore it from git")
            return False
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(f"nix-infra {cluster} CA", "nix-infra")
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        # key first: a crash in between leaves no CA certificate without its key
        write_encrypted(self.key_path("ca"), _key_pem(key), recipients)
        write_atomically(self.ca_path, cert.public_bytes(serialization.Encoding.PEM))
        return True

    def state(self, spec: CertSpec, now: dt.datetime | None = None) -> CertState:
        """Whether `spec`'s certificate must be issued, and why."""
        now = now or _now()
        path = self.cert_path(spec.name)
        if not path.exists() or not self.key_path(spec.name).exists():
            return CertState(spec, "missing")
        cert = self._load(path)
        if cert.not_valid_after_utc - now < RENEW_BEFORE:
            return CertState(spec, f"expires {cert.not_valid_after_utc:%Y-%m-%d}")
        ca = self.ca_certificate()
        if cert.issuer != ca.subject:
            return CertState(spec, "issued by another CA")
        try:  # a CA made again (same name, new key) must not keep the old one's certificates
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return CertState(spec, "not signed by the current CA")
        if _cert_sans(cert) != _sans(spec):
            return CertState(spec, "names or addresses changed")
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cn or cn[0].value != spec.common_name:
            return CertState(spec, "common name changed")
        return CertState(spec, None)

    def plan(self, specs: Iterable[CertSpec], now: dt.datetime | None = None) -> list[CertState]:
        return [s for s in (self.state(spec, now) for spec in specs) if s.reason is not None]

    def issue(
        self,
        specs: Iterable[CertSpec],
        identity: Identity,
        recipients: list[Recipient],
        now: dt.datetime | None = None,
    ) -> list[CertState]:
        """Issue every certificate of `specs` that is missing, expiring or out of date; returns those issued."""
        todo = self.plan(specs, now)
        if not todo:
            return []
        ca_cert = self.ca_certificate()
        ca_key = serialization.load_pem_private_key(identity.decrypt_file(self.key_path("ca")), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise NixInfraError(f"{self.key_path('ca')}: not an EC private key")
        check_ca_pair(ca_cert, ca_key, self.ca_path, self.key_path("ca"))
        for item in todo:
            key, cert = _leaf(item.spec, ca_cert, ca_key, now or _now())
            write_encrypted(self.key_path(item.spec.name), _key_pem(key), recipients)
            write_atomically(self.cert_path(item.spec.name), cert.public_bytes(serialization.Encoding.PEM))
        return todo

    def certificate_pem(self, name: str) -> bytes:
        try:
            return self.cert_path(name).read_bytes()
        except FileNotFoundError:
            raise NixInfraError(f"{self.cert_path(name)} does not exist: run `nix-infra pki issue`") from None

    def private_key_pem(self, name: str, identity: Identity) -> bytes:
        """A private key, decrypted into memory."""
        return identity.decrypt_file(self.key_path(name))


def check_ca_pair(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path, key_path: Path) -> None:
    """The CA certificate is the CA key's: same public key, self-signed, a CA. Otherwise every
    certificate issued would name an issuer that did not sign it (etcd TLS would break on every
    node at the next delivery). Raises NixInfraError naming both files."""
    same_key = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not same_key or cert.issuer != cert.subject or not is_ca:
        raise NixInfraError(
            f"{cert_path} is not the certificate of the CA key {key_path} (a different key, not "
            "self-signed, or not a CA): restore the CA certificate that belongs to the key; nothing was issued"
        )


def _key_usage(ca: bool) -> x509.KeyUsage:
    """Signatures only (ECDSA keys); a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _leaf(
    spec: CertSpec, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if spec.client else []
    if spec.server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.common_name, "nix-infra"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + LEAF_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in spec.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())
