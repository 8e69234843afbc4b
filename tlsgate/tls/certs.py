"""Certificates and keys: loading, checking at config load, and choosing one by SNI.

The config loader calls `load_certificate_pair` for every `[[certificates]]` entry and
every `terminate-tls` action holding `server_certificate`/`server_private_key`, and
`load_ca_bundle` for `mutual_tls_certificate_authorities`. Problems go into the
loader's `Problems` collector, so `tlsgate check` lists them all at once. The worker
builds a `CertificateStore` once per config and asks it `find(sni)`.

Values may be PEM text or a file path: text containing ``-----BEGIN`` is PEM, anything
else is a path (ngrok's convention for `server_certificate` and friends).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from tlsgate.errors import Problems

PEM_MARKER = "-----BEGIN"
SUPPORTED_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


@dataclass(frozen=True, repr=False)
class CertificatePair:
    """A leaf certificate with its chain and private key, ready for an SSL context.

    Hashable, so contexts can be cached per pair. The key never appears in
    ``repr``/``str`` (they end up in logs and tracebacks).
    """

    source: str
    """Where it came from (file path, ``<pem>`` or ``<local-ca>``), for messages."""
    dns_names: tuple[str, ...]
    """Lower-case DNS names of the leaf's subjectAltName, possibly ``*.example.com``."""
    not_after: datetime
    """End of the leaf's validity (aware, UTC)."""
    chain_pem: bytes
    """Leaf first, then intermediates, PEM."""
    key_pem: bytes
    """Unencrypted PKCS#8 PEM of the leaf's private key."""

    def __repr__(self) -> str:
        return (
            f"CertificatePair(source={self.source!r}, dns_names={self.dns_names!r}, "
            f"not_after={self.not_after.isoformat()})"
        )

    __str__ = __repr__

    def matches(self, sni: str) -> bool:
        """True if a SAN names ``sni`` exactly or by a one-label wildcard (RFC 6125 6.4.3)."""
        name = _normalise(sni)
        if name in self.dns_names:
            return True
        parent = _parent(name)
        return parent is not None and f"*.{parent}" in self.dns_names

    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain_pem)[0]


@dataclass(frozen=True)
class CaBundle:
    """Trusted client-certificate CAs for mutual TLS (hashable, for context caching)."""

    pem: bytes
    """All CA certificates, PEM, in config order."""
    count: int


class CertificateStore:
    """The global `[[certificates]]`, looked up by SNI: exact SAN before wildcard SAN.

    When two pairs name the same host, the first in config order wins.
    """

    def __init__(self, exact: dict[str, CertificatePair], wildcard: dict[str, CertificatePair]):
        self._exact = exact
        self._wildcard = wildcard

    @classmethod
    def build(cls, pairs: Iterable[CertificatePair]) -> CertificateStore:
        exact: dict[str, CertificatePair] = {}
        wildcard: dict[str, CertificatePair] = {}
        for pair in pairs:
            for name in pair.dns_names:
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], pair)
                else:
                    exact.setdefault(name, pair)
        return cls(exact, wildcard)

    def find(self, sni: str) -> CertificatePair | None:
        name = _normalise(sni)
        pair = self._exact.get(name)
        if pair is not None:
            return pair
        parent = _parent(name)
        return self._wildcard.get(parent) if parent is not None else None


def load_certificate_pair(
    cert_pem_or_path: str,
    key_pem_or_path: str,
    source: str,
    key_path: str,
    problems: Problems,
    *,
    cert_field: str = "cert",
    key_field: str = "key",
    now: datetime | None = None,
) -> CertificatePair | None:
    """Load and check a certificate chain (leaf first) and its key; None if any error.

    Problems are reported at ``key_path.cert_field`` / ``key_path.key_field``
    (``certificates[0].cert``; ``...config.server_private_key``).
    """
    cert_key = _join(key_path, cert_field)
    key_key = _join(key_path, key_field)
    errors_before = len(problems.errors)

    cert_text = _read_text(cert_pem_or_path, source, cert_key, problems)
    key_text = _read_text(key_pem_or_path, source, key_key, problems)
    chain = _parse_chain(cert_text, source, cert_key, problems) if cert_text is not None else None
    key = _parse_key(key_text, source, key_key, problems) if key_text is not None else None
    if not _is_pem(key_pem_or_path) and key_text is not None:
        _check_key_file_mode(key_pem_or_path, source, key_key, problems)

    if chain:
        _check_chain_order(chain, source, cert_key, problems)
        _check_validity(chain[0], now or datetime.now(UTC), source, cert_key, problems)
        if key is not None and _public_der(chain[0].public_key()) != _public_der(key.public_key()):
            problems.error(source, key_key, "private key does not match the certificate")
    if len(problems.errors) > errors_before or not chain or key is None:
        return None
    return CertificatePair(
        source=cert_pem_or_path if not _is_pem(cert_pem_or_path) else "<pem>",
        dns_names=dns_names_of(chain[0]),
        not_after=chain[0].not_valid_after_utc,
        chain_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def load_ca_bundle(
    items: list[str], source: str, key_path: str, problems: Problems
) -> CaBundle | None:
    """Load mTLS client CAs (PEM text or paths); errors for no PEM or a non-CA certificate."""
    certs: list[x509.Certificate] = []
    errors_before = len(problems.errors)
    for index, item in enumerate(items):
        item_key = f"{key_path}[{index}]"
        text = _read_text(item, source, item_key, problems)
        if text is None:
            continue
        found = _parse_chain(text, source, item_key, problems)
        for cert in found or ():
            if not _is_ca(cert):
                problems.error(
                    source,
                    item_key,
                    f"certificate {cert.subject.rfc4514_string()!r} is not a CA "
                    "(basicConstraints CA:TRUE is missing)",
                )
            certs.append(cert)
    if len(problems.errors) > errors_before or not certs:
        if not items:
            problems.error(source, key_path, "no certificate authority given")
        return None
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return CaBundle(pem=pem, count=len(certs))


def dns_names_of(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(_normalise(n) for n in san.get_values_for_type(x509.DNSName))


def _normalise(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _parent(name: str) -> str | None:
    """``a.b.c`` -> ``b.c``; None when nothing is left for a wildcard to stand for."""
    label, dot, parent = name.partition(".")
    if not label or not dot or "." not in parent:
        return None
    return parent


def _join(key_path: str, name: str) -> str:
    return f"{key_path}.{name}" if key_path else name


def is_pem_text(value: str) -> bool:
    """Whether a config value is PEM text (as opposed to a file path)."""
    return _is_pem(value)


def _is_pem(value: str) -> bool:
    return PEM_MARKER in value


def _read_text(value: str, source: str, key: str, problems: Problems) -> str | None:
    if _is_pem(value):
        return value
    try:
        with open(value, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError as exc:
        problems.error(source, key, f"cannot read {value}: {exc.strerror or exc}")
        return None


def _parse_chain(
    text: str, source: str, key: str, problems: Problems
) -> list[x509.Certificate] | None:
    if "-----BEGIN CERTIFICATE-----" not in text:
        problems.error(source, key, "no PEM certificate found")
        return None
    try:
        return x509.load_pem_x509_certificates(text.encode("ascii", "replace"))
    except ValueError as exc:
        problems.error(source, key, f"unreadable PEM certificate: {exc}")
        return None


def _parse_key(text: str, source: str, key: str, problems: Problems) -> object | None:
    if "ENCRYPTED" in text:
        problems.error(source, key, "private key is encrypted; give an unencrypted key")
        return None
    if "PRIVATE KEY-----" not in text:
        problems.error(source, key, "no PEM private key found")
        return None
    try:
        loaded = serialization.load_pem_private_key(text.encode("ascii", "replace"), None)
    except TypeError:
        problems.error(source, key, "private key is encrypted; give an unencrypted key")
        return None
    except (ValueError, UnsupportedAlgorithm) as exc:
        problems.error(source, key, f"unreadable private key: {exc}")
        return None
    if not isinstance(loaded, SUPPORTED_KEY_TYPES):
        problems.error(
            source, key, f"unsupported key type {type(loaded).__name__}; use RSA, ECDSA or Ed25519"
        )
        return None
    return loaded


def _check_key_file_mode(path: str, source: str, key: str, problems: Problems) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & 0o077:
        problems.warn(
            source,
            key,
            f"key file {path} is readable by other users (mode {mode:04o}); chmod 600 it",
        )


def _check_chain_order(
    chain: list[x509.Certificate], source: str, key: str, problems: Problems
) -> None:
    for position, (child, parent) in enumerate(zip(chain, chain[1:], strict=False), start=1):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            problems.error(
                source,
                key,
                f"chain out of order: certificate {position} "
                f"({child.subject.rfc4514_string()}) is not issued by certificate "
                f"{position + 1} ({parent.subject.rfc4514_string()}); put the leaf first, "
                "then each issuer",
            )
            return


def _check_validity(
    leaf: x509.Certificate, now: datetime, source: str, key: str, problems: Problems
) -> None:
    if leaf.not_valid_after_utc < now:
        problems.warn(source, key, f"certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    elif leaf.not_valid_before_utc > now:
        problems.warn(
            source, key, f"certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d}"
        )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _public_der(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
