"""Terminating real TLS clients: versions, key types, ALPN, ciphers, alerts, fragmentation."""

from __future__ import annotations

import socket
import ssl
import warnings

import pytest
from cryptography import x509
from OpenSSL import SSL

from tests.unit.tls.certgen import make_ca, make_leaf
from tests.unit.tls.harness import (
    SAFETY_TIMEOUT,
    client_context,
    python_client,
    read_client_hello,
    run_pair,
    terminating_server,
)
from tlsgate.errors import Problems
from tlsgate.tls.certs import load_certificate_pair
from tlsgate.tls.contexts import TLS12_CIPHERS, create_server_context, install_sni_selector
from tlsgate.tls.gsocket import GreenTLSConnection, TLSHandshakeError


def pair_for(leaf):
    problems = Problems()
    pair = load_certificate_pair(
        leaf.chain_pem().decode(), leaf.key_pem.decode(), "<test>", "cert", problems
    )
    assert pair is not None, problems.items
    return pair


@pytest.fixture(scope="module")
def ca():
    return make_ca("Handshake Test CA")


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ed25519"])
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_handshake_succeeds_for_each_key_type_and_version(ca, kind, version):
    leaf = make_leaf(ca, ("app.example.test",), kind=kind)
    ctx = create_server_context(pair_for(leaf), session_resumption=False)

    server, client = run_pair(
        terminating_server(ctx), python_client(client_context(ca.cert_pem, version=version))
    )

    assert server.error is None and client.error is None, (server.error, client.error)
    assert client.value["answer"] == b"pong"
    assert server.value["request"] == b"ping"
    assert client.value["version"] == f"TLSv{version}"
    assert server.value["version"] == version
    assert server.value["sni"] == "app.example.test"
    assert x509.load_der_x509_certificate(client.value["peer"]) == leaf.cert
    if version == "1.2":
        assert server.value["cipher"].startswith("TLS_ECDHE_")
    else:
        assert (
            server.value["cipher"].startswith("TLS_AES_") or "CHACHA20" in (server.value["cipher"])
        )


def test_alpn_server_preference_and_no_overlap(ca):
    pair = pair_for(make_leaf(ca))
    ctx = create_server_context(pair, alpn=("h2", "http/1.1"))
    server, client = run_pair(
        terminating_server(ctx),
        python_client(client_context(ca.cert_pem, alpn=["http/1.1", "h2"])),
    )
    assert (server.value["alpn"], client.value["alpn"]) == ("h2", "h2")

    server, client = run_pair(
        terminating_server(ctx), python_client(client_context(ca.cert_pem, alpn=["imap"]))
    )
    assert client.error is None and server.value["alpn"] is None


def test_intermediate_chain_is_served(ca):
    intermediate = make_ca("Handshake Intermediate", issuer=ca)
    leaf = make_leaf(intermediate, ("chain.example.test",))
    ctx = create_server_context(pair_for(leaf))
    server, client = run_pair(
        terminating_server(ctx),
        python_client(client_context(ca.cert_pem), server_name="chain.example.test"),
    )
    assert client.error is None, client.error
    assert client.value["answer"] == b"pong"


def test_cipher_list_has_only_ecdhe_aead_for_tls12(ca):
    ctx = create_server_context(pair_for(make_leaf(ca)))
    conn = SSL.Connection(ctx, None)
    tls12 = [c for c in conn.get_cipher_list() if not c.startswith("TLS_")]
    assert tls12 and set(tls12) <= set(TLS12_CIPHERS)
    for name in tls12:
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name)
        assert "CBC" not in name and "SHA1" not in name


def test_client_offering_only_rsa_kx_cbc_gets_handshake_failure(ca):
    ctx = create_server_context(pair_for(make_leaf(ca, kind="rsa")))
    client_ctx = client_context(ca.cert_pem, version="1.2")
    client_ctx.set_ciphers("AES128-SHA:AES256-SHA:AES128-GCM-SHA256")

    server, client = run_pair(terminating_server(ctx), python_client(client_ctx))

    assert isinstance(client.error, ssl.SSLError)
    assert client.error.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"
    assert isinstance(server.error, TLSHandshakeError)
    assert server.error.alert == 40
    assert "no shared cipher" in server.error.reason


def _tls11_client_context() -> ssl.SSLContext:
    ctx = client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


@pytest.mark.parametrize(
    ("server_range", "client_version"),
    [(("1.2", "1.3"), "1.1"), (("1.3", "1.3"), "1.2"), (("1.2", "1.2"), "1.3")],
)
def test_version_outside_range_gets_protocol_version_alert(ca, server_range, client_version):
    ctx = create_server_context(
        pair_for(make_leaf(ca)), min_version=server_range[0], max_version=server_range[1]
    )
    if client_version == "1.1":
        client_ctx = _tls11_client_context()
    else:
        client_ctx = client_context(ca.cert_pem, version=client_version)
        if client_version == "1.2":
            client_ctx.minimum_version = ssl.TLSVersion.TLSv1_2

    server, client = run_pair(terminating_server(ctx), python_client(client_ctx))

    assert isinstance(client.error, ssl.SSLError), client
    assert client.error.reason == "TLSV1_ALERT_PROTOCOL_VERSION"
    assert isinstance(server.error, TLSHandshakeError)
    assert server.error.alert == 70


def _fragmented_client(cadata: bytes, server_name: str, cert: tuple[str, str] | None = None):
    """A real ssl client whose ClientHello goes out as 1-byte TLS records."""

    def client_fn(port: int) -> dict:
        ctx = client_context(cadata, cert=cert)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
        with socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT) as sock:
            with pytest.raises(ssl.SSLWantReadError):
                tls.do_handshake()
            hello = outgoing.read()
            assert hello[0] == 22 and len(hello) == 5 + int.from_bytes(hello[3:5], "big")
            body = hello[5:]
            sock.sendall(
                b"".join(b"\x16\x03\x01\x00\x01" + body[i : i + 1] for i in range(len(body)))
            )
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionError("server closed during the handshake") from None
                    incoming.write(data)
            tls.write(b"ping")
            sock.sendall(outgoing.read())
            answer = b""
            while len(answer) < 4:
                try:
                    answer += tls.read(4 - len(answer))
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    incoming.write(sock.recv(65536))
            return {"answer": answer, "peer": tls.getpeercert(binary_form=True)}

    return client_fn


def test_one_byte_fragmented_client_hello_selects_the_sni_certificate(ca, tmp_path):
    """The hello is fed as read; the SNI selector still picks the right certificate."""
    default_leaf = make_leaf(ca, ("default.example.test",))
    wanted_leaf = make_leaf(ca, ("wanted.example.test",))
    front = create_server_context(pair_for(default_leaf), session_resumption=False)
    wanted = create_server_context(pair_for(wanted_leaf), session_resumption=False)
    install_sni_selector(front, {"wanted.example.test": wanted}.get)

    def server_fn(sock):
        hello = read_client_hello(sock)
        tls = GreenTLSConnection.server(sock, front)
        tls.server_handshake(hello, SAFETY_TIMEOUT)
        assert tls.recv(4) == b"ping"
        tls.sendall(b"pong")
        return {"hello_size": len(hello), "sni": tls.server_name}

    server, client = run_pair(server_fn, _fragmented_client(ca.cert_pem, "wanted.example.test"))

    assert server.error is None and client.error is None, (server.error, client.error)
    assert client.value["answer"] == b"pong"
    assert x509.load_der_x509_certificate(client.value["peer"]) == wanted_leaf.cert
    assert server.value["sni"] == "wanted.example.test"
    assert server.value["hello_size"] > 6 * 100  # really arrived as 1-byte records


def test_unknown_sni_gets_unrecognized_name_alert(ca):
    front = create_server_context(pair_for(make_leaf(ca, ("front.example.test",))))
    install_sni_selector(front, lambda sni: None)

    server, client = run_pair(
        terminating_server(front),
        python_client(client_context(ca.cert_pem), server_name="nobody.example.test"),
    )

    assert isinstance(client.error, ssl.SSLError)
    assert client.error.reason == "TLSV1_UNRECOGNIZED_NAME"
    assert isinstance(server.error, TLSHandshakeError) and server.error.alert == 112


def test_large_payload_both_ways(ca):
    """Many records each way, with concurrent recv and sendall on the server."""
    import hashlib

    import gevent

    ctx = create_server_context(pair_for(make_leaf(ca)))
    blob = bytes(range(256)) * 4096 * 2  # 2 MiB

    def server_fn(sock):
        tls = GreenTLSConnection.server(sock, ctx)
        tls.server_handshake(read_client_hello(sock), SAFETY_TIMEOUT)
        sender = gevent.spawn(tls.sendall, blob)
        digest, total = hashlib.sha256(), 0
        while total < len(blob):
            data = tls.recv(65536)
            assert data
            digest.update(data)
            total += len(data)
        sender.get()
        tls.shutdown()
        return digest.hexdigest()

    def client_fn(port):
        ctx_client = client_context(ca.cert_pem)
        with socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT) as raw:
            with ctx_client.wrap_socket(raw, server_hostname="app.example.test") as tls:
                import threading

                writer = threading.Thread(target=tls.sendall, args=(blob,))
                writer.start()
                digest, total = hashlib.sha256(), 0
                while total < len(blob):
                    data = tls.recv(65536)
                    assert data
                    digest.update(data)
                    total += len(data)
                writer.join()
                return digest.hexdigest()

    server, client = run_pair(server_fn, client_fn)
    expected = hashlib.sha256(blob).hexdigest()
    assert (server.error, client.error) == (None, None)
    assert server.value == expected and client.value == expected
