"""The worker's accept watchers and its table of live connections.

The listening sockets the master bound are watched by the event loop; a readiness
callback accepts what is queued and gives every socket to a `FastConnection`
(tlsgate/worker/fastpath.py), which serves it from callbacks, or hands it over to a
greenlet-based `Connection` (tlsgate/worker/connection.py) when it needs one. `Server`
keeps both kinds in `live` so that a drain can wait for them and a deadline (or the
control plane) can close them with a reason, and hears of every connection's end once.
"""

from __future__ import annotations

import _socket
import errno
import itertools
import logging
import os
import time
from collections.abc import Callable

import gevent
from gevent import get_hub
from gevent import socket as green_socket
from gevent.event import Event

from tlsgate.config.model import EndpointConfig
from tlsgate.events import ConnectionRecord, closed_event_from_row, closed_event_row
from tlsgate.worker.connection import Connection, Routing
from tlsgate.worker.connlimits import ConnectionLimits
from tlsgate.worker.eventsink import EventSink
from tlsgate.worker.fastpath import FastConnection

log = logging.getLogger(__name__)

# Out of descriptors or buffers: accept() would fail again at once, so back off instead of spinning.
_BACKOFF_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_MIN_BACKOFF = 0.01
_MAX_BACKOFF = 1.0
_ACCEPT_BATCH = 16
"""accept() calls per readiness callback: a burst is taken in one turn of the event loop,
and other workers sharing the queue still get their turn."""


class _Listener:
    """One shared listening socket and its watcher."""

    __slots__ = ("sock", "family", "server_ip", "server_port", "watcher", "backoff", "delay")

    def __init__(self, sock):
        self.sock = sock
        self.family = sock.family
        server_ip, self.server_port = sock.getsockname()[:2]
        self.server_ip = _unmap(server_ip)
        self.watcher = None
        self.backoff = None
        self.delay = _MIN_BACKOFF


class Server:
    def __init__(
        self,
        listeners: list,
        routing: Routing,
        sink: EventSink,
        limits: ConnectionLimits | None = None,
    ):
        self.listeners = [_Listener(sock) for sock in listeners]
        self.routing = routing
        self.sink = sink
        self.limits = limits
        """Gateway-wide open-connection limits (shared with the other workers), if any."""
        self.live: dict[str, FastConnection | Connection] = {}
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}"
        self.all_closed = Event()
        self.all_closed.set()
        self.accepted = 0
        """Connections accepted since the worker started (read by the reporter)."""
        self.accept_errors = 0
        """accept() failures for lack of descriptors or buffers: the connection cap the OS enforces."""
        self.on_finished: Callable[[ConnectionRecord, list, float | None], None] | None = None
        """Called with every finished connection's record, its event as a
        `closed_event_row` and its dial latency (the reporter's counters and events)."""

    def start(self) -> None:
        loop = get_hub().loop
        for listener in self.listeners:
            listener.sock.setblocking(False)
            listener.watcher = loop.io(listener.sock.fileno(), 1)
            listener.watcher.start(self._accept, listener)

    def stop_accepting(self) -> None:
        for listener in self.listeners:
            if listener.watcher is not None:
                listener.watcher.close()
            if listener.backoff is not None:
                listener.backoff.close()
            listener.sock.close()
        self.listeners = []

    def wait_closed(self, timeout: float | None) -> bool:
        return self.all_closed.wait(timeout)

    def close_all(self, reason: str) -> None:
        for conn in list(self.live.values()):
            conn.close(reason)

    # -- accepting (event-loop callbacks) ---------------------------------------------------

    def _accept(self, listener: _Listener) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                fd, addr = listener.sock._accept()
            except BlockingIOError:
                return
            except (InterruptedError, ConnectionAbortedError):
                continue  # that client gave up while queued; the next may be waiting
            except OSError as e:
                if e.errno in _BACKOFF_ERRNOS:
                    self._back_off(listener, e)
                else:
                    log.error("accept on %s:%s: %s", listener.server_ip, listener.server_port, e)
                return
            listener.delay = _MIN_BACKOFF
            try:
                self._serve(listener, fd, addr)
            except Exception:
                log.exception("accept on %s:%s", listener.server_ip, listener.server_port)

    def _back_off(self, listener: _Listener, e: OSError) -> None:
        self.accept_errors += 1
        log.warning(
            "accept on %s:%s: %s; retrying in %.2fs",
            listener.server_ip,
            listener.server_port,
            e,
            listener.delay,
        )
        listener.watcher.stop()
        listener.backoff = get_hub().loop.timer(listener.delay)
        listener.backoff.start(self._resume_accepting, listener)
        listener.delay = min(listener.delay * 2, _MAX_BACKOFF)

    def _resume_accepting(self, listener: _Listener) -> None:
        listener.backoff.close()
        listener.backoff = None
        if listener.watcher is not None and listener in self.listeners:
            listener.watcher.start(self._accept, listener)

    def _serve(self, listener: _Listener, fd: int, addr) -> None:
        self.accepted += 1
        # A plain socket: the fast path drives it with watchers of its own. Not inherited
        # from the listener by accept(): O_NONBLOCK (TCP_NODELAY is, see master/sockets.py).
        client = _socket.socket(listener.family, _socket.SOCK_STREAM, 0, fd)
        client.setblocking(False)
        record = ConnectionRecord(
            conn_id=f"{self._prefix}.{next(self._ids)}",
            start_ts=time.time(),
            client_ip=addr[0] if listener.family == _socket.AF_INET else _unmap(addr[0]),
            client_port=addr[1],
            server_ip=listener.server_ip,
            server_port=listener.server_port,
        )
        if self.limits is not None:
            over = self.limits.admit(record.client_ip)
            if over is not None:
                self._refuse(client, record, over)
                return
        conn = FastConnection(client, listener.family, record, self.routing, self)
        live = self.live
        if not live:  # otherwise it is clear already
            self.all_closed.clear()
        live[record.conn_id] = conn
        conn.start()

    def _refuse(self, client, record: ConnectionRecord, limit: str) -> None:
        """Over a connection limit: close at once (no alert: nothing was read) and say why."""
        client.close()
        record.close_reason = limit  # max_connections or max_connections_per_ip
        record.end_ts = time.time()
        self._emit(record, None)

    # -- the greenlet path --------------------------------------------------------------------

    def hand_over(
        self,
        fast: FastConnection,
        buffered: bytes | bytearray | None,
        members: list[EndpointConfig],
        chosen: EndpointConfig,
    ) -> None:
        """Dial ``chosen`` (or its pool) and relay in a greenlet: its dialer needs one
        (a host name to resolve). The traffic policy, if any, has run already."""
        conn = self._greenlet_connection(fast)
        conn.greenlet = gevent.spawn(conn.serve_routed, buffered, members, chosen)

    def hand_over_refusal(
        self, fast: FastConnection, reason: str, alert: int | None, unsent: bytes = b""
    ) -> None:
        """Send ``alert`` (or ``unsent``: what a failed handshake left for the client) and
        close gracefully, in a greenlet."""
        conn = self._greenlet_connection(fast)
        conn.greenlet = gevent.spawn(conn.refuse, reason, alert, unsent)

    def _greenlet_connection(self, fast: FastConnection) -> Connection:
        client = green_socket.socket(
            fast.family, _socket.SOCK_STREAM, 0, fileno=fast.client.detach()
        )
        fast.state = "closed"  # the greenlet's Connection reports the end
        conn = Connection(client, fast.record, self.routing, self.finished)
        if fast.tls is not None:
            fast.tls.sock = client  # the same descriptor, now as a gevent socket
            conn.tls = fast.tls
        self.live[fast.record.conn_id] = conn
        return conn

    # -- the end ------------------------------------------------------------------------------

    def finished(self, record: ConnectionRecord, dial_latency: float | None) -> None:
        """Called once per accepted connection, when it has closed."""
        self.live.pop(record.conn_id, None)
        if not self.live:
            self.all_closed.set()
        if self.limits is not None:
            self.limits.release(record.client_ip)
        self._emit(record, dial_latency)

    def _emit(self, record: ConnectionRecord, dial_latency: float | None) -> None:
        # One row, so the events file and the control plane's stream carry the same event_id.
        row = closed_event_row(record)
        if self.sink.enabled:
            self.sink.emit(closed_event_from_row(row))
        if self.on_finished is not None:
            self.on_finished(record, row, dial_latency)


def _unmap(ip: str) -> str:
    """Report IPv4 clients of a dual-stack socket as plain IPv4."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip
