"""The callback-driven fast path (tlsgate/worker/fastpath.py) and its hand-over to greenlets.

Every other integration test runs through the fast path too; these pin what is
particular to it: connections listed and killed in each of its states (a terminated
client's handshake included), a large ClientHello replay to an upstream that reads
late, the hand-over for an upstream given by host name (the dialer must resolve it,
which needs a greenlet), also after the gateway terminated TLS, and accept backoff when
a worker runs out of descriptors.
"""

from __future__ import annotations

import json
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests.integration.test_adversarial import _hello_of, records
from tests.integration.test_control import control
from tests.integration.test_termination import TERMINATE
from tests.support.faulty import FullBacklogUpstream
from tests.support.gateway import client_context, greeting, read_line, wait_for
from tests.support.upstream import client_hello_bytes, stop_listening
from tlsgate.proto.proxy_protocol import parse_proxy_header

pytestmark = pytest.mark.integration


def endpoint(name, url, address, **upstream):
    return {"name": name, "url": url, "upstream": {"url": address, **upstream}}


def _rows(c) -> list[dict]:
    return c.request("connections.list")["connections"]


def _kill_the_one_in(gw, state: str) -> dict:
    """Wait for the gateway's only connection to be in ``state``, kill it, return its row."""
    with control(gw) as c:
        [row] = wait_for(lambda: [r for r in _rows(c) if r["state"] == state] or None, what=state)
        c.request("connections.kill", id=row["id"])
    return row


def test_a_connection_waiting_for_its_client_hello_is_listed_and_killed(gateway, upstreams):
    gw = gateway({"endpoints": [endpoint("app", "tls://app.example.test", upstreams("app").address)]})
    part = client_hello_bytes("app.example.test")[:20]
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(part)
        row = _kill_the_one_in(gw, "hello")
        assert s.recv(100) == b""
    [event] = gw.wait_events(1)
    assert event["object"]["id"] == row["id"]
    assert event["object"]["close_reason"] == "killed"
    assert event["object"]["conn"]["bytes_in"] == len(part)
    assert event["object"]["endpoint"] is None


def test_a_client_hello_sent_after_a_pause_is_relayed_both_ways(gateway, upstreams, pki):
    # The read watcher that waited for the ClientHello becomes the relay's reader for the
    # client: it must stop feeding the hello parser and move everything after the hello.
    gw = gateway({"endpoints": [endpoint("app", "tls://app.example.test", upstreams("app").address)]})
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    with control(gw) as c:
        wait_for(lambda: [r for r in _rows(c) if r["state"] == "hello"], what="a connection waiting")
    with client_context(pki.files.cert).wrap_socket(raw, server_hostname="app.example.test") as tls:
        assert read_line(tls) == "hello from app\n"
        tls.sendall(b"ECHO\n")
        payload = bytes(range(256)) * 64
        tls.sendall(payload)
        echoed = b""
        while len(echoed) < len(payload):
            chunk = tls.recv(65536)
            assert chunk, "the relay ended early"
            echoed += chunk
        assert echoed == payload
    [event] = gw.wait_events(1)
    assert event["object"]["close_reason"] == "eof"
    assert event["object"]["conn"]["bytes_in"] > len(payload)


@pytest.fixture
def silent():
    upstream = FullBacklogUpstream()
    yield upstream
    upstream.close()


def test_a_connection_dialing_a_silent_upstream_is_listed_and_killed(gateway, silent):
    gw = gateway(
        {
            "limits": {"upstream_connect_timeout": "60s"},
            "endpoints": [endpoint("b", "tls://b.example.test", silent.address)],
        }
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(client_hello_bytes("b.example.test"))
        row = _kill_the_one_in(gw, "dialing")
        assert row["endpoint"] == "b"
        assert s.recv(100) == b""
    event = gw.wait_events(1)[0]["object"]
    assert event["close_reason"] == "killed"
    assert event["upstream"] == {"addr": silent.address}


class SlowReader:
    """A plain upstream with a small receive buffer that reads nothing for a while, then
    everything until EOF: the gateway's ClientHello replay cannot go out in one send()."""

    def __init__(self, wait: float):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.wait = wait
        self.received = b""
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            time.sleep(self.wait)
            while chunk := conn.recv(65536):
                self.received += chunk
            conn.sendall(b"got it")
        self.done.set()

    def close(self) -> None:
        stop_listening(self.sock)


def test_a_replay_the_upstream_takes_slowly_arrives_whole_and_before_later_bytes(gateway):
    """360 KB of ClientHello (60 KB in 1-byte records) plus a PROXY v2 header, to an upstream
    that reads nothing for a second: the bytes the client sends after the hello queue
    behind it, and the upstream gets all of it, in order. (A fresh loopback connection's
    send buffer takes the whole replay at once; the short-send path, where the relay
    holds the rest, is driven directly in tests/unit/test_relay_start.py.)"""
    upstream = SlowReader(wait=1.0)
    gw = gateway(
        {
            "limits": {"client_hello_timeout": "30s"},
            "endpoints": [endpoint("app", "tls://app.example.test", upstream.address, proxy_protocol=2)],
        }
    )
    wire = records(_hello_of(60_000), 1)
    after = b"bytes the client sent after its hello\n" * 100
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
            s.sendall(wire)
            s.sendall(after)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b"got it"
        assert upstream.done.wait(30)
    finally:
        upstream.close()
    header = parse_proxy_header(upstream.received)
    assert header.version == 2 and header.authority == "app.example.test"
    assert upstream.received[header.length :] == wire + after
    event = gw.wait_events(1)[0]["object"]
    assert event["close_reason"] == "eof"
    assert event["conn"]["bytes_in"] == len(wire) + len(after)


def test_an_upstream_named_by_host_name_is_dialled_from_a_greenlet(gateway, upstreams, pki):
    app = upstreams("app")
    port = app.address.rsplit(":", 1)[1]
    gw = gateway({"endpoints": [endpoint("app", "tls://app.example.test", f"localhost:{port}")]})
    assert greeting(gw.port, "app.example.test", pki.files.cert) == "hello from app"
    event = gw.wait_events(1)[0]["object"]
    assert event["upstream"] == {"addr": f"localhost:{port}"}
    assert event["close_reason"] == "eof"


def test_a_terminated_connection_to_a_host_name_goes_on_in_a_greenlet(gateway, upstreams, pki):
    """The policy and the handshake ran from callbacks; the dial needs a greenlet, which
    takes over the terminated TLS session (and sends the PROXY header)."""
    plain = upstreams("plain", tls=False, proxy_protocol=True)
    port = plain.address.rsplit(":", 1)[1]
    gw = gateway(
        {
            "certificates": [{"cert": str(pki.server.cert), "key": str(pki.server.key)}],
            "endpoints": [
                endpoint(
                    "term", "tls://app.example.test", f"localhost:{port}", proxy_protocol=2
                )
                | {"traffic_policy": TERMINATE}
            ],
        }
    )
    ctx = ssl.create_default_context(cafile=pki.files.cert)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="app.example.test") as s:
        assert s.version() == "TLSv1.3"
        assert read_line(s) == "hello from plain\n"
        s.sendall(b"ECHO\nping")
        assert s.recv(4) == b"ping"
    [header] = plain.proxy_headers
    assert header.authority == "app.example.test"
    event = gw.wait_events(1)[0]["object"]
    assert event["termination"] == "gateway"
    assert event["upstream"] == {"addr": f"localhost:{port}"}
    assert event["tls"]["version"] == "1.3"
    assert event["close_reason"] in ("eof", "client_reset")


def test_a_terminated_pool_fails_over_from_a_member_that_refuses(gateway, upstreams, pki):
    """After termination nothing but a PROXY header (here: nothing) goes first, so the
    connect is confirmed by an empty send; a refused member must still fail over."""
    alive = upstreams("alive", tls=False)
    dead = upstreams("dead", tls=False)
    dead_address = dead.address
    dead.close()
    members = [
        endpoint(name, "tls://pool.example.test", address)
        | {"traffic_policy": TERMINATE, "pooling_enabled": True}
        for name, address in (("a", alive.address), ("b", dead_address))
    ]
    gw = gateway(
        {
            "certificates": [{"cert": str(pki.server.cert), "key": str(pki.server.key)}],
            "endpoints": members,
        }
    )
    ctx = ssl.create_default_context(cafile=pki.files.cert)
    for _ in range(12):  # a random first pick: all 12 reaching "alive" shows the failover
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="pool.example.test") as s:
            assert read_line(s) == "hello from alive\n"
    events = [e["object"] for e in gw.wait_events(12)]
    assert {e["endpoint"]["name"] for e in events} == {"a"}
    assert all(e["termination"] == "gateway" for e in events)


def test_a_connection_in_its_terminating_handshake_is_listed_and_killed(gateway, upstreams, pki):
    """A client that sent its ClientHello and then nothing: the gateway waits for the rest
    of the handshake (state ``policy``) without a greenlet, and a kill ends it."""
    plain = upstreams("plain", tls=False)
    gw = gateway(
        {
            "certificates": [{"cert": str(pki.server.cert), "key": str(pki.server.key)}],
            "endpoints": [
                endpoint("term", "tls://app.example.test", plain.address)
                | {"traffic_policy": TERMINATE}
            ],
        }
    )
    hello = client_hello_bytes("app.example.test")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(hello)
        assert s.recv(5)[:1] == b"\x16"  # the gateway's ServerHello: it is mid-handshake
        row = _kill_the_one_in(gw, "policy")
        s.settimeout(10)
        while s.recv(65536):
            pass  # the rest of the server's flight, then EOF
    [event] = gw.wait_events(1)
    assert event["object"]["id"] == row["id"]
    assert event["object"]["close_reason"] == "killed"
    assert event["object"]["termination"] == "gateway"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tlsgate", *args], capture_output=True, text=True, timeout=60, check=True
    )


def test_out_of_descriptors_accept_backs_off_and_recovers(gateway, upstreams, pki):
    """A worker whose descriptor limit is reached stops accepting for a moment (no busy
    loop, no crash), counts it as `max_open_files` in `tlsgate limits`, and serves the
    queued clients once descriptors are free again."""
    gw = gateway({"endpoints": [endpoint("app", "tls://app.example.test", upstreams("app").address)]}, workers=1)
    [pid] = gw.worker_pids()
    assert greeting(gw.port, "app.example.test", pki.files.cert) == "hello from app"
    worker = psutil.Process(pid)
    # Room for four relayed connections (two descriptors each) and nothing more.
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (worker.num_fds() + 8, hard))
    held = []
    try:
        for _ in range(8):  # the first four are relayed, the rest wait in the accept queue
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            s.sendall(client_hello_bytes("app.example.test"))
            held.append(s)

        def counted():
            rows = json.loads(_cli("limits", "--json", "-c", str(gw.config_path)).stdout)["limits"]
            hits = next(r for r in rows if r["name"] == "max_open_files")["hits"]
            return hits if hits > 0 else None

        first = wait_for(counted, what="accept failures counted as max_open_files")
        time.sleep(2.0)  # two reports later
        # Backing off (10 ms, doubling up to 1 s) retries a handful of times in two seconds;
        # a loop spinning on EMFILE would count thousands.
        assert counted() - first < 20
    finally:
        for s in held:
            s.close()
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert wait_for(
        lambda: greeting(gw.port, "app.example.test", pki.files.cert) == "hello from app",
        what="serving again once descriptors are free",
    )
    assert gw.worker_pids() == [pid]
    assert "Traceback" not in gw.log(), gw.log()


def test_no_descriptor_left_for_the_upstream_fails_that_connection_only(gateway, upstreams, pki):
    """A worker that can accept a client but has no descriptor left for the upstream's
    socket closes that connection as upstream_connect_failed, with no traceback, and
    serves the next one once descriptors are free."""
    gw = gateway({"endpoints": [endpoint("app", "tls://app.example.test", upstreams("app").address)]}, workers=1)
    [pid] = gw.worker_pids()
    assert greeting(gw.port, "app.example.test", pki.files.cert) == "hello from app"
    gw.wait_events(1)  # that connection has closed: its descriptors are free again
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    # One descriptor: the accepted client takes it, and the upstream's socket() fails.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (psutil.Process(pid).num_fds() + 1, hard))
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(client_hello_bytes("app.example.test"))
            assert s.recv(100) == b""
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    event = gw.wait_events(2)[1]["object"]
    assert event["close_reason"] == "upstream_connect_failed"
    assert "socket: Too many open files" in event["upstream_error"]
    assert greeting(gw.port, "app.example.test", pki.files.cert) == "hello from app"
    assert gw.worker_pids() == [pid]
    assert "Traceback" not in gw.log(), gw.log()
