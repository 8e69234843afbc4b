"""Micro-benchmarks of tlsgate's per-connection CPU in the TLS-termination path.

A developer tool (not a test): times in-process, per operation, what a worker spends on
one terminated connection, so a change to the handshake wrapper, the ClientHello
parser, JA4, the policy engine or event building can be measured on its own.

(a) ClientHello parse + JA4 on the captured hellos of tests/data/clienthello
(b) ``build_closed_event`` + ``encode_event`` on a filled ConnectionRecord
(c) a full server-side handshake (TLS 1.3, ECDSA P-256, no resumption) on the context
    tlsgate builds for a terminate-tls endpoint, against Python's ``ssl`` client in a
    process over loopback TCP, with one request/answer and close_notify: through
    `GreenTLSConnection`, through `Terminator.server_connection` (the worker's call), and the
    floor: a bare pyOpenSSL ``SSL.Connection`` on the same context over memory BIOs
    (what OpenSSL itself costs, no sockets). For the socket variants the figure is the
    CPU time of the gevent thread (``time.thread_time``, user + sys).
(d) policy evaluation of a terminate-tls-only policy: ``evaluate`` alone, and
    `PolicyFlow.steps` (both evaluations around a stubbed handshake).

Run: ``python scripts/bench_handshake.py [--quick]``. Prints µs per operation (median
of several runs).
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
sys.path.insert(0, str(ROOT / "scripts"))  # benchlib

import gevent  # noqa: E402
import gevent.socket  # noqa: E402
from benchlib.selfsigned import write_self_signed  # noqa: E402
from OpenSSL import SSL  # noqa: E402

from tlsgate.config.load import load_config  # noqa: E402
from tlsgate.events import ConnectionRecord, build_closed_event, encode_event  # noqa: E402
from tlsgate.policy.engine import evaluate  # noqa: E402
from tlsgate.policy.vars import build_conn_vars  # noqa: E402
from tlsgate.proto.clienthello import ClientHelloReader  # noqa: E402
from tlsgate.proto.ja4 import ja4_fingerprint  # noqa: E402
from tlsgate.tls.gsocket import GreenTLSConnection  # noqa: E402
from tlsgate.worker.policyflow import PolicyFlow  # noqa: E402
from tlsgate.worker.routing import build_routing  # noqa: E402

CAPTURE_DIR = ROOT / "tests" / "data" / "clienthello"
HOST = "term.bench.test"
RUNS = 5


def median_us(fn, iterations: int, runs: int = RUNS) -> float:
    """Median over ``runs`` of the µs per call of ``fn`` called ``iterations`` times."""
    results = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(iterations):
            fn()
        results.append((time.perf_counter() - started) / iterations * 1e6)
    return statistics.median(results)


# -- (a) ClientHello parse + JA4 ------------------------------------------------------


def load_captures() -> dict[str, bytes]:
    captures = {}
    for path in sorted(CAPTURE_DIR.glob("*.hex")):
        lines = path.read_text().splitlines()
        captures[path.stem] = bytes.fromhex("".join(ln for ln in lines if not ln.startswith("#")))
    return captures


def bench_parse(iterations: int) -> None:
    print("(a) ClientHello parse + JA4 (one feed of the whole hello)")
    totals = []
    for name, data in load_captures().items():

        def parse(data=data):
            return ClientHelloReader(65536).feed(data)

        def parse_ja4(data=data):
            return ja4_fingerprint(ClientHelloReader(65536).feed(data))

        hello = parse()
        ja4_only = median_us(lambda hello=hello: ja4_fingerprint(hello), iterations)
        both = median_us(parse_ja4, iterations)
        totals.append(both)
        print(
            f"    {name:28s} parse {median_us(parse, iterations):6.2f}  ja4 {ja4_only:6.2f}"
            f"  parse+ja4 {both:6.2f} µs"
        )
    print(f"    mean parse+ja4: {statistics.mean(totals):.2f} µs")


# -- (b) events ---------------------------------------------------------------------------


def filled_record() -> ConnectionRecord:
    now = time.time()
    record = ConnectionRecord(
        conn_id="conn_0123456789abcdef",
        start_ts=now,
        client_ip="127.0.0.1",
        client_port=51234,
        server_ip="127.0.0.1",
        server_port=8443,
        server_name=HOST,
        ja4_fingerprint="t13d1516h2_8daaf6152771_e5627efa2ab1",
        endpoint_name="term",
        endpoint_url=f"tls://{HOST}",
        upstream_addr="127.0.0.1:8080",
        termination="gateway",
        bytes_in=517,
        bytes_out=1820,
        close_reason="eof",
        end_ts=now + 0.0123,
    )
    record.extra["tls"] = {
        "version": "1.3",
        "cipher_suite": "TLS_AES_256_GCM_SHA384",
        "negotiated_alpn": "",
    }
    return record


def bench_events(iterations: int) -> None:
    record = filled_record()
    build = median_us(lambda: build_closed_event(record), iterations)
    both = median_us(lambda: encode_event(build_closed_event(record)), iterations)
    print("(b) events")
    print(f"    build_closed_event {build:.2f} µs; + encode_event {both:.2f} µs")


# -- a gateway config with one terminate-tls endpoint ------------------------------------


def write_certificate(directory: Path) -> tuple[Path, Path]:
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    write_self_signed(cert_path, key_path, HOST, ["*.bench.test"])
    return cert_path, key_path


def gateway(directory: Path):
    """(routing, endpoint) of a config like scripts/bench's terminate-tls endpoint."""
    cert, key = write_certificate(directory)
    conf = directory / "tlsgate.toml"
    conf.write_text(
        f"""[gateway]
listen = ["127.0.0.1:8443"]
state_dir = "{directory / "state"}"

[tls]
session_resumption = false

[[endpoints]]
name = "term"
url = "tls://{HOST}"
upstream.url = "127.0.0.1:8080"
[endpoints.traffic_policy]
on_tcp_connect = [{{ actions = [{{ type = "terminate-tls", config = {{ server_certificate = "{cert}", server_private_key = "{key}" }} }}] }}]
"""
    )
    config, _warnings = load_config(conf)
    routing = build_routing(config)
    return routing, config.endpoints[0]


def terminate_decision(routing, endpoint):
    conn_vars = first_conn_vars(routing, endpoint)
    decision = evaluate(endpoint.traffic_policy, conn_vars, dt.datetime.now(dt.UTC))
    assert decision.outcome == "terminate_tls", decision
    return decision


def first_conn_vars(routing, endpoint):
    return build_conn_vars(
        client_ip="127.0.0.1",
        client_port=51234,
        server_ip="127.0.0.1",
        server_port=8443,
        start=dt.datetime.now(dt.UTC),
        endpoint=routing.endpoint_vars[endpoint.name],
        sni=HOST,
        tls_version="1.3",
        ja4_fingerprint="t13d1516h2_8daaf6152771_e5627efa2ab1",
    )


# -- (c) handshakes ---------------------------------------------------------------------


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def floor_us(server_ctx: SSL.Context, iterations: int) -> float:
    """Server-side OpenSSL calls only, memory BIOs both ways, the client not counted."""
    client_ctx = client_context()
    results = []
    for _ in range(RUNS):
        spent = 0.0
        for _ in range(iterations):
            c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            client = client_ctx.wrap_bio(c_in, c_out, server_hostname=HOST)
            try:
                client.do_handshake()
            except ssl.SSLWantReadError:
                pass
            hello = c_out.read()
            t0 = time.perf_counter()
            server = SSL.Connection(server_ctx, None)
            server.set_accept_state()
            server.bio_write(hello)
            try:
                server.do_handshake()
            except SSL.WantReadError:
                pass
            flight = server.bio_read(65536)
            spent += time.perf_counter() - t0
            c_in.write(flight)
            client.do_handshake()
            client.write(b"ping")
            finished = c_out.read()
            t0 = time.perf_counter()
            server.bio_write(finished)
            server.do_handshake()
            request = server.recv(4)
            server.sendall(b"pong")
            server.shutdown()
            answer = server.bio_read(65536)
            spent += time.perf_counter() - t0
            assert request == b"ping"
            c_in.write(answer)
            assert client.read(4) == b"pong"
        results.append(spent / iterations * 1e6)
    return statistics.median(results)


CLIENT = """
import socket, ssl, sys
port, count, completes = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
for _ in range(count):
    with socket.create_connection(("127.0.0.1", port)) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=sys.argv[4]) as tls:
                tls.sendall(b"ping")
                assert tls.recv(4) == b"pong"
        except (ssl.SSLError, OSError):
            if completes:
                raise
"""


def socket_us(serve_one, iterations: int, completes: bool = True) -> float:
    """CPU of this (gevent) process per connection; Python's ssl client runs in another."""
    listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    results = []
    try:
        for _ in range(RUNS):
            argv = [str(port), str(iterations), "1" if completes else "0", HOST]
            client = subprocess.Popen([sys.executable, "-c", CLIENT, *argv])
            spent = 0.0
            for _ in range(iterations):
                sock, _ = listener.accept()
                t0 = time.thread_time()
                serve_one(sock)
                spent += time.thread_time() - t0
            if client.wait() != 0:
                raise RuntimeError("the benchmark client failed")
            results.append(spent / iterations * 1e6)
    finally:
        listener.close()
    return statistics.median(results)


def read_hello(sock) -> bytes:
    reader = ClientHelloReader(65536)
    while True:
        hello = reader.feed(sock.recv(65536))
        if hello is not None:
            return bytes(reader.buffer)


def answer(tls) -> None:
    assert tls.recv(4) == b"ping"
    tls.sendall(b"pong")
    tls.shutdown()


def bench_handshakes(routing, endpoint, iterations: int) -> None:
    decision = terminate_decision(routing, endpoint).terminate_tls
    terminator = routing.terminator
    base_dir = endpoint.policy_base_dir
    pair = terminator._endpoint_pair(decision, base_dir)
    from tlsgate.tls.prewarm import server_context

    ctx = server_context(pair, decision, None, terminator.session_resumption)

    def green(sock):
        hello = read_hello(sock)
        tls = GreenTLSConnection.server(sock, ctx)
        tls.server_handshake(hello, 10.0)
        answer(tls)
        tls.close()

    def through_terminator(sock):
        hello = read_hello(sock)
        tls = terminator.server_connection(sock, decision, HOST, base_dir)
        tls.server_handshake(hello, 10.0)
        answer(tls)
        tls.close()

    def hello_only(sock):
        read_hello(sock)
        sock.close()

    print("(c) server-side handshake, TLS 1.3, ECDSA P-256, no resumption (+ ping/pong, close)")
    floor = floor_us(ctx, iterations)
    print(f"    floor: bare pyOpenSSL, memory BIOs        {floor:7.1f} µs")
    one = socket_us(green, iterations)
    print(f"    GreenTLSConnection over loopback TCP      {one:7.1f} µs")
    via = socket_us(through_terminator, iterations)
    print(f"    Terminator.server_connection + handshake  {via:7.1f} µs")
    # The socket variants include reading the hello; its cost alone, for reference:
    raw = socket_us(hello_only, iterations, completes=False)
    print(f"    (of which accept-side hello read + close  {raw:7.1f} µs)")


# -- (d) policy -------------------------------------------------------------------------


class _StubTls:
    version = "1.3"
    cipher_suite = "TLS_AES_256_GCM_SHA384"
    alpn = None

    def peer_certificate(self):
        return None


def _stub_record() -> ConnectionRecord:
    record = ConnectionRecord("c1", time.time(), "127.0.0.1", 51234, "127.0.0.1", 8443)
    record.server_name = HOST
    record.ja4_fingerprint = "t13d1516h2_8daaf6152771_e5627efa2ab1"
    return record


def run_flow(routing, endpoint):
    """`PolicyFlow.steps` to the end, each terminate step answered with a stub TLS."""
    steps = PolicyFlow(routing, _stub_record(), _StubHello(), endpoint).steps()
    try:
        steps.send(None)
        while True:
            steps.send(_StubTls())
    except StopIteration as done:
        return done.value


class _StubHello:
    highest_version = "1.3"


def bench_policy(routing, endpoint, iterations: int) -> None:
    policy = endpoint.traffic_policy
    now = dt.datetime.now(dt.UTC)

    def first():
        return evaluate(policy, first_conn_vars(routing, endpoint), now)

    def flow():
        return run_flow(routing, endpoint)

    assert flow() is endpoint
    print("(d) policy, terminate-tls only")
    print(f"    build_conn_vars + evaluate (1st pass)     {median_us(first, iterations):7.2f} µs")
    print(f"    PolicyFlow.steps (both passes, stub TLS)  {median_us(flow, iterations):7.2f} µs")


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    bench_parse(2000 if quick else 20000)
    bench_events(2000 if quick else 20000)
    with tempfile.TemporaryDirectory() as tmp:
        routing, endpoint = gateway(Path(tmp))
        bench_handshakes(routing, endpoint, 100 if quick else 400)
        bench_policy(routing, endpoint, 2000 if quick else 10000)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
