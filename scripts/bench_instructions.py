"""Instructions per connection in a tlsgate worker, counted by valgrind's callgrind.

A developer tool, not a test. On a small shared machine the gateway's CPU time per
connection moves by ±8% from one run of ``scripts/bench`` to the next, so a change worth
2-3% needs many runs to show. Instruction counts do not move: this starts
``tlsgate start`` (one worker) under callgrind, replays N1 connections through it one at a
time, stops it, does the same with N2, and reports ``(I(N2) - I(N1)) / (N2 - N1)`` for the
worker and the master, split by shared object. Start-up and shutdown cancel out. Two runs
of the same tree agree to within about 0.5%.

Instructions are not time: inside a busy worker, between the kernel's and the other
processes' work, Python runs at a fraction of its warm speed, and code that touches fewer
objects gains more than its instruction count says. Confirm a change with ``scripts/bench``;
use this to see it at all, and to find where the instructions go (``--keep`` leaves the
callgrind files for ``callgrind_annotate``).

Cases:

* ``passthrough``: the client sends a real ClientHello (from Python's ``ssl``), then both
  sides exchange messages of a TLS 1.3 handshake's sizes (the bytes are not TLS; the
  gateway does not look past the hello) and the upstream closes first, as in case 1 of
  ``scripts/bench``.
* ``terminate``: a real TLS 1.3 handshake with Python's ``ssl`` against an endpoint whose
  policy terminates TLS (a fresh ECDSA P-256 certificate), one request, one answer from a
  plain upstream, as in case 3a.

The events the worker sends every 0.2 s cost more per connection here than under load
(fewer connections share each batch), which inflates the master's figure most.

Run: ``python scripts/bench_instructions.py [--case passthrough|terminate]
[--connections 200,700] [--tlsgate DIR] [--keep DIR]``. Needs valgrind
(``apt-get install valgrind``); about a minute per case.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, when run from elsewhere

from benchlib.selfsigned import write_self_signed  # noqa: E402

HOST = "app.bench.test"
# Byte counts of a TLS 1.3 exchange as scripts/bench's wrk and nginx make it (strace):
# server flight, client Finished, tickets, request, response, close_notify.
TO_CLIENT = (633, 51, 239)
TO_UPSTREAM = (93, 99, 31)
REQUEST = b"GET /small HTTP/1.1\r\nHost: app.bench.test\r\nConnection: close\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n" + b"x" * 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=("passthrough", "terminate"), default="passthrough")
    parser.add_argument("--connections", default="200,700", help="N1,N2 (default 200,700)")
    parser.add_argument("--tlsgate", type=Path, default=ROOT, help="checkout to measure")
    parser.add_argument("--keep", type=Path, help="copy the callgrind files here")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        print("bench_instructions: needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    n1, n2 = (int(n) for n in args.connections.split(","))
    if not 0 < n1 < n2:
        parser.error("--connections wants N1,N2 with 0 < N1 < N2")
    with tempfile.TemporaryDirectory(prefix="tlsgate-instr-") as tmp:
        work = Path(tmp)
        totals = {n: run_once(args.case, args.tlsgate.resolve(), work, n) for n in (n1, n2)}
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for path in work.glob("callgrind.*"):
                shutil.copy(path, args.keep / path.name)
    report(args, totals, n1, n2)
    return 0


def run_once(case: str, tree: Path, work: Path, connections: int) -> dict[str, Counter]:
    """Run the gateway under callgrind for ``connections`` replays; Ir by role and object."""
    gateway_port, upstream_port = free_port(), free_port()
    config = work / "tlsgate.toml"
    config.write_text(gateway_config(case, work, gateway_port, upstream_port))
    out = work / f"callgrind.{connections}.%p"
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, "-m", "tlsgate", "start", "-c", str(config),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree)}
    log = (work / "gateway.log").open("w")
    gateway = subprocess.Popen(command, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(gateway_port, gateway)
        upstream = Upstream(upstream_port, case)
        replay(case, gateway_port, 20)  # the first connections load what is loaded lazily
        replay(case, gateway_port, connections)
        upstream.close()
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=120)
        log.close()
    totals: dict[str, Counter] = {}
    for path in work.glob(f"callgrind.{connections}.*"):
        role = "master" if path.name.endswith(f".{gateway.pid}") else "worker"
        totals[role] = instructions_by_object(path)
    return totals


def gateway_config(case: str, work: Path, port: int, upstream_port: int) -> str:
    policy = ""
    if case == "terminate":
        cert, key = work / "cert.pem", work / "key.pem"
        if not key.exists():
            write_self_signed(cert, key, HOST, [HOST])
        policy = (
            "[endpoints.traffic_policy]\n"
            'on_tcp_connect = [{ actions = [{ type = "terminate-tls", config = '
            f'{{ server_certificate = "{cert}", server_private_key = "{key}" }} }}] }}]\n'
        )
    return (
        f'[gateway]\nlisten = ["127.0.0.1:{port}"]\nworkers = 1\n'
        f'state_dir = "{work / "state"}"\ndrain_timeout = "1s"\n'
        "[tls]\nsession_resumption = false\n"
        f'[[endpoints]]\nname = "app"\nurl = "tls://{HOST}"\n'
        f'upstream.url = "127.0.0.1:{upstream_port}"\n{policy}'
    )


class Upstream:
    """A plain TCP upstream on a thread: the passthrough exchange, or one HTTP answer."""

    def __init__(self, port: int, case: str):
        self.listener = socket.create_server(("127.0.0.1", port))
        self.case = case
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                try:
                    self._exchange(conn)
                except (OSError, EOFError):
                    pass

    def _exchange(self, conn: socket.socket) -> None:
        if self.case == "passthrough":
            recv_until_hello(conn)
            for answer, question in zip(TO_CLIENT, (*TO_UPSTREAM[:2], None), strict=True):
                conn.sendall(b"\x17" * answer)
                if question is not None:
                    recv_exact(conn, question)
        else:
            got = b""
            while b"\r\n\r\n" not in got:
                data = conn.recv(4096)
                if not data:
                    raise EOFError
                got += data
            conn.sendall(ANSWER)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass

    def close(self) -> None:
        self.listener.close()


def replay(case: str, port: int, connections: int) -> None:
    """``connections`` connections, one after the other; raises on the first failure."""
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    client_context.set_alpn_protocols(["http/1.1"])
    hello = client_hello(client_context)
    for _ in range(connections):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            if case == "passthrough":
                sock.sendall(hello)
                for answer, question in zip(TO_CLIENT, TO_UPSTREAM, strict=True):
                    recv_exact(sock, answer)
                    sock.sendall(b"\x17" * question)
            else:
                with client_context.wrap_socket(sock, server_hostname=HOST) as tls:
                    tls.sendall(REQUEST)
                    got = b""
                    while data := tls.recv(4096):
                        got += data
                    if not got.endswith(b"x" * 100):
                        raise RuntimeError(f"unexpected answer: {got[:80]!r}")


def client_hello(context: ssl.SSLContext) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=HOST)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def recv_until_hello(conn: socket.socket) -> None:
    header = recv_exact(conn, 5)
    recv_exact(conn, int.from_bytes(header[3:5], "big"))


def recv_exact(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def instructions_by_object(path: Path) -> Counter:
    """Self instructions per shared object, from ``callgrind_annotate``."""
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--inclusive=no", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    totals: Counter = Counter()
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
        if match is None or "PROGRAM TOTALS" in line:
            continue
        where = re.search(r"\[([^\]]*)\]\s*$", match.group(2))
        name = Path(where.group(1)).name if where else "?"
        totals[name] += int(match.group(1).replace(",", ""))
    return totals


def report(args, totals: dict[int, dict[str, Counter]], n1: int, n2: int) -> None:
    print(f"# instructions per connection ({args.case}; {args.tlsgate}; N = {n1}, {n2})")
    for role in ("worker", "master"):
        first, second = totals[n1].get(role, Counter()), totals[n2].get(role, Counter())
        per_object = {k: (second[k] - first[k]) / (n2 - n1) for k in set(first) | set(second)}
        print(f"{role}: {sum(per_object.values()):,.0f}")
        for name, value in sorted(per_object.items(), key=lambda kv: -kv[1])[:6]:
            if value >= 500:
                print(f"    {value:>12,.0f}  {name}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the gateway did not listen on {port} within {timeout:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
