"""Pure data work of the dashboard: snapshots, rates, filters, keyed rows.

No Textual here: the poller (tui/poller.py) builds a `Snapshot` from the
gateway's answers, the app feeds it to these models, and the widgets only
render the rows they are handed. Keeping the work here keeps it testable and
measurable (scripts/bench_dashboard.py times it at 10,000 connections).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tlsgate.control.display import describe_event, human_age, human_bytes

__all__ = [
    "Snapshot",
    "RateHistory",
    "ConnectionsModel",
    "EventsModel",
    "parse_filter",
    "human_age",
    "human_bytes",
]

CLOSED_EVENT = "tcp_connection_closed.v0"


@dataclass
class Snapshot:
    """Everything one poll of the gateway returned."""

    status: dict[str, Any]
    endpoints: list[dict[str, Any]]
    connections: list[dict[str, Any]] | None
    """None when not asked for (the connections tab was not showing)."""
    limits: list[dict[str, Any]]
    worker_usage: dict[int, tuple[float, int]] = field(default_factory=dict)
    """pid -> (CPU %, RSS bytes), read with psutil on this machine."""
    fetched_at: float = field(default_factory=time.time)


class RateHistory:
    """Connections and bytes per second between successive snapshots, for the sparklines."""

    def __init__(self, points: int = 60):
        self.connections: deque[float] = deque(maxlen=points)
        self.bytes: deque[float] = deque(maxlen=points)
        self._last: tuple[float, int, int] | None = None

    def add(self, ts: float, totals: dict[str, Any]) -> None:
        connections = int(totals.get("connections_total", 0))
        moved = int(totals.get("bytes_in", 0)) + int(totals.get("bytes_out", 0))
        if self._last is not None:
            last_ts, last_conns, last_bytes = self._last
            elapsed = ts - last_ts
            if elapsed > 0:
                # A restarted gateway starts from zero: count that as no traffic, not negative traffic.
                self.connections.append(max(0, connections - last_conns) / elapsed)
                self.bytes.append(max(0, moved - last_bytes) / elapsed)
        self._last = (ts, connections, moved)

    def reset(self) -> None:
        self._last = None

    @property
    def connection_rate(self) -> float:
        return self.connections[-1] if self.connections else 0.0

    @property
    def byte_rate(self) -> float:
        return self.bytes[-1] if self.bytes else 0.0


# -- filters ---------------------------------------------------------------------------------


def parse_filter(
    text: str, fields: dict[str, str], default_fields: Iterable[str]
) -> Callable[[dict], bool] | None:
    """A predicate from ``"ep:app sni:shop 10.0"``: every term must match (case-insensitive substring);
    None for an empty filter.

    ``fields`` maps a prefix (``ep``) to a key of the row dict (``endpoint``); a
    term without a known prefix matches any of ``default_fields``.
    """
    terms: list[tuple[tuple[str, ...], str]] = []
    defaults = tuple(default_fields)
    for word in text.lower().split():
        prefix, colon, value = word.partition(":")
        if colon and prefix in fields:
            terms.append(((fields[prefix],), value))
        else:
            terms.append((defaults, word))
    if not terms:
        return None  # no filter: callers skip the per-row call

    def matches(row: dict) -> bool:
        for keys, value in terms:
            if not any(value in str(row.get(key) or "").lower() for key in keys):
                return False
        return True

    return matches


CONNECTION_FILTER_FIELDS = {
    "ep": "endpoint",
    "endpoint": "endpoint",
    "sni": "sni",
    "client": "client",
    "state": "state",
}
EVENT_FILTER_FIELDS = {
    "type": "type",
    "ep": "endpoint",
    "endpoint": "endpoint",
    "kind": "kind",
    "reason": "reason",
}


# -- connections -------------------------------------------------------------------------------

_NUMERIC = {"bytes_in", "bytes_out", "worker"}


class ConnectionsModel:
    """The live connections, keyed by id.

    `update` swaps in the new listing by key and counts what came and went; the
    cells of a row are formatted only when the table draws it (`rows` is a lazy
    mapping), so a refresh of 10,000 connections formats the 40 on screen, not
    all of them.
    """

    def __init__(self) -> None:
        self.raw: dict[str, dict[str, Any]] = {}
        self.now = 0.0
        self.rows = _FormattedRows(self)

    def update(self, connections: list[dict[str, Any]], now: float) -> tuple[int, int]:
        """Apply a new listing; returns how many connections were (added, removed)."""
        new = {conn["id"]: conn for conn in connections}
        old = self.raw
        added = sum(1 for key in new if key not in old)
        removed = len(old) - (len(new) - added)
        self.raw, self.now = new, now
        self.rows.clear()
        return added, removed

    def format(self, key: str) -> tuple[str, ...]:
        conn = self.raw[key]
        return (
            key,
            conn.get("endpoint") or "-",
            conn.get("client") or "",
            conn.get("sni") or "-",
            human_bytes(conn.get("bytes_in", 0)),
            human_bytes(conn.get("bytes_out", 0)),
            human_age(self.now - conn.get("start_ts", self.now)),
            conn.get("state") or "",
            conn.get("termination") or "",
            conn.get("upstream") or "-",
            str(conn.get("worker", "")),
        )

    def view(self, predicate: Callable[[dict], bool] | None, sort: str, reverse: bool) -> list[str]:
        """Ids of the rows that pass the filter (None: all), in display order."""
        raw = self.raw
        keys = (
            list(raw)
            if predicate is None
            else [key for key, conn in raw.items() if predicate(conn)]
        )
        if sort == "age":
            # Age is start time reversed: the newest connection is the youngest.
            keys.sort(key=lambda k: raw[k].get("start_ts", 0), reverse=not reverse)
        elif sort in _NUMERIC:
            keys.sort(key=lambda k: raw[k].get(sort) or 0, reverse=reverse)
        else:
            keys.sort(key=lambda k: str(raw[k].get(sort) or ""), reverse=reverse)
        return keys


class _FormattedRows(Mapping):
    """Row cells by id, formatted on first use since the last update."""

    def __init__(self, model: ConnectionsModel):
        self._model = model
        self._cache: dict[str, tuple[str, ...]] = {}

    def clear(self) -> None:
        self._cache.clear()

    def __getitem__(self, key: str) -> tuple[str, ...]:
        cells = self._cache.get(key)
        if cells is None:
            cells = self._cache[key] = self._model.format(key)
        return cells

    def __contains__(self, key: object) -> bool:
        return key in self._model.raw

    def __iter__(self):
        return iter(self._model.raw)

    def __len__(self) -> int:
        return len(self._model.raw)


# -- events ------------------------------------------------------------------------------------


def event_fields(event: dict) -> dict[str, Any]:
    """What the events table shows and filters on."""
    obj = event.get("object") or {}
    closed = event.get("event_type") == CLOSED_EVENT
    endpoint = (obj.get("endpoint") or {}).get("name") if closed else obj.get("endpoint")
    stamp = event.get("event_timestamp", "")
    try:
        # UTC, as the events file and `tlsgate events` show it.
        shown_time = datetime.fromisoformat(stamp.replace("Z", "+00:00")).strftime("%H:%M:%S")
    except ValueError:
        shown_time = stamp[:8]
    if closed:
        conn = obj.get("conn") or {}
        summary = (
            f"{obj.get('close_reason')}  {conn.get('client_ip')}:{conn.get('client_port')} "
            f"sni={conn.get('server_name') or '-'} in={human_bytes(conn.get('bytes_in', 0))} "
            f"out={human_bytes(conn.get('bytes_out', 0))}"
        )
        kind, reason = "closed", obj.get("close_reason")
    else:
        summary = obj.get("message", "")
        kind, reason = obj.get("kind", "log"), ""
    return {
        "time": shown_time,
        "type": "closed" if closed else obj.get("level", "info"),
        "kind": kind,
        "endpoint": endpoint or "",
        "reason": reason or "",
        "summary": summary,
        "line": describe_event(event),
    }


class EventsModel:
    """The recent events, newest last, capped; ids are the events' own ``event_id``."""

    def __init__(self, capacity: int = 2000):
        self.capacity = capacity
        self.events: dict[str, dict] = {}
        self.fields: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, tuple[str, ...]] = {}

    def add(self, events: Iterable[dict]) -> int:
        added = 0
        for event in events:
            key = event.get("event_id") or f"anon-{len(self.events)}-{time.monotonic_ns()}"
            if key in self.events:
                continue  # the backlog after a reconnect repeats what we have
            fields = event_fields(event)
            self.events[key] = event
            self.fields[key] = fields
            self.rows[key] = (
                fields["time"],
                fields["type"],
                fields["endpoint"] or "-",
                fields["summary"],
            )
            added += 1
        while len(self.events) > self.capacity:
            oldest = next(iter(self.events))
            del self.events[oldest], self.fields[oldest], self.rows[oldest]
        return added

    def view(self, predicate: Callable[[dict], bool] | None) -> list[str]:
        if predicate is None:
            return list(self.fields)
        return [key for key, fields in self.fields.items() if predicate(fields)]
