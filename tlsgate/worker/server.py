"""The worker's accept loops and its table of live connections.

One accept greenlet per shared listening socket. Every accepted socket gets a
`Connection` served in its own greenlet; `Server` keeps them in `live` so that a
drain can wait for them and a deadline (or, later, the control plane) can close
them with a reason.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket as stdlib_socket
import time
from collections.abc import Callable

import gevent
from gevent import socket
from gevent.event import Event

from tlsgate.events import ConnectionRecord, build_closed_event
from tlsgate.worker.connection import Connection, Routing
from tlsgate.worker.connlimits import ConnectionLimits
from tlsgate.worker.eventsink import EventSink

log = logging.getLogger(__name__)

# Out of descriptors or buffers: accept() would fail again at once, so back off instead of spinning.
_BACKOFF_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_MIN_BACKOFF = 0.01
_MAX_BACKOFF = 1.0


class Server:
    def __init__(
        self,
        listeners: list[socket.socket],
        routing: Routing,
        sink: EventSink,
        limits: ConnectionLimits | None = None,
    ):
        self.listeners = listeners
        self.routing = routing
        self.sink = sink
        self.limits = limits
        """Gateway-wide open-connection limits (shared with the other workers), if any."""
        self.live: dict[str, Connection] = {}
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}"
        self._accepters: list[gevent.Greenlet] = []
        self.all_closed = Event()
        self.all_closed.set()
        self.accepted = 0
        """Connections accepted since the worker started (read by the reporter)."""
        self.accept_errors = 0
        """accept() failures for lack of descriptors or buffers: the connection cap the OS enforces."""
        self.on_finished: Callable[[ConnectionRecord, dict], None] | None = None
        """Called with every finished connection's record (the reporter's counters and events)."""

    def start(self) -> None:
        self._accepters = [gevent.spawn(self._accept_loop, sock) for sock in self.listeners]

    def stop_accepting(self) -> None:
        for greenlet in self._accepters:
            greenlet.kill(block=True)
        for sock in self.listeners:
            sock.close()
        self.listeners = []

    def wait_closed(self, timeout: float | None) -> bool:
        return self.all_closed.wait(timeout)

    def close_all(self, reason: str) -> None:
        for conn in list(self.live.values()):
            conn.close(reason)

    def _accept_loop(self, listener: socket.socket) -> None:
        server_ip, server_port = listener.getsockname()[:2]
        delay = _MIN_BACKOFF
        while True:
            try:
                client, addr = listener.accept()
            except OSError as e:
                if e.errno in _BACKOFF_ERRNOS:
                    self.accept_errors += 1
                    log.warning("accept on %s:%s: %s; retrying in %.2fs", server_ip, server_port, e, delay)
                    gevent.sleep(delay)
                    delay = min(delay * 2, _MAX_BACKOFF)
                    continue
                if e.errno in (errno.ECONNABORTED, errno.EAGAIN, errno.EINTR):
                    continue
                raise
            delay = _MIN_BACKOFF
            self.accepted += 1
            client.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
            record = ConnectionRecord(
                conn_id=f"{self._prefix}.{next(self._ids)}",
                start_ts=time.time(),
                client_ip=_unmap(addr[0]),
                client_port=addr[1],
                server_ip=_unmap(server_ip),
                server_port=server_port,
            )
            if self.limits is not None:
                over = self.limits.admit(record.client_ip)
                if over is not None:
                    self._refuse(client, record, over)
                    continue
            conn = Connection(client, record, self.routing, self._finished)
            self.live[record.conn_id] = conn
            self.all_closed.clear()
            conn.greenlet = gevent.spawn(conn.serve)

    def _refuse(self, client, record: ConnectionRecord, limit: str) -> None:
        """Over a connection limit: close at once (no alert: nothing was read) and say why."""
        client.close()
        record.close_reason = limit  # max_connections or max_connections_per_ip
        record.end_ts = time.time()
        self._emit(record)

    def _finished(self, record: ConnectionRecord) -> None:
        self.live.pop(record.conn_id, None)
        if not self.live:
            self.all_closed.set()
        if self.limits is not None:
            self.limits.release(record.client_ip)
        self._emit(record)

    def _emit(self, record: ConnectionRecord) -> None:
        # Built once, so the events file and the control plane's stream carry the same event_id.
        event = build_closed_event(record)
        self.sink.emit(event)
        if self.on_finished is not None:
            self.on_finished(record, event)


def _unmap(ip: str) -> str:
    """Report IPv4 clients of a dual-stack socket as plain IPv4."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip
