"""The dashboard's only reader of the gateway: polls, follows events, reconnects.

Runs as one exclusive Textual worker (started by tui/app.py). Each round asks
for status, endpoints, connections and limits at once over the one client
(tui/client.py), reads CPU and memory of the workers with psutil, and posts a
`SnapshotReceived`; events that arrived since the last flush go out as one
`EventsReceived`. When the socket fails it posts `GatewayDisconnected`, and
keeps trying to connect again every `RECONNECT_DELAY` seconds. Nothing here
touches a widget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import psutil
from textual.message import Message

from tlsgate.control.client import ControlError, GatewayNotRunning
from tui.client import GatewaySource
from tui.messages import EventsReceived, GatewayConnected, GatewayDisconnected, SnapshotReceived
from tui.model import Snapshot

log = logging.getLogger(__name__)

RECONNECT_DELAY = 1.0
EVENT_FLUSH = 0.25
BACKLOG = 500


class Poller:
    def __init__(
        self,
        source: GatewaySource,
        post: Callable[[Message], object],
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        usage: Callable[[list[int]], dict[int, tuple[float, int]]] | None = None,
        want_connections: Callable[[], bool] = lambda: True,
    ):
        self.source = source
        self.want_connections = want_connections
        """Listing every connection is the costly request: skip it while nobody looks at them."""
        self.post = post
        self.interval = interval
        self.clock = clock
        self.usage = usage or self._usage
        self._events: list[dict] = []
        self._processes: dict[int, psutil.Process] = {}

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            # Cancelled when the app exits: leave no socket behind.
            await asyncio.shield(self.source.close())

    async def _run(self) -> None:
        while True:
            try:
                await self.source.connect()
                self.post(GatewayConnected(self.source.path))
                backlog = await self.source.subscribe(BACKLOG, self._events.append)
                self.post(EventsReceived(list(backlog)))
                while True:
                    self.post(SnapshotReceived(await self.fetch()))
                    await self._wait_flushing_events(self.interval)
            except (GatewayNotRunning, ConnectionError, OSError, TimeoutError, ControlError) as e:
                self.post(GatewayDisconnected(self.source.path, str(e)))
                await self.source.close()
                await asyncio.sleep(RECONNECT_DELAY)

    async def fetch(self) -> Snapshot:
        requests = [self.source.request(name) for name in ("status", "endpoints.list", "limits")]
        if self.want_connections():
            requests.append(self.source.request("connections.list"))
        status, endpoints, limits, *connections = await asyncio.gather(*requests)
        snapshot = Snapshot(
            status=status,
            endpoints=endpoints["endpoints"],
            connections=connections[0]["connections"] if connections else None,
            limits=limits["limits"],
            worker_usage=self.usage([w["pid"] for w in status["workers"] if w.get("pid")]),
            fetched_at=self.clock(),
        )
        return snapshot

    def _usage(self, pids: list[int]) -> dict[int, tuple[float, int]]:
        usage = {}
        for pid in pids:
            process = self._processes.get(pid)
            try:
                if process is None:
                    process = self._processes[pid] = psutil.Process(pid)
                usage[pid] = (process.cpu_percent(None), process.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                usage[pid] = (0.0, 0)
        for pid in list(self._processes):
            if pid not in pids:
                del self._processes[pid]
        return usage

    async def _wait_flushing_events(self, seconds: float) -> None:
        remaining = seconds
        while remaining > 0:
            step = min(EVENT_FLUSH, remaining)
            await asyncio.sleep(step)
            remaining -= step
            self.flush_events()

    def flush_events(self) -> None:
        if self._events:
            # Copy and clear in place: the client holds a reference to this list's append.
            events = list(self._events)
            self._events.clear()
            self.post(EventsReceived(events))
