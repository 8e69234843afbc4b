"""Certificates for the TLS tests, made with `cryptography`: CAs, server and client leaves."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Issued:
    cert: x509.Certificate
    key: object
    issuer: Issued | None = None

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def chain_pem(self) -> bytes:
        """Leaf first, then intermediates (not the root)."""
        parts = [self.cert_pem]
        issuer = self.issuer
        while issuer is not None and issuer.issuer is not None:
            parts.append(issuer.cert_pem)
            issuer = issuer.issuer
        return b"".join(parts)

    def write(self, directory: Path, name: str, key_mode: int = 0o600) -> tuple[str, str]:
        cert_path = directory / f"{name}.crt"
        key_path = directory / f"{name}.key"
        cert_path.write_bytes(self.chain_pem())
        key_path.write_bytes(self.key_pem)
        os.chmod(key_path, key_mode)
        return str(cert_path), str(key_path)


def make_key(kind: str = "ecdsa"):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _sign(builder: x509.CertificateBuilder, key) -> x509.Certificate:
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def make_ca(name: str = "Test CA", kind: str = "ecdsa", issuer: Issued | None = None) -> Issued:
    """A root CA, or an intermediate when ``issuer`` is given."""
    key = make_key(kind)
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    return Issued(_sign(builder, issuer.key if issuer else key), key, issuer)


def make_leaf(
    issuer: Issued,
    dns_names: tuple[str, ...] = ("app.example.test",),
    *,
    kind: str = "ecdsa",
    common_name: str | None = None,
    client: bool = False,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    email: str | None = None,
) -> Issued:
    key = make_key(kind)
    now = datetime.now(UTC)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    if email:
        names.append(x509.RFC822Name(email))
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name or dns_names[0])]
    if client:
        subject.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Clients"))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
    )
    return Issued(_sign(builder, issuer.key), key, issuer)
