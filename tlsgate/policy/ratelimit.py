"""Sliding-window connection rate limits: the pure algorithm and a store interface.

The ``rate-limit`` action (tlsgate's extension for TLS endpoints) allows at most
``capacity`` new connections per ``rate`` seconds per bucket key, over a *sliding*
window: a connection is allowed when fewer than ``capacity`` allowed connections of
the same key started in the last ``rate`` seconds.  Rejected connections do not count.

The window is kept exactly, as a sliding log: each key's record is a ring of its
last ``capacity`` allowed start times, and a new connection is allowed when the
oldest of them is at least ``rate`` seconds old.  That costs ``capacity`` floats per
key but never lets a burst through at a window boundary, as the two-counter
approximation does.  A record is a plain mutable sequence of floats (slot 0 is the
ring's head index), so a store can keep it in shared memory
(``memoryview(...).cast("d")``) and every worker sees the same counts.

`RateLimitStore` is that seam: `MemoryStore` is the per-process store (tests,
``tlsgate policy test``, single worker); the worker layer provides the shared one.
`SlidingWindowLimiter` is what `engine.evaluate` receives.  The clock is injected.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, MutableSequence
from contextlib import contextmanager

EMPTY = -math.inf
"""An unused slot: older than any window."""


def new_record(capacity: int) -> list[float]:
    """A record for ``capacity``: head index 0, then ``capacity`` empty slots."""
    return [0.0] + [EMPTY] * capacity


def sliding_log_allow(record: MutableSequence[float], now: float, rate: float) -> bool:
    """Decide one connection and, when allowed, record it.  The caller holds the lock."""
    capacity = len(record) - 1
    head = int(record[0])
    if record[1 + head] > now - rate:  # the capacity-th last start is inside the window
        return False
    record[1 + head] = now
    record[0] = float((head + 1) % capacity)
    return True


def newest(record: MutableSequence[float]) -> float:
    """The latest recorded start (``EMPTY`` if none), for expiring idle keys."""
    capacity = len(record) - 1
    return record[1 + (int(record[0]) - 1) % capacity]


class RateLimitStore(ABC):
    """Keeps one record per key; `locked` gives exclusive access across all its users."""

    @abstractmethod
    def locked(self, key: str, capacity: int, now: float, rate: float):
        """Context manager yielding the key's record (created, or recreated when its
        capacity changed, e.g. after a reload), held exclusively until the block ends.
        ``now`` and ``rate`` let the store expire records idle for a whole window."""


class MemoryStore(RateLimitStore):
    """A process-local store: a dict of lists, pruned when it grows past ``max_keys``."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self.records: dict[str, tuple[float, list[float]]] = {}

    @contextmanager
    def locked(self, key: str, capacity: int, now: float, rate: float) -> Iterator[list[float]]:
        entry = self.records.get(key)
        if entry is None or len(entry[1]) != capacity + 1:
            if len(self.records) >= self.max_keys:
                self._prune(now)
            entry = (rate, new_record(capacity))
            self.records[key] = entry
        yield entry[1]

    def _prune(self, now: float) -> None:
        idle = [k for k, (rate, rec) in self.records.items() if newest(rec) <= now - rate]
        for key in idle:
            del self.records[key]
        while len(self.records) >= self.max_keys:  # all busy: drop the oldest keys
            del self.records[next(iter(self.records))]


class SlidingWindowLimiter:
    """``hit(key, capacity, rate)``: whether one more connection of ``key`` is allowed."""

    def __init__(
        self, store: RateLimitStore | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store if store is not None else MemoryStore()
        self.clock = clock

    def hit(self, key: str, capacity: int, rate: float, now: float | None = None) -> bool:
        if now is None:
            now = self.clock()
        with self.store.locked(key, capacity, now, rate) as record:
            return sliding_log_allow(record, now, rate)
