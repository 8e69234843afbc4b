"""`Handshake` (tlsgate/worker/handshake.py): a TLS handshake driven by event-loop callbacks.

The server side runs in this process's hub over a real loopback TCP socket; the client is
Python's ``ssl`` module (or raw bytes) in a real thread (tests/unit/tls/harness.py). The
integration tests terminate through the gateway; these pin the paths a gateway on
loopback rarely takes: a first flight larger than the socket takes at once, a client
that stops mid-handshake, one that closes, and one that gets a fatal alert.
"""

from __future__ import annotations

import socket
import ssl
import time

import gevent
import pytest
from gevent.event import AsyncResult

from tests.support.upstream import client_hello_bytes
from tests.unit.tls.certgen import make_ca, make_leaf
from tests.unit.tls.harness import SAFETY_TIMEOUT, run_pair
from tests.unit.tls.test_handshake import pair_for
from tlsgate.tls.contexts import create_server_context
from tlsgate.tls.gsocket import GreenTLSConnection, TLSHandshakeError, TLSHandshakeTimeout
from tlsgate.worker.handshake import Handshake

pytestmark = pytest.mark.timeout(60)


class CountingHandshake(Handshake):
    """Counts how often the socket was not ready to take the rest of a flight."""

    __slots__ = ("writable_waits",)

    def _on_writable(self) -> None:
        self.writable_waits = getattr(self, "writable_waits", 0) + 1
        super()._on_writable()


@pytest.fixture(scope="module")
def ca():
    return make_ca("Handshake driver CA")


def serve_handshake(ctx, timeout: float = 10.0, sndbuf: int | None = None):
    """A server function for `run_pair`: drives one `Handshake`, answers ``hi`` when it is
    done; returns ``("done", waits)``, or ``("failed", error, unsent)`` after delivering
    ``unsent`` and closing gracefully."""

    def serve(sock):
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        tls = GreenTLSConnection.server(sock, ctx)
        outcome = AsyncResult()
        handshake = CountingHandshake(
            tls,
            gevent.get_hub().loop,
            timeout,
            lambda: outcome.set(("done",)),
            lambda error, unsent: outcome.set(("failed", error, unsent)),
        )
        handshake.start()
        result = outcome.get(timeout=SAFETY_TIMEOUT)
        if result[0] == "done":
            tls.write_plaintext(b"hi")
            sock.sendall(tls.ciphertext_out())
            return ("done", getattr(handshake, "writable_waits", 0))
        # As the gateway does (Connection.refuse): deliver what is left, close gracefully.
        try:
            sock.sendall(result[2])
            sock.shutdown(socket.SHUT_WR)
            with gevent.Timeout(2, False):
                while sock.recv(65536):
                    pass
        except OSError:
            pass  # the client is gone already
        return result

    return serve


def test_a_first_flight_larger_than_the_socket_takes_is_written_in_turns(ca):
    # ~600 names make a Certificate message of ~15 KB; the server's send buffer takes ~4 KB.
    names = ("app.example.test",) + tuple(f"name{i}.example.test" for i in range(600))
    ctx = create_server_context(pair_for(make_leaf(ca, names)))

    def client(port):
        client_ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        raw.connect(("127.0.0.1", port))
        with client_ctx.wrap_socket(raw, server_hostname="app.example.test") as tls:
            return tls.recv(2)

    server, answered = run_pair(serve_handshake(ctx, sndbuf=2048), client)
    assert server.error is None and answered.error is None, (server.error, answered.error)
    assert answered.value == b"hi"
    state, waits = server.value
    assert state == "done"
    assert waits >= 1  # the writer path really ran


def test_a_client_that_stops_after_its_hello_times_out(ca):
    ctx = create_server_context(pair_for(make_leaf(ca)))

    def client(port):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(client_hello_bytes("app.example.test"))
            started = time.monotonic()
            received = raw.recv(5)
            while raw.recv(65536):
                pass  # the server's flight, then its close
            return received, time.monotonic() - started

    server, answered = run_pair(serve_handshake(ctx, timeout=0.3), client)
    state, error, _unsent = server.value
    assert state == "failed"
    assert isinstance(error, TLSHandshakeTimeout)
    assert answered.value[0][:1] == b"\x16"  # it got the ServerHello before going quiet


def test_a_client_that_closes_mid_handshake_fails_it(ca):
    ctx = create_server_context(pair_for(make_leaf(ca)))

    def client(port):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(client_hello_bytes("app.example.test"))
            raw.recv(5)

    server, _ = run_pair(serve_handshake(ctx), client)
    state, error, _unsent = server.value
    assert state == "failed"
    assert not isinstance(error, TLSHandshakeTimeout)
    assert "closed" in error.reason or "socket error" in error.reason


def test_no_shared_cipher_fails_with_a_fatal_alert_the_client_receives(ca):
    ctx = create_server_context(pair_for(make_leaf(ca)), max_version="1.2")  # ECDSA key

    def client(port):
        client_ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        client_ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")  # needs an RSA key
        raw = socket.create_connection(("127.0.0.1", port))
        try:
            client_ctx.wrap_socket(raw, server_hostname="app.example.test")
        except ssl.SSLError as e:
            return e.reason
        finally:
            raw.close()
        return None

    server, answered = run_pair(serve_handshake(ctx), client)
    state, error, unsent = server.value
    assert state == "failed"
    assert isinstance(error, TLSHandshakeError) and error.alert == 40  # handshake_failure
    assert unsent[:1] == b"\x15"  # the alert record, for the owner to deliver
    assert answered.value is not None and "HANDSHAKE_FAILURE" in answered.value
