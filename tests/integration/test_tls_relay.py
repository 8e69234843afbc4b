"""The relay behind TLS termination (tlsgate/worker/tlspump.py), seen from real peers.

It runs on event-loop callbacks, decrypting and encrypting without blocking; these pin
what is particular to a TLS side: close_notify as TLS's half-close, both ways; a
KeyUpdate the client asks to be answered (a reply OpenSSL writes while the relay
reads); plaintext that arrives in the handshake's last flight; and a client that
stops reading (backpressure) while the upstream keeps sending.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from tests.integration.test_termination import endpoint, local_ca
from tests.support.upstream import RawUpstream

pytestmark = pytest.mark.integration

OPENSSL = shutil.which("openssl")


class BioClient:
    """A TLS client over memory BIOs: it can half-close (send close_notify) and keep reading,
    which ssl.SSLSocket's unwrap() cannot."""

    def __init__(self, port: int, sni: str, cafile: str):
        ctx = ssl.create_default_context(cafile=cafile)
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=sni)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.raw.sendall(data)

    def _fill(self) -> bool:
        data = self.raw.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        return bool(data)

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def send_close_notify(self) -> None:
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # the peer's close_notify has not come yet: we only half-close
        self._flush()

    def read_to_close(self) -> tuple[bytes, str]:
        """Everything until the peer's close_notify ("close_notify") or a bare EOF ("eof")."""
        received = b""
        while True:
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not self._fill():
                    return received, "eof"
                continue
            except ssl.SSLZeroReturnError:
                return received, "close_notify"
            except ssl.SSLEOFError:
                return received, "eof"
            if not data:
                return received, "close_notify"
            received += data

    def close(self) -> None:
        self.raw.close()


@pytest.fixture
def raw():
    upstream = RawUpstream()
    yield upstream
    upstream.close()


def test_close_notify_half_closes_both_ways(gateway, raw):
    """The client's close_notify reaches the plain upstream as EOF; the upstream's answer
    still comes back, then its FIN comes back as close_notify."""
    gw = gateway({"endpoints": [endpoint("raw", "tls://raw.example.test", raw)]})
    payload = b"x" * 200_000
    client = BioClient(gw.port, "raw.example.test", local_ca(gw))
    try:
        client.send(payload)
        client.send_close_notify()
        reply, ending = client.read_to_close()
    finally:
        client.close()
    assert (reply, ending) == (f"got {len(payload)} bytes".encode(), "close_notify")
    assert raw.received == [payload]
    event = gw.wait_events(1)[0]["object"]
    assert event["close_reason"] == "eof"
    assert event["termination"] == "gateway"
    assert event["conn"]["bytes_out"] == len(reply)


def test_request_sent_with_the_last_handshake_flight_is_relayed(gateway, raw):
    """TLS 1.2 False Start aside, a TLS 1.3 client may send its first record in the same
    segment as its Finished: the relay must read what OpenSSL already holds instead of
    waiting for the socket to become readable again."""
    gw = gateway({"endpoints": [endpoint("raw", "tls://raw.example.test", raw)]})
    ctx = ssl.create_default_context(cafile=local_ca(gw))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="raw.example.test")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        sock.sendall(outgoing.read())
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            incoming.write(sock.recv(65536))
    # Finished, the request and close_notify in one send(): one segment, one readiness.
    tls.write(b"early request")
    try:
        tls.unwrap()
    except ssl.SSLWantReadError:
        pass
    sock.sendall(outgoing.read())
    answer = b""
    while chunk := sock.recv(65536):
        incoming.write(chunk)
        try:
            answer += tls.read(65536)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
    sock.close()
    assert answer == b"got 13 bytes"
    assert raw.received == [b"early request"]


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed (CI installs it)")
def test_key_update_requested_by_the_client_is_answered(gateway, upstreams):
    """`openssl s_client`'s K command sends a KeyUpdate asking the peer to update too: the
    gateway's OpenSSL writes its own KeyUpdate while the relay reads, the relay sends it,
    and data flows on under the new keys both ways."""
    plain = upstreams("plain", tls=False)
    gw = gateway({"endpoints": [endpoint("plain", "tls://plain.example.test", plain)]})
    proc = subprocess.Popen(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{gw.port}", "-servername",
         "plain.example.test", "-CAfile", local_ca(gw), "-tls1_3", "-msg"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(1.0)  # the handshake and the upstream's greeting
        proc.stdin.write(b"ECHO\n")
        proc.stdin.flush()
        time.sleep(0.3)
        proc.stdin.write(b"K\n")  # KeyUpdate, update_requested
        proc.stdin.flush()
        time.sleep(0.3)
        proc.stdin.write(b"after the key update\n")
        proc.stdin.flush()
        time.sleep(1.0)
    finally:
        # Its stdin's end makes s_client send close_notify and exit.
        out, _ = proc.communicate(timeout=20)
    text = out.decode(errors="replace")
    lines = text.splitlines()
    assert "hello from plain" in text, text
    assert "KEYUPDATE" in text, text  # s_client sent its KeyUpdate (update_requested)
    # The gateway's own KeyUpdate came back (s_client -msg prints what it receives)...
    assert any(line.startswith("<<< TLS 1.3, Handshake") and "KeyUpdate" in line for line in lines), text
    # ...and the line typed after the update came back from the echoing upstream.
    after = lines.index("KEYUPDATE")
    assert "after the key update" in lines[after:], text
    event = gw.wait_events(1)[0]["object"]
    assert event["close_reason"] == "eof"


def test_a_client_that_stops_reading_holds_back_the_upstream(gateway, upstreams):
    """The upstream sends 64 MiB; the client reads nothing for a while, then everything.
    The relay must stop reading the upstream while the client's socket is full (its
    memory stays bounded) and deliver every byte, in order, once the client reads."""
    plain = upstreams("plain", tls=False)
    gw = gateway({"endpoints": [endpoint("plain", "tls://plain.example.test", plain)]})
    ctx = ssl.create_default_context(cafile=local_ca(gw))
    total = 64 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as raw_sock:
        raw_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        with ctx.wrap_socket(raw_sock, server_hostname="plain.example.test") as tls:
            greeting = tls.recv(100)
            assert greeting == b"hello from plain\n"
            rss_before = _gateway_rss(gw)
            tls.sendall(f"SOURCE {total} 7\n".encode())
            time.sleep(2.0)
            rss_stalled = _gateway_rss(gw)
            digest, received = hashlib.sha256(), 0
            while received < total:
                data = tls.recv(1 << 20)
                assert data, f"stream ended after {received} bytes"
                digest.update(data)
                received += len(data)
    expected = hashlib.sha256()
    from tests.support.upstream import pattern_chunks

    for piece in pattern_chunks(total, 7):
        expected.update(piece)
    assert digest.hexdigest() == expected.hexdigest()
    # Had the relay kept reading the upstream, the stalled 64 MiB would sit in its memory.
    assert rss_stalled - rss_before < 16 * 1024 * 1024, (rss_before, rss_stalled)


def _gateway_rss(gw) -> int:
    import psutil

    return max(psutil.Process(pid).memory_info().rss for pid in gw.worker_pids())


def test_proxy_v2_behind_termination_carries_the_sni_and_the_negotiated_alpn(gateway, upstreams):
    """Where the gateway terminates, it knows the ALPN it agreed with the client: the PROXY v2
    header to the plain upstream carries it (PP2_TYPE_ALPN) with the SNI (PP2_TYPE_AUTHORITY)."""
    plain = upstreams("plain", tls=False, proxy_protocol=True)
    policy = {"on_tcp_connect": [{"actions": [{"type": "terminate-tls", "config": {"alpn": ["h2", "http/1.1"]}}]}]}
    gw = gateway(
        {"endpoints": [endpoint("plain", "tls://plain.example.test", plain, policy=policy, upstream_extra={"proxy_protocol": 2})]}
    )
    ctx = ssl.create_default_context(cafile=local_ca(gw))
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as raw_sock:
        with ctx.wrap_socket(raw_sock, server_hostname="plain.example.test") as tls:
            assert tls.selected_alpn_protocol() == "http/1.1"
            assert tls.recv(100) == b"hello from plain\n"
            client_port = tls.getsockname()[1]
    [header] = plain.proxy_headers
    assert header.version == 2
    assert header.source == ("127.0.0.1", client_port)
    assert header.authority == "plain.example.test"
    assert header.alpn == b"http/1.1"
