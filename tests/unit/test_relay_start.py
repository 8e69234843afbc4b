"""`Relay.start` on real socket pairs: callbacks only, bytes left over from the replay first.

The fast path (tlsgate/worker/fastpath.py) replays the ClientHello with one send() and
gives the relay whatever the upstream did not take. Through the gateway that hardly
happens (a fresh loopback connection's send buffer takes a whole ClientHello), so this
drives the relay directly, with a Unix socket pair whose send buffer is tiny.
"""

from __future__ import annotations

import gc
import hashlib
import socket

import gevent
import pytest

from tlsgate.events import ConnectionRecord
from tlsgate.worker.fdpump import FdDirection
from tlsgate.worker.relay import Relay

pytestmark = pytest.mark.timeout(60)


def _record() -> ConnectionRecord:
    return ConnectionRecord("t.1", 0.0, "127.0.0.1", 1, "127.0.0.1", 2)


def _pair(sndbuf: int | None = None) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    if sndbuf is not None:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _read_all(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    """Read until EOF (or past ``limit``: something was sent twice), cooperatively: the
    relay runs in this process's event loop."""
    data = b""
    while len(data) <= limit:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            gevent.sleep(0.001)
            continue
        if not chunk:
            return data
        data += chunk
    return data


def test_pending_bytes_go_first_and_whole_then_the_client_stream():
    client_app, client_gw = _pair()
    upstream_gw, upstream_app = _pair(sndbuf=4096)
    pending = hashlib.sha256(b"seed").digest() * 32 * 1024  # 1 MiB: far beyond the buffers
    later = b"what the client sent after its hello\n" * 50
    reasons: list[str] = []
    record = _record()
    relay = Relay(client_gw, upstream_gw, record, 30.0, 30.0)
    relay.start(reasons.append, pending)
    client_app.sendall(later)
    client_app.shutdown(socket.SHUT_WR)
    gevent.sleep(0.2)  # the upstream reads nothing for a while: the rest must wait in the relay
    assert reasons == []
    received = _read_all(upstream_app, limit=len(pending + later))
    # Byte for byte: a remainder written twice after a short write would show here.
    assert received == pending + later
    assert record.bytes_in == len(later)  # the replay was counted when the hello was read
    upstream_app.sendall(b"answer")
    upstream_app.shutdown(socket.SHUT_WR)
    assert _read_all(client_app) == b"answer"
    for _ in range(500):  # the last callbacks run on the next turns of the event loop
        if reasons:
            break
        gevent.sleep(0.01)
    assert reasons == ["eof"]
    assert record.bytes_out == len(b"answer")
    for sock in (client_app, client_gw, upstream_gw, upstream_app):
        sock.close()


def test_stop_from_a_greenlet_reports_the_reason_once():
    client_app, client_gw = _pair()
    upstream_gw, upstream_app = _pair()
    reasons: list[str] = []
    relay = Relay(client_gw, upstream_gw, _record(), 30.0, 30.0)
    relay.start(reasons.append)
    gevent.spawn(relay.stop, "killed").join()
    relay.stop("shutdown")
    assert reasons == ["killed"]
    for sock in (client_app, client_gw, upstream_gw, upstream_app):
        sock.close()


def test_a_finished_relay_is_freed_without_the_cycle_collector():
    # The two directions point at each other and at the relay: ending the relay must undo
    # that, or every connection's objects would wait for a garbage collection.
    client_app, client_gw = _pair()
    upstream_gw, upstream_app = _pair()
    reasons: list[str] = []
    gc.collect()
    gc.disable()
    try:
        relay = Relay(client_gw, upstream_gw, _record(), 30.0, 30.0)
        relay.start(reasons.append)
        client_app.sendall(b"request")
        client_app.shutdown(socket.SHUT_WR)
        assert _read_all(upstream_app) == b"request"
        upstream_app.sendall(b"answer")
        upstream_app.shutdown(socket.SHUT_WR)
        assert _read_all(client_app) == b"answer"
        for _ in range(500):
            if reasons:
                break
            gevent.sleep(0.01)
        assert reasons == ["eof"]
        del relay
        left = [o for o in gc.get_objects() if type(o) in (Relay, FdDirection)]
        assert left == []
    finally:
        gc.enable()
        for sock in (client_app, client_gw, upstream_gw, upstream_app):
            sock.close()
