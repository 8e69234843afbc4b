"""Two-way byte relay between a client and an upstream, driven by event-loop callbacks.

The connection handlers (tlsgate/worker/fastpath.py, tlsgate/worker/connection.py)
make one `Relay` per connection and call `start(on_done)`: readiness callbacks move the
bytes and call ``on_done(reason)`` once at the end, so a message costs no greenlet
switch and an idle connection holds no greenlet at all. `stop(reason)` ends it from
any greenlet (drain deadline, kill, idle sweeper).

Plain sockets (passthrough) are moved by tlsgate/worker/fdpump.py: small reads
(handshake flights, requests) are copied through one scratch buffer shared by the
worker; a read of `fdpump._BULK` bytes or more means a bulk transfer, and from then on
that direction moves with `os.splice` through a pipe of its own (zero copy), so an
idle connection holds no pipe. A relay with a TLS side (a terminated client, a
re-encrypted upstream) is moved by tlsgate/worker/tlspump.py, which decrypts and
encrypts through the side's `GreenTLSConnection` without blocking.

Idle rule (the issue's definition): the client leg is idle when the client has sent
nothing for `client_idle_timeout`, the upstream leg when the upstream has sent nothing
for `server_idle_timeout`; the connection closes only when both are idle at once, so a
long one-way transfer is never cut. One sweeper greenlet per worker (`_IdleSweeper`)
checks the live relays a few times per timeout instead of arming a timer per wait.

Half-closes propagate: EOF on one side becomes `shutdown(SHUT_WR)` (or close_notify on
a TLS side) on the other and the opposite direction keeps flowing until it ends too.
Anything else (a reset, idle, `stop()`) ends both directions at once.
"""

from __future__ import annotations

import logging
import time

import gevent
from gevent import get_hub

from tlsgate.events import ConnectionRecord
from tlsgate.worker.fdpump import FdDirection
from tlsgate.worker.relaybase import Leg, RelayClosed
from tlsgate.worker.tlspump import Side, StreamDirection

log = logging.getLogger(__name__)

_NOT_STARTED = Leg(float("inf"), 0.0)
"""A relay's legs before it starts and after it ends: never idle, never ended."""


class Relay:
    """Relays bytes both ways until both directions end (or idle/reset/stop)."""

    __slots__ = (
        "client",
        "upstream",
        "record",
        "client_idle_timeout",
        "server_idle_timeout",
        "client_leg",
        "upstream_leg",
        "loop",
        "_client_tls",
        "_upstream_tls",
        "_reason",
        "_directions",
        "_sides",
        "_on_done",
        "_client_reader",
    )

    def __init__(
        self,
        client,
        upstream,
        record: ConnectionRecord,
        client_idle_timeout: float,
        server_idle_timeout: float,
        client_tls=None,
        upstream_tls=None,
        client_reader=None,
    ):
        """``client``/``upstream``: the sockets. ``client_tls``/``upstream_tls``: the
        `GreenTLSConnection` over that socket where the gateway speaks TLS on it.
        ``client_reader``: a stopped read watcher on the client's socket to take over (see
        `FdDirection`); closed here if the relay cannot use it."""
        self.client = client
        self.upstream = upstream
        self.record = record
        self.client_idle_timeout = client_idle_timeout
        self.server_idle_timeout = server_idle_timeout
        self.client_leg: Leg = _NOT_STARTED
        """The direction from the client (each direction is its source's `Leg`), once started."""
        self.upstream_leg: Leg = _NOT_STARTED
        self.loop = None
        self._client_tls = client_tls
        self._upstream_tls = upstream_tls
        self._reason: str | None = None
        """Set once, by whatever ends the relay first."""
        self._directions: tuple = ()
        self._sides: tuple[Side, ...] = ()
        self._on_done = None
        self._client_reader = client_reader

    @property
    def running(self) -> bool:
        return self._reason is None and self._on_done is not None

    def start(self, on_done, client_pending: bytes = b"") -> None:
        """Relay from event-loop callbacks; returns at once.

        ``on_done(reason)`` is called once, from the event loop or from the greenlet that
        called `stop`, after the watchers are closed (the sockets are the caller's to
        close). ``client_pending``: bytes for the upstream that it did not take yet (the
        rest of a PROXY header or of a ClientHello replay); they go before anything else.
        """
        self.loop = loop = get_hub().loop
        self._on_done = on_done
        client, upstream = self.client, self.upstream
        now = time.monotonic()
        client_reader, self._client_reader = self._client_reader, None
        if self._client_tls is None and self._upstream_tls is None:
            client_fd, upstream_fd = client.fileno(), upstream.fileno()
            to_upstream = FdDirection(
                self, client_fd, upstream, upstream_fd, self.client_idle_timeout, now, True, loop,
                client_reader,
            )  # fmt: skip
            to_client = FdDirection(
                self, upstream_fd, client, client_fd, self.server_idle_timeout, now, False, loop
            )
            to_upstream.opposite, to_client.opposite = to_client, to_upstream
            self._directions = (to_upstream, to_client)
            self.client_leg, self.upstream_leg = to_upstream, to_client
            _SWEEPER.add(self)
            if client_pending:
                to_upstream.wait_to_send(client_pending)
            else:
                to_upstream.reader.start(to_upstream.on_readable)
            to_client.reader.start(to_client.on_readable)
            return
        if client_reader is not None:
            client_reader.close()  # a TLS side reads through its `Side`
        client_side = Side(client, self._client_tls, "client", self)
        upstream_side = Side(upstream, self._upstream_tls, "upstream", self)
        self._sides = (client_side, upstream_side)
        to_upstream = StreamDirection(
            self, client_side, upstream_side, self.client_idle_timeout, now, True
        )
        to_client = StreamDirection(
            self, upstream_side, client_side, self.server_idle_timeout, now, False
        )
        self._directions = (to_upstream, to_client)
        self.client_leg, self.upstream_leg = to_upstream, to_client
        _SWEEPER.add(self)
        if client_pending:  # the rest of a PROXY header, before any record
            try:
                upstream_side.send(client_pending)
            except RelayClosed as e:
                self._finish(e.reason)
                return
        for direction in self._directions:
            if self._reason is None:
                direction.resume()  # reads what OpenSSL already holds, then waits

    def stop(self, reason: str) -> None:
        """Called from another greenlet (drain deadline, kill, idle sweeper): ends both
        directions. Never switches: safe from any greenlet and from the hub."""
        if self._on_done is not None:
            self._finish(reason)

    def both_idle(self, now: float) -> bool:
        return self.client_leg.idle(now) and self.upstream_leg.idle(now)

    def _finish(self, reason: str) -> None:
        """End both directions, close the watchers, tell the owner why."""
        if self._reason is not None:
            return
        self._reason = reason
        _SWEEPER.discard(self)
        for direction in self._directions:
            direction.stop_watching()
            direction.close()
        for side in self._sides:
            side.close()
        # The directions point back at the relay: drop them, so no cycle outlives the connection.
        self._directions = self._sides = ()
        self.client_leg = self.upstream_leg = _NOT_STARTED
        on_done, self._on_done = self._on_done, None
        on_done(reason)

    def _direction_ended(self) -> None:
        # Plain checks, no generator: this runs for every connection that ends normally.
        if not (self.client_leg.ended and self.upstream_leg.ended):
            return
        for side in self._sides:
            if side.pending:
                return
        # Both ends said so, and the last bytes (a close_notify) are out.
        self._finish("eof")

    def _crash(self) -> None:
        """A bug in a callback: log it with its traceback and close the connection."""
        log.exception("connection %s: relay failed", self.record.conn_id)
        self._finish("error")


class _IdleSweeper:
    """The worker's one idle-timeout greenlet: walks the live relays a few times per timeout.

    Runs only while there are relays; checks every quarter of the shortest idle timeout
    (at most every second), so a connection closes between its timeout and 1.25x it.
    """

    def __init__(self):
        self.relays: set[Relay] = set()
        self.interval = 1.0
        self.greenlet: gevent.Greenlet | None = None

    def add(self, relay: Relay) -> None:
        self.relays.add(relay)
        shortest = min(relay.client_idle_timeout, relay.server_idle_timeout)
        if shortest >= 4.0 and self.greenlet is not None:
            return  # the usual case: sweeping every second already suits these timeouts
        interval = min(1.0, max(shortest / 4, 0.01))
        if interval < self.interval and self.greenlet is not None:
            self.greenlet.kill(block=False)  # sleeping too long for this timeout: start afresh
            self.greenlet = None
        self.interval = min(self.interval, interval)
        if self.greenlet is None:
            self.greenlet = gevent.spawn(self._sweep)

    def discard(self, relay: Relay) -> None:
        self.relays.discard(relay)

    def _sweep(self) -> None:
        try:
            while self.relays:
                gevent.sleep(self.interval)
                now = time.monotonic()
                for relay in [r for r in self.relays if r.both_idle(now)]:
                    self.relays.discard(relay)
                    relay.stop("idle_timeout")
        finally:
            if self.greenlet is gevent.getcurrent():
                self.greenlet = None
                self.interval = 1.0


_SWEEPER = _IdleSweeper()
