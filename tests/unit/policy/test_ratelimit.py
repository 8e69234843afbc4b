"""The sliding-window limiter, driven by a fake clock."""

from __future__ import annotations

from tlsgate.policy.ratelimit import (
    MemoryStore,
    SlidingWindowLimiter,
    new_record,
    sliding_log_allow,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_capacity_per_window_then_refused():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(clock=clock)
    assert [limiter.hit("k", 3, 60.0) for _ in range(4)] == [True, True, True, False]


def test_window_slides_one_connection_at_a_time():
    clock = FakeClock(0.0)
    limiter = SlidingWindowLimiter(clock=clock)
    for t in (0.0, 10.0, 20.0):
        clock.now = t
        assert limiter.hit("k", 3, 60.0)
    clock.now = 59.9
    assert not limiter.hit("k", 3, 60.0)
    clock.now = 60.0  # the first connection is now a whole window old
    assert limiter.hit("k", 3, 60.0)
    assert not limiter.hit("k", 3, 60.0)
    clock.now = 70.0
    assert limiter.hit("k", 3, 60.0)


def test_no_burst_across_a_window_boundary():
    # A fixed or two-counter window would let another 3 through just after t=60.
    clock = FakeClock(59.0)
    limiter = SlidingWindowLimiter(clock=clock)
    assert all(limiter.hit("k", 3, 60.0) for _ in range(3))
    clock.now = 61.0
    assert not limiter.hit("k", 3, 60.0)
    clock.now = 119.0
    assert limiter.hit("k", 3, 60.0)


def test_refused_connections_do_not_count():
    clock = FakeClock(0.0)
    limiter = SlidingWindowLimiter(clock=clock)
    assert limiter.hit("k", 1, 10.0)
    for t in (1.0, 5.0, 9.0):
        clock.now = t
        assert not limiter.hit("k", 1, 10.0)
    clock.now = 10.0
    assert limiter.hit("k", 1, 10.0)


def test_keys_are_independent_and_now_overrides_the_clock():
    limiter = SlidingWindowLimiter(clock=FakeClock(0.0))
    assert limiter.hit("a", 1, 60.0) and limiter.hit("b", 1, 60.0)
    assert not limiter.hit("a", 1, 60.0)
    assert limiter.hit("a", 1, 60.0, now=60.0)


def test_changed_capacity_starts_a_fresh_record():
    limiter = SlidingWindowLimiter(clock=FakeClock(0.0))
    assert limiter.hit("k", 1, 60.0)
    assert not limiter.hit("k", 1, 60.0)
    assert limiter.hit("k", 2, 60.0)


def test_store_prunes_idle_keys_first():
    store = MemoryStore(max_keys=2)
    limiter = SlidingWindowLimiter(store, clock=FakeClock(0.0))
    limiter.hit("old", 1, 10.0, now=0.0)
    limiter.hit("busy", 1, 10.0, now=15.0)
    limiter.hit("new", 1, 10.0, now=16.0)  # "old" is idle for a whole window: dropped
    assert set(store.records) == {"busy", "new"}


def test_record_works_on_a_shared_memory_view():
    import array

    buffer = array.array("d", new_record(2))
    view = memoryview(buffer).cast("B").cast("d")
    assert sliding_log_allow(view, 0.0, 5.0)
    assert sliding_log_allow(view, 1.0, 5.0)
    assert not sliding_log_allow(view, 2.0, 5.0)
    assert sliding_log_allow(view, 5.0, 5.0)
    assert list(buffer) == [1.0, 5.0, 1.0]
