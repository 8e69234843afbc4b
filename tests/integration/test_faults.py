"""Faults around a real gateway: upstreams that refuse, reset, stall or quit half-way, and
workers or the master killed with SIGKILL under load.

Upstream faults: the client's connection must end (no hang) with the right close
reason in the event, and a pool must fail over where a dial failed. Process faults:
only the killed worker's connections are lost, a new worker takes over, no connection
attempt is refused, and a killed master leaves no worker holding the port.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests.support.faulty import (
    FullBacklogUpstream,
    HalfwayUpstream,
    RefusingUpstream,
    ResettingUpstream,
    StallingUpstream,
    gateway_rss,
    record_figures,
)
from tests.support.gateway import greeting, read_line, tls_connect, wait_for
from tests.support.upstream import client_hello_bytes, pattern_chunks

pytestmark = pytest.mark.integration

TERMINATE = {"on_tcp_connect": [{"actions": [{"type": "terminate-tls"}]}]}


@pytest.fixture
def faulty():
    started = []

    def make(cls, *args, **kwargs):
        upstream = cls(*args, **kwargs)
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        upstream.close()


def endpoint(name, url, upstream, **extra):
    address = upstream if isinstance(upstream, str) else upstream.address
    return {"name": name, "url": url, "upstream": {"url": address}, **extra}


def passthrough_client(port: int, sni: str, timeout: float = 20) -> tuple[bytes, str, float]:
    """Send a real ClientHello, then read until the gateway ends the connection.

    Returns (bytes received, "eof" or "reset", seconds from the hello to the end).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        start = time.monotonic()
        s.sendall(client_hello_bytes(sni))
        received = b""
        try:
            while data := s.recv(1 << 20):
                received += data
            how = "eof"
        except ConnectionResetError:
            how = "reset"
        return received, how, time.monotonic() - start


def single_event(gw) -> dict:
    events = gw.wait_events(1)
    assert len(events) == 1, events
    return events[0]["object"]


# -- upstream faults ------------------------------------------------------------------------


def test_refusing_upstream_closes_the_client_with_upstream_connect_failed(gateway, faulty):
    refusing = faulty(RefusingUpstream)
    gw = gateway({"endpoints": [endpoint("r", "tls://r.example.test", refusing)]})
    rss_before = gateway_rss(gw)
    received, how, took = passthrough_client(gw.port, "r.example.test")
    assert (received, how) == (b"", "eof")  # no alert and no payload: the upstream never spoke
    event = single_event(gw)
    assert event["close_reason"] == "upstream_connect_failed"
    assert "ECONNREFUSED" in event["upstream_error"]
    record_figures("upstream_refuses", title="Upstream refuses", attempted=1, succeeded=0, failed=1,
                   close_s=took, rss_before=rss_before, rss_after=gateway_rss(gw),
                   notes="client closed without payload; upstream_connect_failed")


@pytest.mark.parametrize("read_first", [True, False], ids=["after-hello", "at-once"])
def test_upstream_reset_after_accept_is_upstream_reset(gateway, faulty, read_first):
    resetting = faulty(ResettingUpstream, read_first=read_first)
    gw = gateway({"endpoints": [endpoint("x", "tls://x.example.test", resetting)]})
    rss_before = gateway_rss(gw)
    received, _, took = passthrough_client(gw.port, "x.example.test")
    assert received == b""
    assert resetting.accepted == 1
    assert single_event(gw)["close_reason"] == "upstream_reset"
    if read_first:
        record_figures("upstream_resets", title="Upstream accepts, then resets", attempted=1, succeeded=0,
                       failed=1, close_s=took, rss_before=rss_before, rss_after=gateway_rss(gw), notes="upstream_reset")


def test_stalled_upstream_with_silent_client_is_closed_as_idle(gateway, faulty):
    stalling = faulty(StallingUpstream)
    gw = gateway(
        {
            "limits": {"client_idle_timeout": "1s", "server_idle_timeout": "1s"},
            "endpoints": [endpoint("s", "tls://s.example.test", stalling)],
        }
    )
    rss_before = gateway_rss(gw)
    received, how, took = passthrough_client(gw.port, "s.example.test")
    assert (received, how) == (b"", "eof")
    assert single_event(gw)["close_reason"] == "idle_timeout"
    record_figures("upstream_stalls", title="Upstream stalls (idle timeouts 1s)", attempted=1, succeeded=0,
                   failed=1, close_s=took, rss_before=rss_before, rss_after=gateway_rss(gw), notes="idle_timeout")


@pytest.mark.parametrize("terminated", [False, True], ids=["passthrough", "terminated"])
def test_stalled_upstream_with_pushing_client_is_closed_as_idle(gateway, faulty, pki, terminated):
    """The client keeps writing, but nothing drains: once the buffers fill, both legs are idle."""
    stalling = faulty(StallingUpstream)
    extra = {"traffic_policy": TERMINATE} if terminated else {}
    gw = gateway(
        {
            "limits": {"client_idle_timeout": "1s", "server_idle_timeout": "1s"},
            "endpoints": [endpoint("s", "tls://s.example.test", stalling, **extra)],
        }
    )
    if terminated:
        ctx = ssl.create_default_context(cafile=_local_ca(gw))
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
        sock = ctx.wrap_socket(raw, server_hostname="s.example.test", suppress_ragged_eofs=False)
    else:
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
        sock.sendall(client_hello_bytes("s.example.test"))
    pushed = 0
    chunk = b"x" * 65536
    with sock:
        with pytest.raises(OSError):  # reset, broken pipe or TLS EOF once the gateway gives up
            for _ in range(10_000):  # at most 640 MiB: far more than any buffers hold
                sock.sendall(chunk)
                pushed += len(chunk)
    assert pushed < 640 * 1024 * 1024
    assert single_event(gw)["close_reason"] == "idle_timeout"


def test_upstream_connect_timeout_with_a_full_backlog(gateway, faulty):
    silent = faulty(FullBacklogUpstream)
    gw = gateway(
        {
            "limits": {"upstream_connect_timeout": "1s"},
            "endpoints": [endpoint("b", "tls://b.example.test", silent)],
        }
    )
    rss_before = gateway_rss(gw)
    received, how, took = passthrough_client(gw.port, "b.example.test")
    assert (received, how) == (b"", "eof")
    event = single_event(gw)
    assert event["close_reason"] == "upstream_connect_timeout"
    assert "timed out" in event["upstream_error"]
    record_figures("upstream_silent", title="Upstream never answers the SYN (connect timeout 1s)",
                   attempted=1, succeeded=0, failed=1, close_s=took, rss_before=rss_before, rss_after=gateway_rss(gw),
                   notes="upstream_connect_timeout")


@pytest.mark.parametrize("bad", [RefusingUpstream, FullBacklogUpstream], ids=["refusing", "silent"])
def test_pool_fails_over_from_a_bad_member(gateway, faulty, upstreams, pki, bad):
    alive = upstreams("alive")
    broken = faulty(bad)
    gw = gateway(
        {
            "limits": {"upstream_connect_timeout": "500ms"},
            "endpoints": [
                endpoint("alive", "tls://pool.example.test", alive, pooling_enabled=True),
                endpoint("broken", "tls://pool.example.test", broken, pooling_enabled=True),
            ],
        }
    )
    rss_before = gateway_rss(gw)
    # Members are tried in random order: 12 of 12 reaching the live one shows failover
    # (without it, about half would fail; all 12 picking it first has odds of 1 in 4096).
    attempts = 12
    outcomes = [greeting(gw.port, "pool.example.test", pki.files.cert) for _ in range(attempts)]
    assert outcomes == ["hello from alive"] * attempts
    events = gw.wait_events(attempts)
    assert {e["object"]["endpoint"]["name"] for e in events} == {"alive"}
    assert {e["object"]["close_reason"] for e in events} == {"eof"}
    record_figures(f"pool_failover_{bad.__name__}", title=f"Pool failover from a {'refusing' if bad is RefusingUpstream else 'silent'} member",
                   attempted=attempts, succeeded=attempts, failed=0, rss_before=rss_before, rss_after=gateway_rss(gw),
                   notes="every connection reached the live member")


TOTAL = 8 * 1024 * 1024
CUT = 3 * 1024 * 1024


def _expected_prefix(length: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern_chunks(TOTAL, seed=7):
        digest.update(piece[: max(length, 0)])
        length -= len(piece)
        if length <= 0:
            break
    return digest.hexdigest()


def test_upstream_closing_half_way_with_fin_ends_the_download_with_eof(gateway, faulty):
    halfway = faulty(HalfwayUpstream, TOTAL, CUT, "fin")
    gw = gateway({"endpoints": [endpoint("h", "tls://h.example.test", halfway)]})
    rss_before = gateway_rss(gw)
    received, how, took = passthrough_client(gw.port, "h.example.test")
    assert how == "eof"
    assert len(received) == CUT  # everything the upstream sent, then EOF
    assert hashlib.sha256(received).hexdigest() == _expected_prefix(CUT)
    assert single_event(gw)["close_reason"] == "eof"
    record_figures("upstream_halfway_fin", title="Upstream closes half-way (FIN)", attempted=1,
                   succeeded=0, failed=1, close_s=took, rss_before=rss_before, rss_after=gateway_rss(gw),
                   notes=f"client got the {CUT >> 20} MiB sent, then EOF; eof")


def test_upstream_resetting_half_way_ends_the_download_with_upstream_reset(gateway, faulty):
    halfway = faulty(HalfwayUpstream, TOTAL, CUT, "rst")
    gw = gateway({"endpoints": [endpoint("h", "tls://h.example.test", halfway)]})
    rss_before = gateway_rss(gw)
    received, how, took = passthrough_client(gw.port, "h.example.test")
    # An RST discards what the upstream had not sent yet; what the gateway had received
    # before the reset is relayed, then the client's connection is closed.
    assert 0 < len(received) <= CUT
    assert hashlib.sha256(received).hexdigest() == _expected_prefix(len(received))
    assert single_event(gw)["close_reason"] == "upstream_reset"
    record_figures("upstream_halfway_rst", title="Upstream resets half-way (RST)", attempted=1,
                   succeeded=0, failed=1, close_s=took, rss_before=rss_before, rss_after=gateway_rss(gw),
                   notes=f"client got {len(received) / 2**20:.1f} of the {CUT >> 20} MiB sent, then the connection ended ({how}); upstream_reset")


def _local_ca(gw) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tlsgate", "ca", "path", "-c", str(gw.config_path)],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize(("mode", "reason"), [("fin", "eof"), ("rst", "upstream_reset")])
def test_terminated_download_cut_half_way(gateway, faulty, mode, reason):
    """Behind termination a FIN becomes close_notify, but a reset must not: the client has to
    be able to tell a truncated download from a complete one."""
    halfway = faulty(HalfwayUpstream, TOTAL, CUT, mode)
    gw = gateway({"endpoints": [endpoint("h", "tls://h.example.test", halfway, traffic_policy=TERMINATE)]})
    ctx = ssl.create_default_context(cafile=_local_ca(gw))
    received = b""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname="h.example.test", suppress_ragged_eofs=False) as s:
            s.sendall(b"GET\n")
            try:
                while data := s.recv(1 << 20):
                    received += data
                ending = "close_notify"
            except (ssl.SSLEOFError, ConnectionResetError):
                ending = "truncated"
    assert hashlib.sha256(received).hexdigest() == _expected_prefix(len(received))
    if mode == "fin":
        assert (len(received), ending) == (CUT, "close_notify")
    else:
        assert len(received) <= CUT
        assert ending == "truncated"
    assert single_event(gw)["close_reason"] == reason


# -- process faults --------------------------------------------------------------------------

HELD = 20


def _serving_worker(gw, client_port: int, pids: list[int]) -> int | None:
    """Which worker holds the gateway end of the client connection from ``client_port``."""
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections("tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.laddr and c.raddr and c.laddr.port == gw.port and c.raddr.port == client_port for c in conns):
            return pid
    return None


class Stream:
    """New connections one after another in threads; every failure is classified."""

    def __init__(self, gw, ca, threads: int = 2):
        self.gw, self.ca = gw, ca
        self.ok = 0
        self.refused: list[BaseException] = []
        self.lost: list[BaseException] = []
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                assert greeting(self.gw.port, "app.example.test", self.ca) == "hello from app"
                self.ok += 1
            except ConnectionRefusedError as e:
                self.refused.append(e)
            except (OSError, ssl.SSLError, AssertionError) as e:
                self.lost.append(e)

    def stop(self) -> None:
        self._done.set()
        for t in self._threads:
            t.join()


def test_sigkill_a_worker_under_load_loses_only_its_own_connections(gateway, upstreams, pki):
    app = upstreams("app")
    gw = gateway({"endpoints": [endpoint("app", "tls://app.example.test", app)]})
    ca = pki.files.cert
    pids = gw.worker_pids()
    rss_before = gateway_rss(gw)

    # Long-lived relayed connections, until both workers hold some (bounded).
    held: dict[int, tuple] = {}  # client port -> (ssl socket, worker pid)
    for _ in range(200):
        s = tls_connect(gw.port, "app.example.test", ca)
        assert read_line(s) == "hello from app\n"
        s.sendall(b"ECHO\n")
        port = s.getsockname()[1]
        held[port] = (s, wait_for(lambda port=port: _serving_worker(gw, port, pids), what="serving worker"))
        owners = [w for _, w in held.values()]
        if len(held) >= HELD and min(owners.count(p) for p in pids) >= 3:
            break
    owners = [w for _, w in held.values()]
    assert min(owners.count(p) for p in pids) >= 3, "the kernel gave every connection to one worker"
    victim, survivor = pids

    stream = Stream(gw, ca)
    try:
        wait_for(lambda: stream.ok >= 5, what="stream running")
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        # A new worker serves: wait for it, then for a connection that it served.
        wait_for(lambda: len([p for p in gw.worker_pids() if p not in pids]) == 1, what="respawned worker")
        newcomer = next(p for p in gw.worker_pids() if p not in pids)
        gw.wait_serving(gw.workers + 1)
        serving_at = time.monotonic()
        prefix = f"{newcomer:x}."
        wait_for(
            lambda: any(e["object"]["id"].startswith(prefix) for e in gw.events()),
            timeout=60, what="a connection served by the new worker",
        )
    finally:
        stream.stop()

    # The victim's held connections are gone; the survivor's still echo.
    lost, alive = [], []
    for port, (s, owner) in held.items():
        try:
            s.sendall(b"ping")
            answer = s.recv(4)
        except (OSError, ssl.SSLError):
            answer = b""
        (alive if answer == b"ping" else lost).append((port, owner))
    assert sorted(port for port, owner in lost) == sorted(p for p, (_, o) in held.items() if o == victim)
    assert {owner for _, owner in alive} == {survivor}
    for s, _ in held.values():
        s.close()

    # Events: each surviving held connection exactly once, from the survivor; none for the lost ones.
    wait_for(lambda: len([e for e in gw.events() if e["object"]["conn"]["client_port"] in dict(alive)]) >= len(alive),
             what="events of the surviving connections")
    events = gw.events()
    held_events = [e["object"] for e in events if e["object"]["conn"]["client_port"] in held]
    assert sorted(e["conn"]["client_port"] for e in held_events) == sorted(port for port, _ in alive)
    assert all(e["id"].startswith(f"{survivor:x}.") for e in held_events)
    assert not stream.refused, stream.refused
    # A stream connection the victim had accepted at the moment of the kill dies with it:
    # at most one per stream thread.
    assert len(stream.lost) <= len(stream._threads), stream.lost
    record_figures(
        "sigkill_worker",
        title=f"SIGKILL one of 2 workers under load ({len(held)} held connections + 2 threads of new ones)",
        attempted=len(held) + stream.ok + len(stream.lost) + len(stream.refused),
        succeeded=len(alive) + stream.ok,
        failed=len(lost) + len(stream.lost) + len(stream.refused),
        recover_s=serving_at - killed_at,
        rss_before=rss_before,
        rss_after=gateway_rss(gw),
        notes=(
            f"lost: {len(lost)} held by the killed worker (expected), {len(stream.lost)} new in flight "
            f"on it; refused: {len(stream.refused)}; time to recover = kill to new worker serving"
        ),
    )


def test_sigkill_the_master_makes_workers_exit_and_release_the_port(gateway, upstreams, pki):
    app = upstreams("app")
    gw = gateway({"endpoints": [endpoint("app", "tls://app.example.test", app)]})
    workers = [psutil.Process(pid) for pid in gw.worker_pids()]
    held = tls_connect(gw.port, "app.example.test", pki.files.cert)
    assert read_line(held) == "hello from app\n"
    held.sendall(b"ECHO\n")
    rss_before = gateway_rss(gw)
    killed_at = time.monotonic()
    gw.proc.kill()
    gw.proc.wait()

    def exited(proc: psutil.Process) -> bool:
        try:
            return proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(lambda: all(exited(w) for w in workers), interval=0.01, what="workers exiting")
    released_at = time.monotonic()
    # No orphan holds the listening socket: the kernel refuses the connection outright.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gw.port), timeout=5).close()
    # The held connection was closed by its worker on the way out, with an event saying so.
    held.settimeout(5)
    try:
        assert held.recv(100) == b""
    except (OSError, ssl.SSLError):
        pass
    held.close()
    assert [e["object"]["close_reason"] for e in gw.events()] == ["shutdown"]
    record_figures(
        "sigkill_master",
        title="SIGKILL the master",
        attempted=1,
        succeeded=0,
        failed=1,
        recover_s=released_at - killed_at,
        rss_before=rss_before,
        rss_after=0,
        notes="workers exited (held connection closed, reason shutdown); port refuses afterwards; "
        "time = kill to last worker gone",
    )
