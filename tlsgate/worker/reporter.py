"""The worker's end of its channel to the master: reports out, commands in.

The master creates one socketpair per worker before the fork
(tlsgate/master/channels.py holds the other end) and speaks the control
protocol's framing over it (tlsgate/control/protocol.py). Started by
tlsgate/worker/process.py after the accept loops; fed by the server's
``on_finished`` hook (tlsgate/worker/server.py) with every finished connection.

Worker -> master:
  ``hello``   once the accept loops run (the master counts the generation as ready);
  ``report``  every `REPORT_INTERVAL`: live connection counts and cumulative counters;
  ``closed``  the ``tcp_connection_closed.v0`` events of finished connections, batched,
              as flat rows (`tlsgate.events.closed_event_row`) the master expands
              only when someone reads them;
  ``reply``   the answer to a command, with the command's ``req``.
Master -> worker:
  ``connections``  list the live connections;
  ``kill``         close connection ``id`` with close_reason ``killed``.

Nothing here runs on the accept or relay path: finished connections cost one
counter update and one queued list; everything else happens in the reporter's
own greenlets. If the master stops reading, only those greenlets wait; events
beyond `MAX_QUEUED_EVENTS` are dropped (and counted), never the connections.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any

import gevent
from gevent.lock import Semaphore

from tlsgate.control.counters import ConnectionCounters
from tlsgate.control.protocol import FrameDecoder, ProtocolError, encode_message
from tlsgate.control.schema import connection_row
from tlsgate.events import ConnectionRecord

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0
EVENT_FLUSH_INTERVAL = 0.2
EVENT_BATCH = 500
MAX_QUEUED_EVENTS = 20_000


class Reporter:
    def __init__(self, channel, server, generation: int, counters: ConnectionCounters):
        self.channel = channel
        self.server = server
        self.generation = generation
        self.counters = counters
        self.pid = os.getpid()
        self.events: deque[list] = deque()
        """`closed_event_row` lists not sent yet."""
        self.dropped_events = 0
        self._send_lock = Semaphore()
        self._greenlets: list[gevent.Greenlet] = []
        self._broken = False
        self.on_channel_closed = None
        """Called when the master's end of the channel closes (the master may be gone)."""

    def start(self) -> None:
        self.server.on_finished = self.connection_finished
        self._send({"type": "hello", "pid": self.pid, "generation": self.generation})
        self._greenlets = [
            gevent.spawn(self._read_commands),
            gevent.spawn(self._report_loop),
            gevent.spawn(self._event_loop),
        ]

    def connection_finished(
        self, record: ConnectionRecord, row: list, dial_latency: float | None
    ) -> None:
        """Called by `Server` (from a greenlet or an event-loop callback: never blocks)."""
        self.counters.count_closed(record, dial_latency)
        if len(self.events) >= MAX_QUEUED_EVENTS:
            self.dropped_events += 1
            return
        self.events.append(row)

    def close(self, timeout: float = 5.0) -> None:
        """Send the last events and the final report (the master keeps it after we exit)."""
        # Take the send lock first: a greenlet killed in the middle of sendall would
        # leave half a frame in the stream and corrupt everything after it.
        with gevent.Timeout(timeout, False), self._send_lock:
            for greenlet in self._greenlets:
                greenlet.kill(block=True)
        with gevent.Timeout(timeout, False):
            self._flush_events()
            self._send(self.report())
        self.channel.close()

    # -- outgoing ------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        counters = self.counters
        counters.accepted = self.server.accepted
        counters.accept_errors = self.server.accept_errors
        snapshot = counters.snapshot()
        active: dict[str, int] = {}
        bytes_in, bytes_out = snapshot["bytes_in"], snapshot["bytes_out"]
        for conn in list(self.server.live.values()):
            record = conn.record
            endpoint = record.endpoint_name or ""
            active[endpoint] = active.get(endpoint, 0) + 1
            bytes_in[endpoint] = bytes_in.get(endpoint, 0) + record.bytes_in
            bytes_out[endpoint] = bytes_out.get(endpoint, 0) + record.bytes_out
        return {
            "type": "report",
            "pid": self.pid,
            "generation": self.generation,
            "ts": time.time(),
            "active": sum(active.values()),
            "active_by_endpoint": active,
            "dropped_events": self.dropped_events,
            "counters": snapshot,
        }

    def _report_loop(self) -> None:
        while not self._broken:
            gevent.sleep(REPORT_INTERVAL)
            self._send(self.report())

    def _event_loop(self) -> None:
        while not self._broken:
            gevent.sleep(EVENT_FLUSH_INTERVAL)
            self._flush_events()

    def _flush_events(self) -> None:
        while self.events and not self._broken:
            batch = [self.events.popleft() for _ in range(min(EVENT_BATCH, len(self.events)))]
            self._send({"type": "closed", "rows": batch})

    def _send(self, message: dict) -> None:
        if self._broken:
            return
        data = encode_message(message)
        with self._send_lock:
            try:
                self.channel.sendall(data)
            except OSError as e:
                # The master is gone or closed our channel; the orphan check ends the worker.
                log.debug("channel to the master closed: %s", e)
                self._broken = True

    # -- incoming ------------------------------------------------------------------

    def _read_commands(self) -> None:
        decoder = FrameDecoder()
        while True:
            try:
                data = self.channel.recv(65536)
            except OSError:
                data = b""
            if not data:
                if self.on_channel_closed is not None:
                    self.on_channel_closed()
                return
            try:
                messages = decoder.feed(data)
            except ProtocolError as e:
                log.error("bad command from the master: %s", e)
                return
            for message in messages:
                gevent.spawn(self._answer, message)

    def _answer(self, message: dict) -> None:
        kind, req = message.get("type"), message.get("req")
        if kind == "connections":
            pid = self.pid
            rows = [connection_row(c.record, c.state, pid) for c in list(self.server.live.values())]
            self._send({"type": "reply", "req": req, "result": {"connections": rows}})
        elif kind == "kill":
            conn = self.server.live.get(message.get("id"))
            if conn is not None:
                conn.close("killed")
            self._send({"type": "reply", "req": req, "result": {"found": conn is not None}})
        else:
            self._send({"type": "reply", "req": req, "error": f"unknown command {kind!r}"})
