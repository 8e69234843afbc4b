"""Hostile clients against a real gateway: slowloris, malformed ClientHellos, fragmentation, HRR.

Every case checks what the client sees on the wire (which alert record, or a plain
close), the event's close reason, and that the workers survived: the same worker
pids before and after, no traceback in the log, and a normal connection still works.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

from tests.support.faulty import gateway_rss, record_figures
from tests.support.gateway import free_port, greeting, read_line
from tests.support.upstream import client_hello_bytes
from tlsgate.proto import alerts

pytestmark = pytest.mark.integration

OPENSSL = shutil.which("openssl")
HRR_RANDOM = "CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C"
"""RFC 8446 §4.1.3: a ServerHello with this random is a HelloRetryRequest."""


def endpoint(name, url, upstream, **extra):
    address = upstream if isinstance(upstream, str) else upstream.address
    return {"name": name, "url": url, "upstream": {"url": address}, **extra}


def assert_workers_unharmed(gw, pids_before, ca) -> None:
    assert sorted(gw.worker_pids()) == sorted(pids_before)
    assert "Traceback" not in gw.log(), gw.log()
    assert greeting(gw.port, "app.example.test", ca) == "hello from app"


# -- ClientHello surgery ------------------------------------------------------------


def split_hello(record: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A one-record ClientHello -> (body up to the extensions, [(type, data), ...])."""
    assert record[0] == 22 and record[5] == 1
    body = record[9:]
    pos = 2 + 32
    pos += 1 + body[pos]  # session id
    pos += 2 + int.from_bytes(body[pos : pos + 2])  # cipher suites
    pos += 1 + body[pos]  # compression methods
    head, block = body[:pos], body[pos + 2 :]
    extensions, i = [], 0
    while i < len(block):
        ext_type, length = struct.unpack_from(">HH", block, i)
        extensions.append((ext_type, block[i + 4 : i + 4 + length]))
        i += 4 + length
    return head, extensions


def join_hello(head: bytes, extensions: list[tuple[int, bytes]], record_size: int = 1 << 14) -> bytes:
    """Body head + extensions -> handshake message, cut into records of ``record_size``."""
    block = b"".join(struct.pack(">HH", t, len(d)) + d for t, d in extensions)
    body = head + struct.pack(">H", len(block)) + block
    message = b"\x01" + len(body).to_bytes(3) + body
    return records(message, record_size)


def records(message: bytes, size: int, content_type: int = 22) -> bytes:
    return b"".join(
        bytes([content_type]) + b"\x03\x01" + struct.pack(">H", len(message[i : i + size])) + message[i : i + size]
        for i in range(0, len(message), size)
    )


def sni_data(*names: bytes, name_type: int = 0) -> bytes:
    entries = b"".join(bytes([name_type]) + struct.pack(">H", len(n)) + n for n in names)
    return struct.pack(">H", len(entries)) + entries


def with_sni(*names: bytes, duplicate: bool = False, name_type: int = 0) -> bytes:
    """A real Python ClientHello whose server_name extension is replaced (or doubled)."""
    head, extensions = split_hello(client_hello_bytes("app.example.test"))
    replaced = []
    for ext_type, data in extensions:
        if ext_type == 0:
            data = sni_data(*names, name_type=name_type)
            replaced.append((0, data))
            if duplicate:
                replaced.append((0, data))
        else:
            replaced.append((ext_type, data))
    return join_hello(head, replaced)


def oversized_hello() -> bytes:
    """A real ClientHello padded past 64 KiB (RFC 7685 padding), in 16 KiB records."""
    head, extensions = split_hello(client_hello_bytes("app.example.test"))
    used = sum(4 + len(d) for _, d in extensions)
    padded = extensions + [(0x0015, b"\x00" * (0xFFFF - used - 4))]
    hello = join_hello(head, padded)
    assert int.from_bytes(hello[6:9]) > 64 * 1024
    return hello


def hello_message() -> bytes:
    """The handshake message (no record header) of a real ClientHello for app.example.test."""
    hello = client_hello_bytes("app.example.test")
    assert len(hello) == 5 + int.from_bytes(hello[3:5])
    return hello[5:]


def bad_session_id() -> bytes:
    msg = bytearray(hello_message())
    msg[4 + 2 + 32] = 33  # legacy_session_id longer than 32 bytes
    return records(bytes(msg), 1 << 14)


SSLV2_HELLO = bytes.fromhex("802e0103010015000000100100800300800700c0060040020080040080") + os.urandom(16)

# (id, bytes the client sends, alert it must receive or None for a plain close, close reason)
MALFORMED = [
    ("oversized_hello", oversized_hello(), alerts.ILLEGAL_PARAMETER, "handshake_too_large"),
    ("sni_258_bytes", with_sni(b".".join([b"a" * 63] * 4) + b".ab"), alerts.UNRECOGNIZED_NAME, "no_sni"),
    ("sni_1000_bytes", with_sni(b"a" * 1000), alerts.UNRECOGNIZED_NAME, "no_sni"),
    ("sni_illegal_characters", with_sni(b"app!.example.test"), alerts.UNRECOGNIZED_NAME, "no_sni"),
    ("sni_space_and_slash", with_sni(b"app example/test"), alerts.UNRECOGNIZED_NAME, "no_sni"),
    ("sni_nul_byte", with_sni(b"app.example.test\x00.evil.test"), alerts.UNRECOGNIZED_NAME, "no_sni"),
    ("sni_trailing_nul", with_sni(b"app.example.test\x00"), alerts.UNRECOGNIZED_NAME, "no_sni"),
    ("sni_two_trailing_dots", with_sni(b"app.example.test.."), alerts.UNRECOGNIZED_NAME, "no_sni"),
    ("sni_ip_literal", with_sni(b"127.0.0.1"), alerts.UNRECOGNIZED_NAME, "no_sni"),
    ("sni_non_ascii", with_sni("äpp.example.test".encode()), alerts.ILLEGAL_PARAMETER, "bad_client_hello"),
    ("sni_empty_name", with_sni(b""), alerts.DECODE_ERROR, "bad_client_hello"),
    ("sni_other_name_type", with_sni(b"app.example.test", name_type=1), alerts.ILLEGAL_PARAMETER, "bad_client_hello"),
    ("duplicate_sni_extension", with_sni(b"app.example.test", duplicate=True), alerts.ILLEGAL_PARAMETER, "bad_client_hello"),
    ("two_sni_names", with_sni(b"app.example.test", b"other.example.test"), alerts.ILLEGAL_PARAMETER, "bad_client_hello"),
    ("zero_length_first_record", b"\x16\x03\x01\x00\x00" + client_hello_bytes("app.example.test"), alerts.UNEXPECTED_MESSAGE, "bad_client_hello"),
    ("zero_length_middle_record", records(hello_message()[:10], 10) + b"\x16\x03\x01\x00\x00" + records(hello_message()[10:], 1 << 14), alerts.UNEXPECTED_MESSAGE, "bad_client_hello"),
    ("change_cipher_spec_first", b"\x14\x03\x03\x00\x01\x01" + client_hello_bytes("app.example.test"), alerts.UNEXPECTED_MESSAGE, "bad_client_hello"),
    ("alert_first", b"\x15\x03\x03\x00\x02\x01\x00" + client_hello_bytes("app.example.test"), alerts.UNEXPECTED_MESSAGE, "bad_client_hello"),
    ("application_data_first", b"\x17\x03\x03\x00\x05hello" + client_hello_bytes("app.example.test"), alerts.UNEXPECTED_MESSAGE, "bad_client_hello"),
    ("heartbeat_first", b"\x18\x03\x03\x00\x03\x01\x00\x00" + client_hello_bytes("app.example.test"), alerts.UNEXPECTED_MESSAGE, "bad_client_hello"),
    ("alert_between_fragments", records(hello_message()[:10], 10) + b"\x15\x03\x03\x00\x02\x01\x00" + records(hello_message()[10:], 1 << 14), alerts.UNEXPECTED_MESSAGE, "bad_client_hello"),
    ("server_hello_type", records(b"\x02" + hello_message()[1:], 1 << 14), alerts.UNEXPECTED_MESSAGE, "bad_client_hello"),
    ("record_overflow", b"\x16\x03\x01\x40\x01" + b"\x01" + b"\x00" * 100, alerts.RECORD_OVERFLOW, "bad_client_hello"),
    ("session_id_too_long", bad_session_id(), alerts.DECODE_ERROR, "bad_client_hello"),
    ("sslv2_hello", SSLV2_HELLO, None, "not_tls"),
    ("garbage", b"\x00\xff" + os.urandom(200), None, "not_tls"),
    ("handshake_byte_then_garbage", b"\x16\x00\x01" + os.urandom(200), None, "not_tls"),
    ("http_request", b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n", None, "not_tls"),
]


def send_and_read_all(port: int, payload: bytes) -> bytes:
    """Send everything (the gateway may stop reading early), then read until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                return received + b"<RST>"
            if not data:
                return received
            received += data


def test_malformed_client_hellos_get_the_documented_outcome(gateway, upstreams, pki):
    app, wild = upstreams("app"), upstreams("wild")
    gw = gateway(
        {
            "endpoints": [
                endpoint("app", "tls://app.example.test", app),
                endpoint("wild", "tls://*.example.test", wild),
            ]
        }
    )
    ca = pki.files.cert
    pids = gw.worker_pids()
    rss_before = gateway_rss(gw)
    outcomes = {}
    for name, payload, _, _ in MALFORMED:
        received = send_and_read_all(gw.port, payload)
        outcomes[name] = received
    expected = {name: (alerts.build_alert(alert) if alert is not None else b"") for name, _, alert, _ in MALFORMED}
    assert outcomes == expected
    events = gw.wait_events(len(MALFORMED))
    assert len(events) == len(MALFORMED)
    by_start = sorted(events, key=lambda e: e["object"]["conn"]["start_ts"])
    assert [e["object"]["close_reason"] for e in by_start] == [reason for *_, reason in MALFORMED]
    assert all(e["object"]["endpoint"] is None for e in events)
    assert app.accepted == 0 and wild.accepted == 0  # nothing malformed reached an upstream
    assert_workers_unharmed(gw, pids, ca)
    record_figures(
        "malformed",
        title=f"Malformed ClientHellos ({len(MALFORMED)} kinds)",
        attempted=len(MALFORMED),
        succeeded=0,
        failed=len(MALFORMED),
        rss_before=rss_before,
        rss_after=gateway_rss(gw),
        notes="every one rejected with its documented alert or plain close; same worker pids after",
    )


@pytest.mark.parametrize(
    "sent",
    ["APP.EXAMPLE.TEST", "App.Example.Test", "app.example.test.", "APP.example.TEST."],
)
def test_case_and_trailing_dot_route_to_the_exact_endpoint_not_the_wildcard(gateway, upstreams, pki, sent):
    """Normalisation happens before the lookup, so these cannot slip past a per-host endpoint."""
    app, wild = upstreams("app"), upstreams("wild")
    gw = gateway(
        {
            "endpoints": [
                endpoint("app", "tls://app.example.test", app),
                endpoint("wild", "tls://*.example.test", wild),
            ]
        }
    )
    ctx = ssl.create_default_context(cafile=str(pki.files.cert))
    ctx.check_hostname = False  # the certificate names the normalised host; the point is routing
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=sent) as s:
            assert read_line(s) == "hello from app\n"
    assert app.sni_seen == [sent]  # passthrough: the upstream sees the bytes the client sent
    event = gw.wait_events(1)[0]["object"]
    assert event["endpoint"]["name"] == "app"
    assert event["conn"]["server_name"] == "app.example.test"
    assert wild.accepted == 0


# -- slowloris --------------------------------------------------------------------------

ATTACKERS = 1000


async def _dribble(port: int, hello: bytes, results: list, index: int, cap: float) -> None:
    """Send ``hello`` one byte per second until the gateway closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    results[index] = {"connected": time.monotonic(), "sent": 0}
    try:
        for byte in hello:
            writer.write(bytes([byte]))
            await writer.drain()
            results[index]["sent"] += 1
            try:
                data = await asyncio.wait_for(reader.read(100), 1.0)
            except TimeoutError:
                if time.monotonic() - results[index]["connected"] > cap:
                    results[index]["outcome"] = "still open"
                    return
                continue
            results[index]["outcome"] = "closed" if not data else f"got {data!r}"
            return
        results[index]["outcome"] = "sent everything"
    except (ConnectionResetError, BrokenPipeError):
        results[index]["outcome"] = "closed"
    finally:
        results[index]["closed"] = time.monotonic()
        writer.close()


async def _slowloris(port: int, hello: bytes, cap: float) -> list:
    results: list = [None] * ATTACKERS
    await asyncio.gather(*(_dribble(port, hello, results, i, cap) for i in range(ATTACKERS)))
    return results


def test_slowloris_clients_are_cut_at_client_hello_timeout_while_others_are_served(gateway, upstreams, pki):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * ATTACKERS:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * ATTACKERS), hard))
    app = upstreams("app")
    gw = gateway(
        {
            "limits": {"client_hello_timeout": "2s"},
            "endpoints": [endpoint("app", "tls://app.example.test", app)],
        }
    )
    ca = pki.files.cert
    pids = gw.worker_pids()
    rss_before = gateway_rss(gw)
    good: list[tuple[float, float, str]] = []
    done = threading.Event()

    def well_behaved() -> None:
        while not done.is_set():
            start = time.monotonic()
            try:
                outcome = greeting(gw.port, "app.example.test", ca)
            except (OSError, ssl.SSLError) as e:
                outcome = repr(e)
            good.append((start, time.monotonic(), outcome))

    thread = threading.Thread(target=well_behaved)
    thread.start()
    rss_peak = 0

    def sample_memory() -> None:
        nonlocal rss_peak
        while not done.is_set():
            rss_peak = max(rss_peak, gateway_rss(gw))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample_memory)
    sampler.start()
    try:
        # Safety cap: a connection still open after 30 s (15x the timeout) counts as a failure.
        results = asyncio.run(_slowloris(gw.port, client_hello_bytes("app.example.test"), cap=30))
    finally:
        done.set()
        thread.join()
        sampler.join()

    outcomes = {r["outcome"] for r in results}
    assert outcomes == {"closed"}, [r for r in results if r["outcome"] != "closed"][:5]
    assert max(r["sent"] for r in results) < len(client_hello_bytes("app.example.test"))
    all_open_from = max(r["connected"] for r in results)
    first_closed = min(r["closed"] for r in results)
    assert all_open_from < first_closed, "some attacker was closed before the last one connected"
    failures = [g for g in good if g[2] != "hello from app"]
    assert not failures, failures[:5]
    during = [g for g in good if g[0] >= all_open_from and g[1] <= first_closed]
    assert during, "no well-behaved connection completed while all attackers were connected"

    events = gw.wait_events(ATTACKERS + len(good))
    reasons = [e["object"]["close_reason"] for e in events]
    assert reasons.count("client_hello_timeout") == ATTACKERS
    assert reasons.count("eof") == len(good)
    assert_workers_unharmed(gw, pids, ca)
    timeouts = sorted(r["closed"] - r["connected"] for r in results)
    record_figures(
        "slowloris",
        title=f"Slowloris: {ATTACKERS} clients sending 1 byte/s, client_hello_timeout 2s",
        attempted=ATTACKERS + len(good),
        succeeded=len(good) - len(failures),
        failed=ATTACKERS + len(failures),
        recover_s=None,
        rss_before=rss_before,
        rss_peak=rss_peak,
        rss_after=gateway_rss(gw),
        notes=(
            f"{ATTACKERS}/{ATTACKERS} attackers closed (client_hello_timeout) after "
            f"{timeouts[0]:.2f}-{timeouts[-1]:.2f}s; {len(good)} well-behaved connections, "
            f"{len(during)} while all attackers were open, slowest "
            f"{max(g[1] - g[0] for g in good) * 1000:.0f} ms"
        ),
    )


# -- fragmentation -----------------------------------------------------------------------


def one_byte_records(hello: bytes) -> bytes:
    """Re-cut a ClientHello's handshake message into 1-byte records (legal TLS)."""
    message = b""
    pos = 0
    while pos < len(hello):
        length = int.from_bytes(hello[pos + 3 : pos + 5])
        message += hello[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return records(message, 1)


def deliver(sock: socket.socket, hello: bytes, how: str) -> None:
    if how in ("records", "both"):
        hello = one_byte_records(hello)
    if how in ("segments", "both"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(hello)):
            sock.send(hello[i : i + 1])
            time.sleep(0.0005)
    else:
        sock.sendall(hello)


def handshake_through(port: int, ctx: ssl.SSLContext, sni: str, how: str) -> str:
    """A TLS client whose ClientHello is delivered ``how``; returns the greeting or the error."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        deliver(s, hello, how)

        def pump(step):
            while True:
                try:
                    return step()
                except ssl.SSLWantReadError:
                    if out := outgoing.read():
                        s.sendall(out)
                    data = s.recv(65536)
                    if not data:
                        raise ConnectionAbortedError("gateway closed the connection") from None
                    incoming.write(data)

        try:
            pump(tls.do_handshake)
            if out := outgoing.read():
                s.sendall(out)
            line = b""
            while not line.endswith(b"\n"):
                line += pump(lambda: tls.read(100))
            return line.decode().strip()
        except (ssl.SSLError, OSError) as e:
            return f"error: {e}"


DELIVERIES = ["whole", "records", "segments", "both"]


def test_fragmented_client_hello_routes_to_the_same_endpoint(gateway, upstreams, pki):
    app, wild = upstreams("app"), upstreams("wild")
    gw = gateway(
        {
            "limits": {"client_hello_timeout": "30s"},
            "endpoints": [
                endpoint("app", "tls://app.example.test", app),
                endpoint("wild", "tls://*.example.test", wild),
            ],
        }
    )
    ctx = ssl.create_default_context(cafile=str(pki.files.cert))
    results = {how: handshake_through(gw.port, ctx, "app.example.test", how) for how in DELIVERIES}
    assert results == dict.fromkeys(DELIVERIES, "hello from app")
    assert app.sni_seen == ["app.example.test"] * len(DELIVERIES)
    events = gw.wait_events(len(DELIVERIES))
    assert {e["object"]["endpoint"]["name"] for e in events} == {"app"}
    # The JA4 fingerprint is computed from the reassembled hello, so it is the same too.
    assert len({e["object"]["ja4_fingerprint"] for e in events}) == 1
    assert wild.accepted == 0


def test_fragmented_client_hello_enforces_the_same_client_certificate_check(gateway, upstreams, pki, tmp_path):
    from tests.support.certs import TestCA

    plain = upstreams("plain", tls=False)
    clients = TestCA(tmp_path / "clients", "client CA")
    others = TestCA(tmp_path / "others", "other CA")
    certs = {
        "good": clients.issue("alice", ["alice.clients.test"], client=True),
        "other_ca": others.issue("mallory", ["mallory.others.test"], client=True),
        "none": None,
    }
    policy = {
        "on_tcp_connect": [
            {
                "actions": [
                    {
                        "type": "terminate-tls",
                        "config": {
                            "server_certificate": str(pki.server.cert),
                            "server_private_key": str(pki.server.key),
                            "mutual_tls_certificate_authorities": [str(clients.files.cert)],
                        },
                    }
                ]
            }
        ]
    }
    gw = gateway(
        {
            "limits": {"client_hello_timeout": "30s"},
            "endpoints": [endpoint("m", "tls://app.example.test", plain, traffic_policy=policy)],
        }
    )
    results = {}
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        for label, cert in certs.items():
            for how in DELIVERIES:
                ctx = ssl.create_default_context(cafile=str(pki.files.cert))
                ctx.minimum_version = ctx.maximum_version = version
                if cert is not None:
                    ctx.load_cert_chain(cert.cert, cert.key)
                results[version.name, label, how] = handshake_through(gw.port, ctx, "app.example.test", how)
    for (version, label, how), outcome in results.items():
        # Every delivery gets exactly the outcome of the unfragmented hello...
        assert outcome == results[version, label, "whole"], (version, label, how, outcome)
    # ...and that outcome is the right one.
    for version in ("TLSv1_2", "TLSv1_3"):
        assert results[version, "good", "whole"] == "hello from plain"
        assert results[version, "other_ca", "whole"].startswith("error:")
        assert results[version, "none", "whole"].startswith("error:")
    assert "UNKNOWN_CA" in results["TLSv1_3", "other_ca", "whole"]
    assert "CERTIFICATE_REQUIRED" in results["TLSv1_3", "none", "whole"]
    events = gw.wait_events(len(results))
    accepted = [e for e in events if "client_certificate" in e["object"].get("tls", {})]
    assert len(accepted) == 2 * len(DELIVERIES)
    assert {e["object"]["tls"]["client_certificate"]["subject"]["common_name"] for e in accepted} == {
        "alice.clients.test"
    }
    assert plain.accepted == 2 * len(DELIVERIES)  # only verified clients reached the upstream


# -- HelloRetryRequest ---------------------------------------------------------------------

needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")


def s_client(port: int, sni: str, cafile: str, stdin: str) -> subprocess.CompletedProcess:
    """An OpenSSL client that offers a P-521 key share first, so X25519 needs an HRR."""
    return subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni, "-CAfile", cafile,
         "-groups", "P-521:X25519", "-tls1_3", "-trace", "-ign_eof"],
        input=stdin, capture_output=True, encoding="utf-8", errors="replace", timeout=30,
    )


def assert_hello_retry(trace: str) -> None:
    assert HRR_RANDOM[8:] in trace.upper().replace(" ", ""), "no HelloRetryRequest in the trace"
    assert trace.count("ClientHello, Length=") == 2, "expected exactly two ClientHellos"


@needs_openssl
def test_hello_retry_request_with_termination_completes(gateway, upstreams):
    plain = upstreams("plain", tls=False)
    gw = gateway(
        {"endpoints": [endpoint("t", "tls://t.example.test", plain, traffic_policy={"on_tcp_connect": [{"actions": [{"type": "terminate-tls"}]}]})]}
    )
    ca = _local_ca(gw)
    result = s_client(gw.port, "t.example.test", ca, "SOURCE 10 5\n")
    assert_hello_retry(result.stdout)
    assert "Verify return code: 0 (ok)" in result.stdout
    assert "hello from plain" in result.stdout
    assert "Server Temp Key: X25519" in result.stdout
    event = gw.wait_events(1)[0]["object"]
    assert event["close_reason"] == "eof"
    assert event["tls"]["version"] == "1.3"
    assert plain.accepted == 1


def _local_ca(gw) -> str:
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "tlsgate", "ca", "path", "-c", str(gw.config_path)],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


@needs_openssl
def test_hello_retry_request_in_passthrough_is_not_rerouted(gateway, pki, tmp_path):
    """The second ClientHello travels inside the relayed connection to the same upstream."""
    port = free_port()
    server = subprocess.Popen(
        [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(pki.server.cert),
         "-key", str(pki.server.key), "-groups", "X25519", "-naccept", "1", "-www", "-trace"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, encoding="utf-8", errors="replace",
    )
    try:
        for line in server.stdout:  # s_server prints ACCEPT once it listens
            if line.strip() == "ACCEPT":
                break
        gw = gateway({"endpoints": [endpoint("hrr", "tls://app.example.test", f"127.0.0.1:{port}")]})
        result = s_client(gw.port, "app.example.test", str(pki.files.cert), "GET / HTTP/1.0\r\n\r\n")
        assert_hello_retry(result.stdout)
        assert "HTTP/1.0 200 ok" in result.stdout
        server_trace, _ = server.communicate(timeout=15)  # -naccept 1: it served one connection
        assert server.returncode == 0
        assert server_trace.count("ClientHello, Length=") == 2  # both hellos on that one connection
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    events = gw.wait_events(1)
    assert len(events) == 1
    assert events[0]["object"]["endpoint"]["name"] == "hrr"
    assert events[0]["object"]["close_reason"] == "eof"



# -- a ClientHello in thousands of records ------------------------------------------------------


def _hello_of(size: int) -> bytes:
    """The handshake message of a real ClientHello grown to ``size`` bytes with its padding."""
    head, extensions = split_hello(client_hello_bytes("app.example.test"))
    others = [(t, d) for t, d in extensions if t != 0x0015]
    message_without = 4 + len(head) + 2 + sum(4 + len(d) for _, d in others)
    padded = others + [(0x0015, b"\x00" * (size - message_without - 4))]
    hello = join_hello(head, padded)
    message = b"".join(hello[i + 5 : i + 5 + (1 << 14)] for i in range(0, len(hello), 5 + (1 << 14)))
    assert len(message) == size
    return message


def _worker_cpu(pids) -> float:
    import psutil

    return sum(sum(psutil.Process(p).cpu_times()[:2]) for p in pids)


def test_a_hello_in_thousands_of_records_routes(gateway, upstreams, pki):
    """A 60 KB ClientHello as 1-byte records (360 KB, legal) whose last records trickle in.

    It must route and relay like any other. That the reader's work stays linear in the
    bytes (no re-walk per read, which one slow client could aim at a worker) is proven
    deterministically in tests/unit/test_clienthello_reader.py; the workers' CPU for this
    connection is only recorded as a figure for docs/reliability.md.
    """
    app = upstreams("app")
    gw = gateway({"limits": {"client_hello_timeout": "60s"}, "endpoints": [endpoint("app", "tls://app.example.test", app)]})
    pids = gw.worker_pids()
    wire = records(_hello_of(60_000), 1)
    tail_records = 400
    head_part, tail = wire[: -6 * tail_records], wire[-6 * tail_records :]
    rss_before = gateway_rss(gw)
    cpu_before = _worker_cpu(pids)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(head_part)
        for i in range(0, len(tail), 6):
            s.send(tail[i : i + 6])
            time.sleep(0.005)
        # The hello is complete and well formed: it is relayed, and the upstream's TLS stack
        # answers with its ServerHello (a handshake record).
        s.settimeout(30)
        assert s.recv(1)[:1] == b"\x16"
    event = gw.wait_events(1)[0]["object"]
    assert event["endpoint"]["name"] == "app"
    assert event["conn"]["bytes_in"] >= len(wire)
    cpu = _worker_cpu(pids) - cpu_before
    record_figures(
        "many_records",
        title="60 KB ClientHello as 60,000 1-byte records, the last 400 trickled",
        attempted=1,
        succeeded=1,
        failed=0,
        rss_before=rss_before,
        rss_after=gateway_rss(gw),
        notes=f"routed and relayed; workers' CPU for it: {cpu * 1000:.0f} ms",
    )
