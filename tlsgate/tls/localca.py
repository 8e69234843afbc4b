"""The automatic local CA (like Caddy's and mkcert's): zero set-up certificates.

When no configured certificate matches an SNI and ``[tls] auto_certificates =
"local-ca"``, the worker asks `LocalCA.issue(sni)` for a short-lived leaf. The CA is
created on first need under ``state_dir/ca/`` (``ca.crt``, ``ca.key`` mode 0600, the
directory 0700) and leaves are kept in ``state_dir/ca/leaves/<sni>.pem`` (0600), so all
workers, and later runs, share them. `tlsgate ca path|export` calls `ca_cert_path()` and
`ca_cert_pem()` so a user can trust the CA.

Process safety: creation and issuance happen under an exclusive ``fcntl.flock`` on
``state_dir/ca/lock``, and every file is written to a private temporary name then
renamed into place, so racing workers create one CA and one leaf per name (the loser
of the lock re-reads what the winner wrote). flock blocks the whole gevent worker, but
only for the few milliseconds an ECDSA P-256 key and signature take, once per name
per week.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlsgate.tls.certs import CertificatePair

CA_LIFETIME = timedelta(days=3650)
LEAF_LIFETIME = timedelta(days=7)
RENEW_FRACTION = 1 / 3
"""A leaf is re-issued once less than this fraction of its lifetime is left."""
BACKDATE = timedelta(hours=1)
"""Leaves start an hour in the past so clients with a slightly slow clock accept them."""
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}$"
)


class LocalCA:
    """A CA kept in ``state_dir/ca`` that issues leaves for any SNI on demand."""

    def __init__(self, state_dir: Path | str, *, now: Callable[[], datetime] | None = None):
        self.directory = Path(state_dir) / "ca"
        self._now = now or (lambda: datetime.now(UTC))
        self._ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
        self._leaves: dict[str, CertificatePair] = {}

    def ca_cert_path(self) -> Path:
        """Path of the CA certificate, creating the CA if it does not exist yet."""
        self._load_or_create_ca()
        return self.directory / "ca.crt"

    def ca_cert_pem(self) -> bytes:
        """PEM of the CA certificate, creating the CA if it does not exist yet."""
        cert, _ = self._load_or_create_ca()
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, sni: str) -> CertificatePair:
        """A valid leaf for ``sni``: from memory, from disk, or freshly issued."""
        name = sni.strip().rstrip(".").lower()
        if not _HOST_NAME.match(name):
            raise ValueError(f"cannot issue a certificate for {sni!r}: not a host name")
        cached = self._leaves.get(name)
        if cached is not None and not self._due_for_renewal(cached):
            return cached
        pair = self._read_leaf(name)
        if pair is None:
            ca_cert, ca_key = self._load_or_create_ca()
            with self._lock():
                # Another worker may have issued it while we waited for the lock.
                pair = self._read_leaf(name)
                if pair is None:
                    pair = self._write_new_leaf(name, ca_cert, ca_key)
        self._leaves[name] = pair
        return pair

    def _due_for_renewal(self, pair: CertificatePair) -> bool:
        return pair.not_after - self._now() < LEAF_LIFETIME * RENEW_FRACTION

    def _leaf_path(self, name: str) -> Path:
        return self.directory / "leaves" / f"{name}.pem"

    def _read_leaf(self, name: str) -> CertificatePair | None:
        """The leaf on disk if it is complete and not due for renewal."""
        try:
            data = self._leaf_path(name).read_bytes()
        except FileNotFoundError:
            return None
        try:
            cert = x509.load_pem_x509_certificates(data)[0]
            key = serialization.load_pem_private_key(data, None)
        except ValueError:
            return None  # truncated by a crash: issue a new one
        pair = _make_pair(cert, key)
        return None if self._due_for_renewal(pair) else pair

    def _write_new_leaf(
        self, name: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
    ) -> CertificatePair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = self._now()
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + LEAF_LIFETIME)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        pair = _make_pair(cert, key)
        leaves = self.directory / "leaves"
        leaves.mkdir(mode=0o700, exist_ok=True)
        _write_atomically(self._leaf_path(name), pair.chain_pem + pair.key_pem)
        return pair

    def _load_or_create_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if self._ca is None:
            self._ca = self._read_ca()
        if self._ca is None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self._lock():
                self._ca = self._read_ca() or self._create_ca()
        return self._ca

    def _read_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
        # ca.crt is renamed into place after ca.key, so its presence means both are complete.
        try:
            cert_pem = (self.directory / "ca.crt").read_bytes()
            key_pem = (self.directory / "ca.key").read_bytes()
        except FileNotFoundError:
            return None
        key = serialization.load_pem_private_key(key_pem, None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.directory / 'ca.key'} is not an ECDSA key")
        return x509.load_pem_x509_certificate(cert_pem), key

    def _create_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = self._now()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tlsgate local CA"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME,
                    f"tlsgate local CA {socket.gethostname()[:24]} {secrets.token_hex(4)}",
                ),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_atomically(self.directory / "ca.key", key_pem)
        _write_atomically(self.directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
        return cert, key

    @contextmanager
    def _lock(self) -> Iterator[None]:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def _make_pair(cert: x509.Certificate, key: object) -> CertificatePair:
    return CertificatePair(
        source="<local-ca>",
        dns_names=tuple(
            n.lower()
            for n in cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.DNSName)
        ),
        not_after=cert.not_valid_after_utc,
        chain_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a fresh O_EXCL temporary file (mode 0600), then rename over ``path``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
