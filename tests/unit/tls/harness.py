"""Run a gevent TLS server (this thread's hub) against a blocking client (a real OS thread).

The pytest process is never monkey-patched: the server uses gevent.socket explicitly and
the client runs in gevent's threadpool, a real thread with the real socket and ssl
modules, whose result the hub waits for cooperatively.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.socket

from tlsgate.tls.gsocket import GreenTLSConnection

SAFETY_TIMEOUT = 20.0
"""Only stops a broken test from hanging; never part of an assertion."""


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None


def run_pair(server_fn, client_fn) -> tuple[Outcome, Outcome]:
    """``server_fn(gevent_sock)`` in a greenlet, ``client_fn(port)`` in a thread."""
    listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def serve() -> Outcome:
        sock, _ = listener.accept()
        try:
            return Outcome(value=server_fn(sock))
        except Exception as exc:
            return Outcome(error=exc)
        finally:
            sock.close()

    def call_client() -> Outcome:
        try:
            return Outcome(value=client_fn(port))
        except Exception as exc:
            return Outcome(error=exc)

    server = gevent.spawn(serve)
    try:
        client = gevent.get_hub().threadpool.spawn(call_client).get(timeout=SAFETY_TIMEOUT)
        return server.get(timeout=SAFETY_TIMEOUT), client
    finally:
        server.kill()
        listener.close()


def read_client_hello(sock) -> bytes:
    """What the core does before handing over: read records until the ClientHello is whole."""
    raw = b""
    payload = b""
    position = 0
    while True:
        while len(raw) < position + 5 or len(raw) < position + 5 + _record_length(raw, position):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("client closed before its ClientHello was complete")
            raw += chunk
        length = _record_length(raw, position)
        payload += raw[position + 5 : position + 5 + length]
        position += 5 + length
        if len(payload) >= 4 and len(payload) >= 4 + int.from_bytes(payload[1:4], "big"):
            return raw


def _record_length(raw: bytes, position: int) -> int:
    if len(raw) < position + 5:
        return 0
    return int.from_bytes(raw[position + 3 : position + 5], "big")


def terminating_server(ctx, *, timeout: float = SAFETY_TIMEOUT):
    """Server: take the ClientHello as the core would, terminate, answer ping with pong."""

    def server_fn(sock) -> dict:
        hello = read_client_hello(sock)
        tls = GreenTLSConnection.server(sock, ctx)
        try:
            tls.server_handshake(hello, timeout)
        except Exception:
            tls.close_gracefully()
            raise
        request = b""
        while len(request) < 4:
            data = tls.recv(4 - len(request))
            if not data:
                break
            request += data
        tls.sendall(b"pong")
        tls.shutdown()
        return {
            "request": request,
            "version": tls.version,
            "cipher": tls.cipher_suite,
            "alpn": tls.alpn,
            "sni": tls.server_name,
            "peer": tls.peer_certificate(),
        }

    return server_fn


def python_client(
    ctx: ssl.SSLContext, server_name: str = "app.example.test", payload: bytes = b"ping"
):
    """Client: handshake, send ping, read the answer; errors (alerts) propagate."""

    def client_fn(port: int) -> dict:
        with socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.sendall(payload)
                answer = b""
                while len(answer) < 4:
                    data = tls.recv(4 - len(answer))
                    if not data:
                        break
                    answer += data
                return {
                    "answer": answer,
                    "version": tls.version(),
                    "cipher": tls.cipher()[0],
                    "alpn": tls.selected_alpn_protocol(),
                    "peer": tls.getpeercert(binary_form=True),
                }

    return client_fn


def client_context(
    cadata: bytes | None = None,
    *,
    version: str | None = None,
    cert: tuple[str, str] | None = None,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cadata is not None:
        ctx.load_verify_locations(cadata=cadata.decode())
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        ctx.load_cert_chain(*cert)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx
