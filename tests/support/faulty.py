"""Upstreams that misbehave on purpose, and the figures the reliability tests report.

Used by tests/integration/test_faults.py (and test_adversarial.py, test_integrity.py
for `record_figures`). Every server listens on loopback in a daemon thread:

- `RefusingUpstream`: a bound port nobody listens on: connect() gets ECONNREFUSED.
- `ResettingUpstream`: accepts, then closes with SO_LINGER 0 (the peer gets an RST).
- `StallingUpstream`: accepts and holds the connection, never reading or writing.
- `FullBacklogUpstream`: listens with a full accept queue it never drains, so a new
  connect()'s SYN is dropped and the dial times out (the loopback stand-in for a host
  that does not answer).
- `HalfwayUpstream`: once the client's first bytes arrive, sends the first ``cut`` bytes
  of a download, then ends it with a FIN (``mode="fin"``) or an RST (``mode="rst"``).

`record_figures` appends one JSON line per scenario to the file named by
``$TLSGATE_RELIABILITY_FIGURES`` (scripts/reliability sets it and turns the lines into
the table in docs/reliability.md); without the variable it does nothing, so the tests
run the same in CI. `gateway_rss` measures the gateway's memory for those figures.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import threading
import time

from tests.support.upstream import pattern_chunks, stop_listening

FIGURES_ENV = "TLSGATE_RELIABILITY_FIGURES"


def _listener(backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


def _address(sock: socket.socket) -> str:
    return f"127.0.0.1:{sock.getsockname()[1]}"


def reset(conn: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel discards unsent data and sends an RST."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class _AcceptingUpstream:
    """Accepts in a daemon thread and hands every connection to `handle` in its own thread."""

    def __init__(self, backlog: int = 128):
        self.sock = _listener(backlog)
        self.address = _address(self.sock)
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._guarded, args=(conn,), daemon=True).start()

    def _guarded(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except OSError:
            pass  # the gateway closed or reset its side: that is what these tests provoke

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True
        stop_listening(self.sock)
        for conn in self.conns:
            conn.close()


class RefusingUpstream:
    """Holds a port without listening on it, so connections to it are refused (and no one
    else can take the port while the test runs)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = _address(self.sock)

    def close(self) -> None:
        self.sock.close()


class ResettingUpstream(_AcceptingUpstream):
    """Accepts, optionally waits for the first bytes, then resets the connection."""

    def __init__(self, read_first: bool = True):
        self.read_first = read_first
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        if self.read_first:
            conn.settimeout(10)
            conn.recv(65536)
        reset(conn)


class StallingUpstream(_AcceptingUpstream):
    """Accepts and then does nothing at all: no read, no write, no close (until `close()`)."""

    def handle(self, conn: socket.socket) -> None:
        pass


class FullBacklogUpstream:
    """A listener whose accept queue is full and never drained: the kernel drops new SYNs.

    With ``listen(0)`` Linux queues one connection; `fill()` makes it (and checks that
    a second connect now hangs), so the gateway's dial gets no answer at all.
    """

    def __init__(self):
        self.sock = _listener(0)
        self.address = _address(self.sock)
        self.fillers: list[socket.socket] = []
        self.fill()

    def fill(self) -> None:
        port = self.sock.getsockname()[1]
        for _ in range(8):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.setblocking(False)
            probe.connect_ex(("127.0.0.1", port))
            self.fillers.append(probe)
            # Connected means the queue took it; still connecting means the SYN was dropped.
            _, writable, _ = select.select([], [probe], [], 0.3)
            if not writable:
                return
        raise AssertionError("the accept queue never filled up")

    def close(self) -> None:
        for probe in self.fillers:
            probe.close()
        self.sock.close()


class HalfwayUpstream(_AcceptingUpstream):
    """Starts a download of ``total`` pattern bytes (seed 7) and ends it after ``cut`` bytes.

    ``mode="fin"``: an orderly TCP close (FIN) after the cut, so the relay sees EOF.
    ``mode="rst"``: SO_LINGER 0, so the relay sees a reset.
    """

    def __init__(self, total: int, cut: int, mode: str):
        assert mode in ("fin", "rst")
        self.total, self.cut, self.mode = total, cut, mode
        self.sent: list[int] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        # Wait for the request (the relayed ClientHello, or a line behind termination), so the
        # cut happens mid-download in the relay and not while the gateway is still dialling.
        if not conn.recv(65536):
            return
        sent = 0
        for piece in pattern_chunks(self.total, seed=7):
            piece = piece[: self.cut - sent]
            if not piece:
                break
            conn.sendall(piece)
            sent += len(piece)
        self.sent.append(sent)
        if self.mode == "rst":
            reset(conn)
            return
        conn.shutdown(socket.SHUT_WR)
        # Read what the client sent until it closes too, so our close never turns into an RST.
        while conn.recv(65536):
            pass
        conn.close()


def record_figures(scenario: str, **figures) -> None:
    """Append one scenario's figures for scripts/reliability (no-op outside it)."""
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    line = json.dumps({"scenario": scenario, "recorded": time.time(), **figures})
    with open(path, "a") as f:
        f.write(line + "\n")


def gateway_rss(gw) -> int:
    """Resident memory of the gateway's master and workers together, in bytes."""
    import psutil

    try:
        master = psutil.Process(gw.proc.pid)
        procs = [master, *master.children()]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total
