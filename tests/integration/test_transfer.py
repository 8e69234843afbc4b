"""Large transfers arrive intact both ways, and half-closes propagate."""

from __future__ import annotations

import hashlib
import socket

import pytest

from tests.support.gateway import read_line, tls_connect
from tests.support.upstream import RawUpstream, client_hello_bytes, pattern_chunks

pytestmark = pytest.mark.integration

SIZE = 100 * 1024 * 1024

# Both relay implementations: zero-copy splice (Linux) and the portable read/write loop.
RELAYS = [pytest.param({}, id="splice"), pytest.param({"TLSGATE_RELAY": "copy"}, id="copy")]


@pytest.mark.parametrize("relay_env", RELAYS)
def test_100_mib_each_way_arrives_intact(gateway, upstreams, pki, relay_env):
    app = upstreams("app")
    gw = gateway(
        {"endpoints": [{"name": "app", "url": "tls://app.example.test", "upstream": {"url": app.address}}]},
        env=relay_env,
    )
    ca = pki.files.cert

    # Upload: the upstream hashes what it received.
    expected = hashlib.sha256()
    with tls_connect(gw.port, "app.example.test", ca, timeout=120) as s:
        assert read_line(s) == "hello from app\n"
        s.sendall(f"SINK {SIZE}\n".encode())
        for piece in pattern_chunks(SIZE, seed=1):
            expected.update(piece)
            s.sendall(piece)
        assert read_line(s).strip() == expected.hexdigest()

    # Download: the client hashes what the upstream sent.
    expected, got = hashlib.sha256(), hashlib.sha256()
    for piece in pattern_chunks(SIZE, seed=2):
        expected.update(piece)
    received = 0
    with tls_connect(gw.port, "app.example.test", ca, timeout=120) as s:
        assert read_line(s) == "hello from app\n"
        s.sendall(f"SOURCE {SIZE} 2\n".encode())
        while data := s.recv(1 << 20):
            got.update(data)
            received += len(data)
    assert received == SIZE
    assert got.hexdigest() == expected.hexdigest()

    events = gw.wait_events(2)
    up, down = sorted(events, key=lambda e: e["object"]["conn"]["start_ts"])
    assert up["object"]["conn"]["bytes_in"] > SIZE
    assert down["object"]["conn"]["bytes_out"] > SIZE
    assert {e["object"]["close_reason"] for e in events} == {"eof"}


@pytest.mark.parametrize("relay_env", RELAYS)
def test_half_close_propagates_both_ways(gateway, relay_env):
    """Client EOF reaches the upstream as EOF, and the upstream's reply still flows back after it."""
    raw = RawUpstream()
    try:
        gw = gateway(
            {"endpoints": [{"name": "raw", "url": "tls://raw.example.test", "upstream": {"url": raw.address}}]},
            env=relay_env,
        )
        payload = client_hello_bytes("raw.example.test") + b"z" * 300_000
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while data := s.recv(65536):
                reply += data
        assert reply == f"got {len(payload)} bytes".encode()
        assert raw.received == [payload]
        event = gw.wait_events(1)[0]["object"]
        assert event["close_reason"] == "eof"
        assert event["conn"]["bytes_in"] == len(payload)
        assert event["conn"]["bytes_out"] == len(reply)
    finally:
        raw.close()


@pytest.mark.parametrize("relay_env", RELAYS)
def test_idle_connection_is_closed_when_both_legs_are_silent(gateway, upstreams, pki, relay_env):
    app = upstreams("app")
    gw = gateway(
        {
            "limits": {"client_idle_timeout": "700ms", "server_idle_timeout": "700ms"},
            "endpoints": [{"name": "app", "url": "tls://app.example.test", "upstream": {"url": app.address}}],
        },
        env=relay_env,
    )
    with tls_connect(gw.port, "app.example.test", pki.files.cert) as s:
        read_line(s)
        s.sendall(b"ECHO\n")
        s.settimeout(10)
        assert s.recv(100) == b""  # the gateway closed the idle connection
    assert gw.wait_events(1)[0]["object"]["close_reason"] == "idle_timeout"


def test_one_way_stream_is_not_cut_by_the_silent_side(gateway, upstreams, pki):
    """A slow download with a silent client outlives client_idle_timeout several times over."""
    app = upstreams("app")
    gw = gateway(
        {
            "limits": {"client_idle_timeout": "300ms", "server_idle_timeout": "300ms"},
            "endpoints": [{"name": "app", "url": "tls://app.example.test", "upstream": {"url": app.address}}],
        }
    )
    with tls_connect(gw.port, "app.example.test", pki.files.cert) as s:
        read_line(s)
        s.sendall(b"DRIP 15 100\n")  # 1.5 s of one byte per 100 ms while the client says nothing
        got = b""
        while data := s.recv(10):
            got += data
        assert got == b"." * 15
    assert gw.wait_events(1)[0]["object"]["close_reason"] == "eof"
