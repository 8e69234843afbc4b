"""Nothing lost, nothing added: 1 GiB each way through passthrough and through termination with
equal SHA-256, and 10,000 short connections with exactly one event each.

Runtime: about 30 s for the four GiB (loopback relays several hundred MiB/s) and about
30 s for the 10,000 connections, well inside CI's budget, so no `slow` marker.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from tests.support.faulty import gateway_rss, record_figures
from tests.support.gateway import read_line, tls_connect
from tests.support.upstream import RawUpstream, client_hello_bytes, pattern_chunks

pytestmark = pytest.mark.integration

GIB = 1 << 30
TERMINATE = {"on_tcp_connect": [{"actions": [{"type": "terminate-tls"}]}]}


def _local_ca(gw) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tlsgate", "ca", "path", "-c", str(gw.config_path)],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


def _connect_terminated(port: int, sni: str, ca: str):
    ctx = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout=120)
    return ctx.wrap_socket(raw, server_hostname=sni)


def upload(connect, size: int, seed: int) -> tuple[str, str]:
    """(sha256 of what we sent, sha256 the upstream computed over what it received)."""
    expected = hashlib.sha256()
    with connect() as s:
        read_line(s)
        s.sendall(f"SINK {size}\n".encode())
        for piece in pattern_chunks(size, seed):
            expected.update(piece)
            s.sendall(piece)
        digest = read_line(s).strip()
        # Read to the end before closing: closing with the peer's close_notify unread would
        # make our kernel answer with an RST (a client_reset event) instead of a FIN.
        while s.recv(4096):
            pass
        return expected.hexdigest(), digest


def download(connect, size: int, seed: int) -> tuple[str, str, int]:
    """(sha256 of what the upstream sends, sha256 of what arrived, bytes that arrived)."""
    expected, got, received = hashlib.sha256(), hashlib.sha256(), 0
    for piece in pattern_chunks(size, seed):
        expected.update(piece)
    with connect() as s:
        read_line(s)
        s.sendall(f"SOURCE {size} {seed}\n".encode())
        while data := s.recv(1 << 20):
            got.update(data)
            received += len(data)
    return expected.hexdigest(), got.hexdigest(), received


@pytest.mark.parametrize("mode", ["passthrough", "termination"])
def test_one_gib_each_way_arrives_intact(gateway, upstreams, pki, mode):
    if mode == "passthrough":
        app = upstreams("app")
        gw = gateway({"endpoints": [{"name": "app", "url": "tls://app.example.test", "upstream": {"url": app.address}}]})

        def connect():
            return tls_connect(gw.port, "app.example.test", pki.files.cert, timeout=120)
    else:
        plain = upstreams("plain", tls=False)
        gw = gateway(
            {"endpoints": [{"name": "t", "url": "tls://t.example.test", "upstream": {"url": plain.address},
                            "traffic_policy": TERMINATE}]}
        )
        ca = _local_ca(gw)

        def connect():
            return _connect_terminated(gw.port, "t.example.test", ca)

    rss_before = gateway_rss(gw)
    started = time.monotonic()
    sent, sunk = upload(connect, GIB, seed=11)
    up_s = time.monotonic() - started
    assert sunk == sent
    started = time.monotonic()
    expected, got, received = download(connect, GIB, seed=12)
    down_s = time.monotonic() - started
    assert received == GIB
    assert got == expected
    events = gw.wait_events(2)
    up, down = sorted(events, key=lambda e: e["object"]["conn"]["start_ts"])
    assert up["object"]["conn"]["bytes_in"] > GIB
    assert down["object"]["conn"]["bytes_out"] > GIB
    assert {e["object"]["close_reason"] for e in events} == {"eof"}
    record_figures(
        f"integrity_{mode}",
        title=f"1 GiB each way through {mode}, SHA-256 compared",
        attempted=2,
        succeeded=2,
        failed=0,
        rss_before=rss_before,
        rss_after=gateway_rss(gw),
        notes=f"upload {GIB / up_s / 2**20:.0f} MiB/s, download {GIB / down_s / 2**20:.0f} MiB/s; digests equal",
    )


SHORT = 10_000
THREADS = 4
# Every kind of short life a connection can have, so each close path is counted:
# (kind, expected close reason, expected endpoint name or None)
KINDS = [
    ("relayed", "eof", "raw"),
    ("unknown_sni", "unknown_sni", None),
    ("not_tls", "not_tls", None),
    ("silent", "eof", None),
]


def _short_connection(port: int, kind: str, hello: bytes, unknown: bytes) -> int:
    """One short connection of ``kind``; returns its client port."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        client_port = s.getsockname()[1]
        if kind == "relayed":
            s.sendall(hello)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while data := s.recv(4096):
                reply += data
            assert reply == f"got {len(hello)} bytes".encode(), reply
        elif kind == "unknown_sni":
            s.sendall(unknown)
            assert s.recv(100) == bytes.fromhex("15030300020270")  # unrecognized_name
        elif kind == "not_tls":
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert s.recv(100) == b""
        else:  # silent: connect, then close without a byte
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b""
    return client_port


def test_ten_thousand_short_connections_have_exactly_one_event_each(gateway):
    raw = RawUpstream()
    raw.sock.listen(512)
    try:
        gw = gateway({"endpoints": [{"name": "raw", "url": "tls://raw.example.test", "upstream": {"url": raw.address}}]})
        hello = client_hello_bytes("raw.example.test")
        unknown = client_hello_bytes("nope.example.test")
        rss_before = gateway_rss(gw)
        plan = [KINDS[i % len(KINDS)][0] for i in range(SHORT)]
        ports: list[list[tuple[str, int]]] = [[] for _ in range(THREADS)]
        errors: list[BaseException] = []

        def run(index: int) -> None:
            for kind in plan[index::THREADS]:
                try:
                    ports[index].append((kind, _short_connection(gw.port, kind, hello, unknown)))
                except (OSError, AssertionError) as e:
                    errors.append(e)

        started = time.monotonic()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - started
        assert not errors, errors[:5]
        rss_after = gateway_rss(gw)
        assert gw.stop() == 0  # a drained stop flushes every worker's events
        events = gw.events()
    finally:
        raw.close()

    assert len(events) == SHORT
    assert len({e["event_id"] for e in events}) == SHORT
    assert len({e["object"]["id"] for e in events}) == SHORT
    made = Counter(kind_port for per_thread in ports for kind_port in per_thread)
    expected_by_kind = {kind: (reason, name) for kind, reason, name in KINDS}
    seen = Counter()
    for e in events:
        obj = e["object"]
        name = obj["endpoint"]["name"] if obj["endpoint"] else None
        kinds = [k for k, (reason, ep) in expected_by_kind.items() if (reason, ep) == (obj["close_reason"], name)]
        assert len(kinds) == 1, obj
        seen[kinds[0], obj["conn"]["client_port"]] += 1
    # Each connection made is there exactly once, under its client port and with its outcome.
    assert seen == made
    assert len(raw.received) == SHORT // len(KINDS)
    record_figures(
        "short_connections",
        title=f"{SHORT:,} short connections ({THREADS} at a time, 4 kinds)",
        attempted=SHORT,
        succeeded=SHORT,
        failed=0,
        rss_before=rss_before,
        rss_after=rss_after,
        notes=f"{SHORT / took:.0f} connections/s; {len(events)} events, ids unique, none missing or doubled",
    )
