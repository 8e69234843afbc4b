"""Certificate descriptions, `openssl s_client`, and handshakes that never finish."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from tests.unit.tls.certgen import make_ca, make_leaf
from tests.unit.tls.harness import SAFETY_TIMEOUT, read_client_hello, run_pair
from tests.unit.tls.test_handshake import pair_for
from tlsgate.tls.clientcert import describe_certificate
from tlsgate.tls.contexts import create_server_context
from tlsgate.tls.gsocket import GreenTLSConnection, TLSHandshakeError, TLSHandshakeTimeout


@pytest.fixture(scope="module")
def ca():
    return make_ca("Edges CA")


def test_describe_certificate_has_ngrok_shaped_fields(ca):
    leaf = make_leaf(
        ca, ("dev.clients.test",), client=True, common_name="dev", email="dev@clients.test"
    )
    described = describe_certificate(leaf.cert)

    assert described["subject"] == {
        "dn": "O=Test Clients,CN=dev",
        "common_name": "dev",
        "country": "",
        "locality": "",
        "organization": "Test Clients",
        "organizational_unit": "",
        "postal_code": "",
        "province": "",
        "street_address": "",
    }
    assert described["issuer"]["common_name"] == "Edges CA"
    assert described["san"] == {
        "dns_names": ["dev.clients.test"],
        "email_addresses": ["dev@clients.test"],
        "ip_addresses": [],
        "uris": [],
    }
    assert described["serial_number"] == format(leaf.cert.serial_number, "x")
    assert described["not_after"] == leaf.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert described["validity"]["not_before"] == described["not_before"]
    assert described["signature_algorithm"] == "ecdsa-with-SHA256"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not installed")
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_openssl_s_client_handshake(ca, tmp_path, version):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    ctx = create_server_context(pair_for(make_leaf(ca, ("s-client.example.test",))))

    def server_fn(sock):
        tls = GreenTLSConnection.server(sock, ctx)
        tls.server_handshake(read_client_hello(sock), SAFETY_TIMEOUT)
        tls.sendall(b"hello from tlsgate\n")
        tls.shutdown()
        return tls.version, tls.cipher_suite

    def client_fn(port):
        return subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", f"-tls1_{version[-1]}",
             "-servername", "s-client.example.test", "-verify_hostname", "s-client.example.test",
             "-CAfile", str(ca_file), "-verify_return_error", "-ign_eof"],
            input=b"", capture_output=True, timeout=SAFETY_TIMEOUT, check=False,
        )  # fmt: skip

    server, client = run_pair(server_fn, client_fn)

    assert server.error is None, server.error
    out = client.value.stdout.decode()
    assert "hello from tlsgate" in out and "Verify return code: 0 (ok)" in out
    assert server.value[0] == version


def test_handshake_timeout_raises_timeout(ca):
    ctx = create_server_context(pair_for(make_leaf(ca)))

    def server_fn(sock):
        tls = GreenTLSConnection.server(sock, ctx)
        tls.server_handshake(b"", timeout=0.2)

    def client_fn(port):
        with socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT) as sock:
            sock.sendall(b"\x16\x03\x01\x00\x40")  # a record header, then silence
            return sock.recv(10)  # returns b"" once the server gives up and closes

    server, client = run_pair(server_fn, client_fn)
    assert isinstance(server.error, TLSHandshakeTimeout), server
    assert "not completed within 0.2s" in server.error.reason
    assert client.value == b""


def test_peer_closing_mid_handshake_is_a_handshake_error(ca):
    ctx = create_server_context(pair_for(make_leaf(ca)))

    def server_fn(sock):
        tls = GreenTLSConnection.server(sock, ctx)
        tls.server_handshake(b"\x16\x03\x01\x00\x40\x01\x00", SAFETY_TIMEOUT)

    def client_fn(port):
        socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT).close()

    server, _ = run_pair(server_fn, client_fn)
    assert isinstance(server.error, TLSHandshakeError)
    assert server.error.reason == "peer closed the connection during the handshake"


def test_garbage_gets_an_alert_not_a_reset(ca):
    ctx = create_server_context(pair_for(make_leaf(ca)))

    def server_fn(sock):
        tls = GreenTLSConnection.server(sock, ctx)
        try:
            tls.server_handshake(b"\x16\x03\x01\x00\x05hello", SAFETY_TIMEOUT)
        finally:
            tls.close_gracefully()

    def client_fn(port):
        with socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT) as sock:
            received = b""
            while data := sock.recv(100):
                received += data
            return received

    server, client = run_pair(server_fn, client_fn)
    assert isinstance(server.error, TLSHandshakeError) and server.error.alert is not None
    assert client.value[:1] == b"\x15"  # an alert record
    assert client.value[-1] == server.error.alert
