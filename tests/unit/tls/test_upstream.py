"""Re-encryption: gevent client handshakes to a real Python ssl upstream."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from datetime import UTC, datetime, timedelta

import gevent
import gevent.socket
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from tests.unit.tls.certgen import Issued, make_ca, make_key, make_leaf
from tests.unit.tls.harness import SAFETY_TIMEOUT, Outcome
from tlsgate.tls.contexts import create_upstream_context
from tlsgate.tls.gsocket import TLSHandshakeError, client_handshake


@pytest.fixture(scope="module")
def upstream_pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("upstream")
    ca = make_ca("Upstream CA")
    other = make_ca("Unrelated CA")
    leaf = make_leaf(ca, ("backend.internal.test",))
    ip_leaf = _ip_leaf(ca, "127.0.0.1")
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    (directory / "other.pem").write_bytes(other.cert_pem)
    return {
        "ca": str(directory / "ca.pem"),
        "other": str(directory / "other.pem"),
        "leaf": leaf.write(directory, "backend"),
        "ip_leaf": ip_leaf.write(directory, "ip"),
    }


def _ip_leaf(ca: Issued, ip: str) -> Issued:
    key = make_key()
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key, ca)


def reencrypt(cert_files, ctx, server_name) -> tuple[Outcome, Outcome]:
    """Python ssl upstream (thread) echoing one message; our client (greenlet) sends it."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*cert_files)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(SAFETY_TIMEOUT)
    port = listener.getsockname()[1]

    def upstream() -> Outcome:
        try:
            raw, _ = listener.accept()
            with server_ctx.wrap_socket(raw, server_side=True) as tls:
                data = tls.recv(100)
                tls.sendall(data.upper())
                return Outcome(value=tls.version())
        except (OSError, ssl.SSLError) as exc:
            return Outcome(error=exc)

    def client() -> Outcome:
        sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT)
        try:
            tls = client_handshake(sock, ctx, server_name, SAFETY_TIMEOUT)
            tls.sendall(b"hello upstream")
            answer = tls.recv(100)
            tls.shutdown()
            return Outcome(value=(answer, tls.version, tls.peer_certificate()))
        except TLSHandshakeError as exc:
            return Outcome(error=exc)
        finally:
            sock.close()

    try:
        pending = gevent.get_hub().threadpool.spawn(upstream)
        ours = gevent.spawn(client).get(timeout=SAFETY_TIMEOUT)
        return ours, pending.get(timeout=SAFETY_TIMEOUT)
    finally:
        listener.close()


def test_verified_upstream_with_private_ca(upstream_pki):
    ctx = create_upstream_context(True, upstream_pki["ca"])
    ours, theirs = reencrypt(upstream_pki["leaf"], ctx, "backend.internal.test")

    assert ours.error is None, ours.error
    answer, version, peer = ours.value
    assert answer == b"HELLO UPSTREAM"
    assert version == "1.3"
    assert peer.subject.rfc4514_string() == "CN=backend.internal.test"


def test_wrong_ca_fails_with_reason(upstream_pki):
    ctx = create_upstream_context(True, upstream_pki["other"])
    ours, theirs = reencrypt(upstream_pki["leaf"], ctx, "backend.internal.test")

    assert isinstance(ours.error, TLSHandshakeError)
    assert "certificate verify failed" in ours.error.reason
    assert "unable to get local issuer certificate" in ours.error.reason
    assert isinstance(theirs.error, ssl.SSLError)  # our alert reached the upstream


def test_hostname_mismatch_fails(upstream_pki):
    ctx = create_upstream_context(True, upstream_pki["ca"])
    ours, _ = reencrypt(upstream_pki["leaf"], ctx, "other.internal.test")

    assert isinstance(ours.error, TLSHandshakeError)
    assert "hostname mismatch" in ours.error.reason


def test_ip_address_checked_against_ip_sans(upstream_pki):
    ctx = create_upstream_context(True, upstream_pki["ca"])
    ours, _ = reencrypt(upstream_pki["ip_leaf"], ctx, "127.0.0.1")
    assert ours.error is None, ours.error

    ours, _ = reencrypt(upstream_pki["leaf"], ctx, "127.0.0.1")
    assert isinstance(ours.error, TLSHandshakeError)
    assert "IP address mismatch" in ours.error.reason


def test_verification_off_accepts_untrusted_upstream(upstream_pki):
    ctx = create_upstream_context(False)
    ours, _ = reencrypt(upstream_pki["leaf"], ctx, "whatever.test")
    assert ours.error is None, ours.error
    assert ours.value[0] == b"HELLO UPSTREAM"


def test_ssl_cert_file_is_used_when_no_cafile(upstream_pki, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", upstream_pki["ca"])
    create_upstream_context.cache_clear()
    try:
        ctx = create_upstream_context(True, None)
        ours, _ = reencrypt(upstream_pki["leaf"], ctx, "backend.internal.test")
    finally:
        create_upstream_context.cache_clear()
    assert ours.error is None, ours.error
