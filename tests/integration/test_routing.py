"""SNI routing through a real gateway: exact, wildcard, pools, unknown and missing SNI."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from tests.support.gateway import greeting, wait_for

pytestmark = pytest.mark.integration


def endpoint(name, url, upstream, **extra):
    return {"name": name, "url": url, "upstream": {"url": upstream.address}, **extra}


def test_routes_by_sni_to_two_upstreams_with_wildcard_precedence(gateway, upstreams, pki):
    app, other, wild, deep = upstreams("app"), upstreams("other"), upstreams("wild"), upstreams("deep")
    gw = gateway(
        {
            "endpoints": [
                endpoint("app", "tls://app.example.test", app),
                endpoint("other", "tls://other.example.test", other),
                endpoint("wild", "tls://*.example.test", wild),
                endpoint("deep", "tls://*.deep.example.test", deep),
            ]
        }
    )
    ca = pki.files.cert
    assert greeting(gw.port, "app.example.test", ca) == "hello from app"
    assert greeting(gw.port, "other.example.test", ca) == "hello from other"
    assert greeting(gw.port, "x.example.test", ca) == "hello from wild"
    # Case and one trailing dot are normalised before routing; the client checks the cert for the name it sent.
    assert greeting(gw.port, "APP.Example.Test", ca) == "hello from app"
    # A longer (more specific) wildcard wins over a shorter one.
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", gw.port)) as raw, ctx.wrap_socket(raw, server_hostname="a.b.deep.example.test") as s:
        assert s.recv(100) == b"hello from deep\n"
    events = gw.wait_events(5)
    names = sorted(e["object"]["endpoint"]["name"] for e in events)
    assert names == ["app", "app", "deep", "other", "wild"]
    assert {e["object"]["conn"]["server_name"] for e in events} >= {"app.example.test", "a.b.deep.example.test"}


def _expect_alert(port: int, sni: str | None, ca) -> ssl.SSLError:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError) as info:
            ctx.wrap_socket(raw, server_hostname=sni)
    return info.value


def test_unknown_and_missing_sni_get_unrecognized_name_alert(gateway, upstreams, pki):
    app = upstreams("app")
    gw = gateway({"endpoints": [endpoint("app", "tls://app.example.test", app)]})
    err = _expect_alert(gw.port, "nope.example.test", pki.files.cert)
    assert "UNRECOGNIZED_NAME" in err.reason
    err = _expect_alert(gw.port, None, pki.files.cert)
    assert "UNRECOGNIZED_NAME" in err.reason
    events = gw.wait_events(2)
    reasons = sorted(e["object"]["close_reason"] for e in events)
    assert reasons == ["no_sni", "unknown_sni"]
    unknown = next(e for e in events if e["object"]["close_reason"] == "unknown_sni")
    assert unknown["object"]["endpoint"] is None
    assert unknown["object"]["conn"]["server_name"] == "nope.example.test"
    assert app.accepted == 0


def test_on_unknown_sni_close_sends_no_alert(gateway, upstreams, pki):
    app = upstreams("app")
    gw = gateway({"gateway": {"on_unknown_sni": "close"}, "endpoints": [endpoint("app", "tls://app.example.test", app)]})
    ctx = ssl.create_default_context(cafile=str(pki.files.cert))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLEOFError, ConnectionResetError, ssl.SSLZeroReturnError)):
            ctx.wrap_socket(raw, server_hostname="nope.example.test")
    assert gw.wait_events(1)[0]["object"]["close_reason"] == "unknown_sni"


def test_pool_fails_over_when_a_member_is_down(gateway, upstreams, pki):
    alive = upstreams("alive")
    dead = upstreams("dead")
    dead_address = dead.address
    dead.close()
    gw = gateway(
        {
            "endpoints": [
                endpoint("a", "tls://pool.example.test", alive, pooling_enabled=True),
                {"name": "b", "url": "tls://pool.example.test", "upstream": {"url": dead_address}, "pooling_enabled": True},
            ]
        }
    )
    # With a random first pick, 12 connections all reaching the live member shows failover works.
    for _ in range(12):
        assert greeting(gw.port, "pool.example.test", pki.files.cert) == "hello from alive"
    events = gw.wait_events(12)
    assert all(e["object"]["close_reason"] == "eof" for e in events)
    assert {e["object"]["endpoint"]["name"] for e in events} == {"a"}


def test_pool_members_share_connections(gateway, upstreams, pki):
    one, two = upstreams("one"), upstreams("two")
    gw = gateway(
        {
            "endpoints": [
                endpoint("one", "tls://pool.example.test", one, pooling_enabled=True),
                endpoint("two", "tls://pool.example.test", two, pooling_enabled=True),
            ]
        }
    )
    seen = {greeting(gw.port, "pool.example.test", pki.files.cert) for _ in range(30)}
    assert seen == {"hello from one", "hello from two"}


def test_upstream_down_closes_client_and_records_why(gateway, upstreams, pki):
    dead = upstreams("dead")
    address = dead.address
    dead.close()
    gw = gateway({"endpoints": [{"name": "d", "url": "tls://app.example.test", "upstream": {"url": address}}]})
    ctx = ssl.create_default_context(cafile=str(pki.files.cert))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLEOFError, ConnectionResetError, ssl.SSLZeroReturnError)):
            ctx.wrap_socket(raw, server_hostname="app.example.test")
    event = gw.wait_events(1)[0]["object"]
    assert event["close_reason"] == "upstream_connect_failed"
    assert event["upstream"]["addr"] == address
    assert "ECONNREFUSED" in event["upstream_error"]


def test_non_tls_bytes_are_closed_without_alert(gateway, upstreams):
    app = upstreams("app")
    gw = gateway({"endpoints": [endpoint("app", "tls://app.example.test", app)]})
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        assert s.recv(100) == b""
    event = gw.wait_events(1)[0]["object"]
    assert event["close_reason"] == "not_tls"
    assert event["conn"]["bytes_in"] > 0 and event["conn"]["bytes_out"] == 0


def test_silent_client_is_closed_at_client_hello_timeout(gateway, upstreams):
    app = upstreams("app")
    gw = gateway({"limits": {"client_hello_timeout": "500ms"}, "endpoints": [endpoint("app", "tls://app.example.test", app)]})
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01")  # the start of a record, then nothing more
        assert s.recv(100) == b""
    event = gw.wait_events(1)[0]["object"]
    assert event["close_reason"] == "client_hello_timeout"


def test_client_hello_split_into_tiny_segments_routes(gateway, upstreams, pki):
    """A ClientHello delivered a few bytes per TCP segment still routes by its SNI."""
    app = upstreams("app")
    gw = gateway({"endpoints": [endpoint("app", "tls://app.example.test", app)]})
    ctx = ssl.create_default_context(cafile=str(pki.files.cert))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="app.example.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(hello), 7):
            s.sendall(hello[i : i + 7])
            time.sleep(0.001)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out := outgoing.read():
                    s.sendall(out)
                data = s.recv(65536)
                assert data, "gateway closed the connection"
                incoming.write(data)
        if out := outgoing.read():
            s.sendall(out)
        line = b""
        while not line.endswith(b"\n"):
            try:
                line += tls.read(100)
            except ssl.SSLWantReadError:
                incoming.write(s.recv(65536))
        assert line == b"hello from app\n"
    wait_for(lambda: gw.events(), what="event")
