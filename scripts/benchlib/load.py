"""Load generators: wrk for rates and throughput, small Python clients for the rest.

wrk takes SNI and the Host header from its URL's host, and resolves that host
before anything else. The Lua script written by `write_wrk_script` replaces
``wrk.resolve`` so that ``https://app.bench.test:PORT`` connects to 127.0.0.1
while still sending ``app.bench.test`` as SNI; its ``done`` hook prints the exact
request, byte and error counts and latency percentiles as one JSON line.

`fetch` makes one HTTPS request (readiness checks); `interleaved_connection_latencies`
times whole new connections (TCP connect, full handshake, one request, the response),
which wrk's latency does not include, to several targets in turn.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib.system import tool_path

WRK_SCRIPT = r"""-- Written by scripts/bench. Connect to 127.0.0.1 whatever the URL's host: the host
-- stays the SNI and the Host header, and no resolver or /etc/hosts entry is needed.
function wrk.resolve(host, service)
   wrk.addrs = wrk.lookup("127.0.0.1", service)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH {"duration_us": %d, "requests": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
      '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
      summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write,
      e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def write_wrk_script(directory: Path) -> Path:
    path = directory / "bench.lua"
    path.write_text(WRK_SCRIPT)
    return path


@dataclass(frozen=True)
class WrkResult:
    seconds: float
    requests: int
    bytes: int
    errors: int
    p50_us: float
    p99_us: float


class LoadError(Exception):
    pass


def run_wrk(
    script: Path,
    host: str,
    port: int,
    path: str,
    *,
    seconds: int,
    threads: int,
    connections: int,
    close: bool,
    timeout: int = 5,
) -> WrkResult:
    argv = [
        tool_path("wrk"), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout}s",
        "-s", str(script), f"https://{host}:{port}{path}",
    ]  # fmt: skip
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + timeout + 30
        )
    except subprocess.TimeoutExpired as e:
        raise LoadError(f"wrk did not finish: {' '.join(argv)}") from e
    for line in result.stdout.splitlines():
        if line.startswith("BENCH "):
            data = json.loads(line[6:])
            errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
            return WrkResult(
                data["duration_us"] / 1e6,
                data["requests"],
                data["bytes"],
                errors,
                data["p50_us"],
                data["p99_us"],
            )
    raise LoadError(
        f"wrk printed no result ({result.returncode}): {result.stdout[-500:]} {result.stderr[-500:]}"
    )


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the bench's own self-signed certificate
    return ctx


def fetch(port: int, host: str, path: str, timeout: float = 5.0) -> bytes:
    """One HTTPS request on a new connection; returns the whole response (raises OSError)."""
    ctx = client_context()
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(request)
            return _read_response(tls)


def _read_response(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} bytes of headers")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = tls.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(body)} of {length} body bytes")
        body += chunk
    return head + b"\r\n\r\n" + body


def wait_ready(port: int, host: str, path: str, timeout: float) -> str | None:
    """Poll with real requests until one returns 200; None when ready, else the last error."""
    deadline = time.monotonic() + timeout
    error = "not tried"
    while time.monotonic() < deadline:
        try:
            response = fetch(port, host, path, timeout=2.0)
            if response.startswith(b"HTTP/1.1 200"):
                return None
            error = response.split(b"\r\n", 1)[0].decode(errors="replace")
        except (OSError, ssl.SSLError) as e:
            error = f"{type(e).__name__}: {e}"
        time.sleep(0.2)
    return error


def interleaved_connection_latencies(
    ports: dict[str, int], host: str, path: str, count: int, budget: float
) -> dict[str, list[float]]:
    """Seconds per whole new connection to each target, one connection to each in turn
    (in a rotating order), so that every target's samples see the same moments of a busy
    machine: the added latency is a difference of two medians, and measuring the targets
    one after the other made it swing with whatever else the machine was doing."""
    ctx = client_context()
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    names = list(ports)
    samples: dict[str, list[float]] = {name: [] for name in names}
    deadline = time.monotonic() + budget
    for round_number in range(count):
        if time.monotonic() >= deadline:
            break
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            with socket.create_connection(("127.0.0.1", ports[name]), timeout=5) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with ctx.wrap_socket(raw, server_hostname=host) as tls:
                    tls.sendall(request)
                    _read_response(tls)
                    samples[name].append(time.perf_counter() - start)
    return samples
