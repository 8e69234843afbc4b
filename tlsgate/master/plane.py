"""The master's control plane: worker channels, control socket, metrics, events, stats.

The arbiter (tlsgate/master/arbiter.py) creates one `ControlPlane` and calls a
handful of hooks: `open` at start, `create_channel` + `attach_worker` around
each fork, `close_in_child` in the forked child, `worker_exited` when it reaps
a worker, `tick` on every loop turn and `close` at the end. Everything else
happens in callbacks from the arbiter's selector, in the master's one thread.

Worker channels carry the messages described in tlsgate/worker/reporter.py.
Requests that need the workers (``connections.list``, ``connections.kill``)
become a `WorkerQuery`: the command goes to each worker with a fresh ``req``
number, and the query completes when every worker answered, died, or
`QUERY_TIMEOUT` passed, whichever comes first, so a stuck worker can delay an
answer but never block the master.
"""

from __future__ import annotations

import itertools
import logging
import resource
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tlsgate.control.counters import limit_hits
from tlsgate.control.protocol import ProtocolError
from tlsgate.master.channels import FramedStream, create_channel
from tlsgate.master.control import ControlServer
from tlsgate.master.eventlog import EventLog, GatewayLogHandler
from tlsgate.master.handlers import RequestHandlers
from tlsgate.master.metrics_server import MetricsServer
from tlsgate.master.stats import GatewayStats
from tlsgate.metrics import MetricsInput, render_metrics

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 5.0
READY_TIMEOUT = 20.0
"""How long a reload's answer waits for the new generation to accept connections."""
MASTER_LOGGER = "tlsgate.master"


@dataclass
class WorkerLink:
    pid: int
    generation: int
    stream: FramedStream
    ready: bool = False
    """The worker said hello: its accept loops run."""


@dataclass
class WorkerQuery:
    waiting: set[int]
    on_done: Callable[[dict[int, Any], list[int]], None]
    deadline: float
    results: dict[int, Any] = field(default_factory=dict)


@dataclass
class ReadyWaiter:
    generation: int
    deadline: float
    callback: Callable[[bool], None]


class ControlPlane:
    def __init__(self, arbiter, selector: selectors.BaseSelector):
        self.arbiter = arbiter
        self.selector = selector
        self.stats = GatewayStats()
        self.events = EventLog()
        self.links: dict[int, WorkerLink] = {}
        self.queries: dict[int, WorkerQuery] = {}
        self.waiters: list[ReadyWaiter] = []
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self.handlers = RequestHandlers(self)
        self._log_handler = GatewayLogHandler(self.events)
        self._req_ids = itertools.count(1)

    # -- arbiter hooks ---------------------------------------------------------------

    def open(self) -> None:
        """Start the control socket and, if configured, the metrics endpoint (`OSError` if one cannot)."""
        logging.getLogger(MASTER_LOGGER).addHandler(self._log_handler)
        config = self.arbiter.config
        self.control = ControlServer(
            config.gateway.control_socket, self.selector, self.handlers.dispatch
        )
        self.control.open()
        if config.metrics.listen is not None:
            self.metrics = MetricsServer(config.metrics.listen, self.selector, self.render_metrics)
        log.info(
            "control socket %s%s",
            config.gateway.control_socket,
            f"; metrics at http://{config.metrics.listen}/metrics" if self.metrics else "",
        )

    create_channel = staticmethod(create_channel)

    def attach_worker(self, pid: int, generation: int, master_end: socket.socket) -> None:
        stream = FramedStream(
            master_end,
            self.selector,
            lambda s, m: self._worker_message(pid, m),
            lambda s: None,
            on_protocol_error=lambda s, e: self._channel_broken(pid, s, e),
        )
        self.links[pid] = WorkerLink(pid, generation, stream)

    def close_in_child(self) -> None:
        """In a freshly forked worker: drop every descriptor of the master's plane.

        Only close, never unregister: the epoll instance is shared with the master
        across fork, and unregistering here would remove the master's registrations.
        """
        logging.getLogger(MASTER_LOGGER).removeHandler(self._log_handler)
        for link in self.links.values():
            link.stream.sock.close()
        if self.control is not None:
            for client in self.control.clients:
                client.stream.sock.close()
            if self.control.sock is not None:
                self.control.sock.close()
        if self.metrics is not None:
            for client in self.metrics.clients.values():
                client.sock.close()
            self.metrics.sock.close()

    def worker_exited(self, pid: int) -> None:
        link = self.links.pop(pid, None)
        if link is not None:
            # The worker is dead, so its last report and events are all in the socket buffer.
            link.stream.read_available()
            link.stream.close()
        self.stats.worker_gone(pid)
        for req, query in list(self.queries.items()):
            if pid in query.waiting:
                query.waiting.discard(pid)
                self._maybe_finish(req, query)
        self._check_waiters(time.monotonic())

    def tick(self, now: float) -> None:
        for req, query in list(self.queries.items()):
            if now >= query.deadline:
                del self.queries[req]
                query.on_done(query.results, sorted(query.waiting))
        self._check_waiters(now)
        if self.metrics is not None:
            self.metrics.expire(now)

    def next_deadline(self) -> float | None:
        deadlines = [q.deadline for q in self.queries.values()] + [w.deadline for w in self.waiters]
        if self.metrics is not None and (d := self.metrics.next_deadline()) is not None:
            deadlines.append(d)
        return min(deadlines, default=None)

    def close(self) -> None:
        for query in self.queries.values():
            query.on_done(query.results, sorted(query.waiting))
        self.queries.clear()
        if self.control is not None:
            self.control.close()
        if self.metrics is not None:
            self.metrics.close()
        for link in self.links.values():
            link.stream.close()
        self.links.clear()
        logging.getLogger(MASTER_LOGGER).removeHandler(self._log_handler)

    # -- workers ---------------------------------------------------------------------

    def _worker_message(self, pid: int, message: dict) -> None:
        kind = message.get("type")
        if kind == "report":
            self.stats.on_report(pid, message)
        elif kind == "closed":
            for row in message.get("rows", ()):
                self.events.append_row(row)
        elif kind == "reply":
            req = message.get("req")
            query = self.queries.get(req) if isinstance(req, int) else None
            if query is not None and pid in query.waiting:
                query.waiting.discard(pid)
                query.results[pid] = message.get("result")
                self._maybe_finish(req, query)
        elif kind == "hello":
            link = self.links.get(pid)
            if link is not None:
                link.ready = True
            self._check_waiters(time.monotonic())

    def _channel_broken(self, pid: int, stream: FramedStream, error: ProtocolError) -> None:
        log.error("worker %d sent a malformed report (%s); no more reports from it", pid, error)
        stream.close()

    def ask_workers(
        self,
        pids: list[int],
        command: dict[str, Any],
        on_done: Callable[[dict[int, Any], list[int]], None],
        timeout: float = QUERY_TIMEOUT,
    ) -> None:
        """Send ``command`` to each worker; ``on_done(results by pid, pids that did not answer)``."""
        req = next(self._req_ids)
        pids = [pid for pid in pids if pid in self.links and not self.links[pid].stream.closed]
        query = WorkerQuery(set(pids), on_done, time.monotonic() + timeout)
        self.queries[req] = query
        for pid in pids:
            self.links[pid].stream.send({**command, "req": req})
        self._maybe_finish(req, query)

    def _maybe_finish(self, req: int, query: WorkerQuery) -> None:
        if not query.waiting and self.queries.pop(req, None) is not None:
            query.on_done(query.results, [])

    def live_pids(self) -> list[int]:
        return [pid for pid, link in self.links.items() if not link.stream.closed]

    def is_ready(self, pid: int) -> bool:
        link = self.links.get(pid)
        return link is not None and link.ready

    # -- generation readiness --------------------------------------------------------

    def when_ready(self, generation: int, callback: Callable[[bool], None]) -> None:
        """``callback(True)`` once every worker of ``generation`` (or a newer one) accepts; False on timeout."""
        self.waiters.append(ReadyWaiter(generation, time.monotonic() + READY_TIMEOUT, callback))
        self._check_waiters(time.monotonic())

    def _generation_ready(self, generation: int) -> bool:
        arbiter = self.arbiter
        if arbiter.generation < generation:
            return False
        return all(slot.pid and self.is_ready(slot.pid) for slot in arbiter.slots)

    def _check_waiters(self, now: float) -> None:
        for waiter in list(self.waiters):
            ready = self._generation_ready(waiter.generation)
            if ready or now >= waiter.deadline:
                self.waiters.remove(waiter)
                waiter.callback(ready)

    # -- metrics ---------------------------------------------------------------------

    def render_metrics(self) -> str:
        arbiter = self.arbiter
        counters = self.stats.counters()
        return render_metrics(
            MetricsInput(
                counters=counters,
                active_by_endpoint=self.stats.active_by_endpoint(),
                endpoints=[e.name for e in arbiter.config.endpoints],
                limit_hits=limit_hits(counters),
                workers=sum(1 for s in arbiter.slots if s.pid),
                worker_restarts=arbiter.worker_restarts,
                generation=arbiter.generation,
                reloads=dict(arbiter.reloads),
                start_time=arbiter.started_at,
                dropped_events=self.stats.dropped_events(),
            )
        )


def open_files_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
