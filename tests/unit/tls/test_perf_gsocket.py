"""GreenTLSConnection's direct OpenSSL calls (issue 6) keep pyOpenSSL's behaviour.

Alerts come from one module-wide info callback now, records are read and written
without pyOpenSSL's Python methods, and a connection no longer sits in a reference
cycle through a per-connection cffi callback.
"""

from __future__ import annotations

import gc
import hashlib
import socket
import ssl
import weakref

import gevent
import pytest

from tests.unit.tls.certgen import make_ca, make_leaf
from tests.unit.tls.harness import (
    SAFETY_TIMEOUT,
    client_context,
    read_client_hello,
    run_pair,
)
from tests.unit.tls.test_handshake import pair_for
from tlsgate.tls.contexts import create_server_context
from tlsgate.tls.gsocket import GreenTLSConnection, TLSHandshakeError


@pytest.fixture(scope="module")
def ca():
    return make_ca("Fast path CA")


def test_the_alert_a_client_sends_is_recorded(ca):
    """The client does not trust our certificate: it sends unknown_ca (48) and gives up."""
    ctx = create_server_context(pair_for(make_leaf(ca)), session_resumption=False)
    other_ca = make_ca("Someone else")

    def server_fn(sock):
        tls = GreenTLSConnection.server(sock, ctx)
        tls.server_handshake(read_client_hello(sock), SAFETY_TIMEOUT)

    def client_fn(port):
        client = client_context(other_ca.cert_pem, version="1.2")
        with socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT) as raw:
            client.wrap_socket(raw, server_hostname="app.example.test")

    server, client = run_pair(server_fn, client_fn)
    assert isinstance(client.error, ssl.SSLCertVerificationError)
    assert isinstance(server.error, TLSHandshakeError)
    assert server.error.peer_alert == 48
    assert server.error.alert is None


def test_alerts_of_one_connection_do_not_leak_into_the_next(ca):
    ctx = create_server_context(pair_for(make_leaf(ca)), session_resumption=False)

    def server_fn(sock):
        tls = GreenTLSConnection.server(sock, ctx)
        tls.server_handshake(read_client_hello(sock), SAFETY_TIMEOUT)
        tls.sendall(b"ok")
        return (tls.alert_sent, tls.alert_received)

    def client_fn(port):
        with socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT) as raw:
            with client_context(ca.cert_pem).wrap_socket(
                raw, server_hostname="app.example.test"
            ) as tls:
                return tls.recv(2)

    for _ in range(2):
        server, client = run_pair(server_fn, client_fn)
        assert client.value == b"ok"
        assert server.value == (None, None)


def test_a_finished_connection_is_freed_without_the_cycle_collector(ca):
    ctx = create_server_context(pair_for(make_leaf(ca)), session_resumption=False)
    refs = []

    def server_fn(sock):
        tls = GreenTLSConnection.server(sock, ctx)
        tls.server_handshake(read_client_hello(sock), SAFETY_TIMEOUT)
        tls.sendall(b"ok")
        tls.shutdown()
        refs.extend([weakref.ref(tls), weakref.ref(tls.conn)])

    def client_fn(port):
        with socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT) as raw:
            with client_context(ca.cert_pem).wrap_socket(
                raw, server_hostname="app.example.test"
            ) as tls:
                return tls.recv(2)

    gc.disable()
    try:
        server, client = run_pair(server_fn, client_fn)
        assert server.error is None and client.value == b"ok"
        gevent.sleep(0)
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()


@pytest.mark.parametrize("size", [1, 16384, 65535, 65536, 65537, 3 * 65536 + 7])
def test_sendall_and_recv_carry_every_byte_at_chunk_edges(ca, size):
    ctx = create_server_context(pair_for(make_leaf(ca)))
    blob = bytes(range(251)) * (size // 251 + 1)
    blob = blob[:size]

    def server_fn(sock):
        tls = GreenTLSConnection.server(sock, ctx)
        tls.server_handshake(read_client_hello(sock), SAFETY_TIMEOUT)
        got = b""
        while len(got) < size:
            data = tls.recv(1 << 20)  # more than one read can return
            assert data
            got += data
        tls.sendall(memoryview(got))
        tls.shutdown()
        return hashlib.sha256(got).hexdigest()

    def client_fn(port):
        with socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT) as raw:
            with client_context(ca.cert_pem).wrap_socket(
                raw, server_hostname="app.example.test"
            ) as tls:
                tls.sendall(blob)
                back = b""
                while True:
                    data = tls.recv(65536)
                    if not data:
                        return back
                    back += data

    server, client = run_pair(server_fn, client_fn)
    assert server.error is None and client.error is None, (server.error, client.error)
    assert server.value == hashlib.sha256(blob).hexdigest()
    assert client.value == blob
