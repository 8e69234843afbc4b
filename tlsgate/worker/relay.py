"""Two-way byte relay between a client and an upstream socket.

The connection handlers (tlsgate/worker/fastpath.py, tlsgate/worker/connection.py)
make one `Relay` per connection. Plain sockets (passthrough) are relayed with
`start(on_done)`: the event loop's readiness callbacks move the bytes and call
``on_done(reason)`` at the end, so a message costs no greenlet switch and an idle
connection holds no greenlet at all. TLS sides are relayed with `run()` in the
handler's greenlet. `stop(reason)` ends either from any other greenlet. Small
reads (handshake flights, requests) are copied through one scratch buffer shared by
the worker; a read of `fdpump._BULK` bytes or more means a bulk transfer, and from then on
that direction moves with `os.splice` through a pipe of its own (zero copy). So an
idle connection holds no pipe. TLS sides (a terminated client, a re-encrypted
upstream) go through their `recv`/`sendall`: the handler's greenlet pumps client ->
upstream and a second greenlet pumps upstream -> client.

Idle rule (the issue's definition): the client leg is idle when the client has sent
nothing for `client_idle_timeout`, the upstream leg when the upstream has sent nothing
for `server_idle_timeout`; the connection closes only when both are idle at once, so a
long one-way transfer is never cut. One sweeper greenlet per worker (`_IdleSweeper`)
checks the live relays a few times per timeout instead of arming a timer per wait.

Half-closes propagate: EOF on one side becomes `shutdown(SHUT_WR)` on the other and
the opposite direction keeps flowing until it ends too. Anything else (a reset, idle,
`stop()`) ends both directions at once.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
import time

import gevent
from gevent import get_hub

from tlsgate.events import ConnectionRecord
from tlsgate.worker.fdpump import FdDirection
from tlsgate.worker.relaybase import (  # noqa: F401  (PlainStream, RelayClosed: used by connection.py)
    Leg,
    PlainStream,
    RelayClosed,
    closed_by,
    shutdown_write,
)

log = logging.getLogger(__name__)

_STREAM_READ = 64 * 1024


class Relay:
    """Relays bytes both ways until both directions end (or idle/reset/stop)."""

    __slots__ = (
        "client",
        "upstream",
        "record",
        "client_leg",
        "upstream_leg",
        "_streams",
        "_reason",
        "_directions",
        "_pumps",
        "_up_done",
        "_on_done",
    )

    def __init__(
        self,
        client: stdlib_socket.socket,
        upstream: stdlib_socket.socket,
        record: ConnectionRecord,
        client_idle_timeout: float,
        server_idle_timeout: float,
        tls_sides: bool = False,
    ):
        now = time.monotonic()
        self.client = client
        self.upstream = upstream
        self.record = record
        self.client_leg = Leg(client_idle_timeout, now)
        self.upstream_leg = Leg(server_idle_timeout, now)
        # A TLS side (terminated client, re-encrypted upstream) holds plaintext OpenSSL may
        # already have buffered, so it is read through its own recv(), not by fd readiness.
        self._streams = tls_sides
        self._reason: str | None = None
        """Set once, by whatever ends the relay first."""
        self._directions: tuple[FdDirection, ...] = ()
        self._pumps: tuple[gevent.Greenlet, ...] = ()
        self._up_done = False
        self._on_done = None

    def start(self, on_done, client_pending: bytes = b"") -> None:
        """Relay plain sockets from event-loop callbacks; returns at once.

        ``on_done(reason)`` is called once, from the event loop or from the greenlet that
        called `stop`, after the watchers are closed (the sockets are the caller's to
        close). ``client_pending``: bytes for the upstream that it did not take yet (the
        rest of a ClientHello replay); they go before anything else the client sends.
        """
        loop = get_hub().loop
        self._on_done = on_done
        client, upstream = self.client, self.upstream
        self._directions = (
            FdDirection(self, client, upstream, self.client_leg, True, loop),
            FdDirection(self, upstream, client, self.upstream_leg, False, loop),
        )
        _SWEEPER.add(self)
        to_upstream, to_client = self._directions
        if client_pending:
            to_upstream.wait_to_send(client_pending)
        else:
            to_upstream.reader.start(to_upstream.on_readable)
        to_client.reader.start(to_client.on_readable)

    def run(self) -> str:
        """Relay TLS sides in this greenlet until done; returns the close reason. Sockets
        are left for the caller to close."""
        assert self._streams, "plain sockets are relayed with start()"
        _SWEEPER.add(self)
        try:
            return self._run_streams()
        finally:
            _SWEEPER.discard(self)

    def stop(self, reason: str) -> None:
        """Called from another greenlet (drain deadline, kill, idle sweeper): ends both directions."""
        if self._reason is not None:
            return
        if self._on_done is not None:
            self._finish(reason)  # never switches: safe from any greenlet and from the hub
            return
        self._reason = reason
        current = gevent.getcurrent()
        for pump in self._pumps:
            if pump is not current:
                pump.kill(RelayClosed(reason), block=False)

    def both_idle(self, now: float) -> bool:
        return self.client_leg.idle(now) and self.upstream_leg.idle(now)

    # -- plain sockets: event-loop callbacks, no greenlet of their own -----------------

    def _finish(self, reason: str) -> None:
        """End both directions, close the watchers, tell the owner why."""
        if self._reason is not None:
            return
        self._reason = reason
        _SWEEPER.discard(self)
        for direction in self._directions:
            direction.stop_watching()
            direction.close()
        self._directions = ()
        on_done, self._on_done = self._on_done, None
        on_done(reason)

    def _direction_ended(self) -> None:
        if all(d.ended for d in self._directions):
            self._finish("eof")

    def _crash(self) -> None:
        """A bug in a callback: log it with its traceback and close the connection."""
        log.exception("connection %s: relay failed", self.record.conn_id)
        self._finish("error")

    # -- TLS sides: the handler's greenlet pumps one way, a second greenlet the other ---

    def _run_streams(self) -> str:
        down = gevent.spawn(self._pump_guarded, False)
        self._pumps = (gevent.getcurrent(), down)
        down.rawlink(self._down_ended)
        reason = None
        try:
            reason = self._pump_guarded(True)
            self._up_done = True
            if reason == "eof":
                # A half-close: the other direction keeps flowing until it ends too.
                reason = down.get()
            return reason
        except RelayClosed as e:
            reason = e.reason
            return reason
        finally:
            self._up_done = True
            self._reason = self._reason or reason or "error"
            down.unlink(self._down_ended)
            if not down.dead:
                down.kill(RelayClosed(self._reason), block=True)

    def _down_ended(self, down: gevent.Greenlet) -> None:
        # Anything but a clean EOF (reset, idle, stop) ends the handler's direction too.
        if self._up_done:
            return
        if not down.successful():
            self.stop("upstream_reset")  # a bug: gevent has printed its traceback
        elif isinstance(down.value, str) and down.value != "eof":
            self.stop(down.value)

    def _pump_guarded(self, upstream_bound: bool) -> str:
        try:
            self._pump_stream(upstream_bound)
            return "eof"
        except RelayClosed as e:
            return e.reason

    def _pump_stream(self, upstream_bound: bool) -> None:
        """recv()/sendall() until EOF; the idle sweeper ends a stalled one with stop()."""
        if upstream_bound:
            src, dst, leg, src_name, dst_name = (
                self.client,
                self.upstream,
                self.client_leg,
                "client",
                "upstream",
            )
        else:
            src, dst, leg, src_name, dst_name = (
                self.upstream,
                self.client,
                self.upstream_leg,
                "upstream",
                "client",
            )
        record = self.record
        recv, sendall = src.recv, dst.sendall
        while True:
            try:
                data = recv(_STREAM_READ)
            except OSError as e:
                raise closed_by(e, src_name, record) from e
            if not data:
                leg.ended = True
                try:
                    shutdown_write(dst)
                except OSError as e:
                    raise closed_by(e, dst_name, record) from e
                return
            leg.last_activity = time.monotonic()
            if upstream_bound:
                record.bytes_in += len(data)
            else:
                record.bytes_out += len(data)
            try:
                sendall(data)
            except OSError as e:
                raise closed_by(e, dst_name, record) from e


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
        shortest = min(relay.client_leg.idle_timeout, relay.upstream_leg.idle_timeout)
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
