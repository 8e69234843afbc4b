"""The shared rate-limit table: real files, real mmaps, real forked processes.

Time is injected through ``now`` everywhere, so nothing depends on how fast the
machine runs; concurrency tests start their processes together at a barrier and
count what was allowed in total.
"""

from __future__ import annotations

import fcntl
import math
import multiprocessing
import os
import signal
import stat

import pytest

from tlsgate.worker.sharedlimit import (
    BUCKET_SIZE,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    WAYS,
    SharedRateLimiter,
    slide,
    table_size,
)

FORK = multiprocessing.get_context("fork")
NOW = 1_000.0


@pytest.fixture
def table(tmp_path):
    return tmp_path / "ratelimit.table"


def allowed(limiter, key, count, capacity, rate, now):
    return sum(limiter.hit(key, capacity, rate, now) for _ in range(count))


# -- one process ----------------------------------------------------------------------


def test_burst_in_fresh_window_allows_exactly_capacity(table):
    with SharedRateLimiter(table) as limiter:
        results = [limiter.hit("ep/per-ip/192.0.2.1", 10, 60.0, NOW) for _ in range(25)]
    assert results == [True] * 10 + [False] * 15


def test_window_slides_weighting_the_previous_one(table):
    with SharedRateLimiter(table) as limiter:
        assert allowed(limiter, "k", 15, 10, 10.0, 0.0) == 10
        assert allowed(limiter, "k", 15, 10, 10.0, 9.0) == 0  # same window, full
        assert allowed(limiter, "k", 15, 10, 10.0, 10.0) == 0  # prev 10 weighted 1.0
        assert allowed(limiter, "k", 15, 10, 10.0, 12.5) == 3  # 7.5 + cur < 10: cur 0, 1, 2
        assert allowed(limiter, "k", 15, 10, 10.0, 15.0) == 2  # 5 + cur < 10: cur 3, 4
        assert allowed(limiter, "k", 15, 10, 10.0, 20.0) == 5  # prev is now 5, weighted 1.0
        assert allowed(limiter, "k", 15, 10, 10.0, 40.0) == 10  # two windows idle: fresh


def test_keys_are_independent(table):
    with SharedRateLimiter(table) as limiter:
        assert allowed(limiter, "ep/a/198.51.100.1", 5, 3, 60.0, NOW) == 3
        assert allowed(limiter, "ep/a/198.51.100.2", 5, 3, 60.0, NOW) == 3
        assert allowed(limiter, "ep/b/198.51.100.1", 5, 4, 60.0, NOW) == 4


def test_changed_rate_restarts_the_count(table):
    with SharedRateLimiter(table) as limiter:
        assert allowed(limiter, "k", 5, 3, 60.0, NOW) == 3
        assert allowed(limiter, "k", 5, 3, 30.0, NOW + 1) == 3  # a reload changed the rate


def test_changed_capacity_keeps_the_count(table):
    with SharedRateLimiter(table) as limiter:
        assert allowed(limiter, "k", 5, 3, 60.0, NOW) == 3
        assert allowed(limiter, "k", 5, 5, 60.0, NOW + 1) == 2


def test_default_now_is_the_wall_clock(table):
    with SharedRateLimiter(table) as limiter:
        assert limiter.hit("k", 1, 3600.0) is True
        assert limiter.hit("k", 1, 3600.0) is False


def test_slide_tolerates_a_slightly_earlier_clock_and_restarts_on_nonsense():
    # Another worker rolled the window with a clock read a little later than ours.
    assert slide(100.0, 10.0, 4, 6, 99.9, 10.0) == (100.0, 4, 6, 0.0)
    # The clock stepped back by more than a window: do not stay limited for hours.
    assert slide(100.0, 10.0, 4, 6, 50.0, 10.0) == (50.0, 0, 0, 0.0)
    assert slide(math.nan, 10.0, 4, 6, 50.0, 10.0) == (50.0, 0, 0, 0.0)
    assert slide(100.0, math.nan, 4, 6, 105.0, 10.0) == (105.0, 0, 0, 0.0)
    assert slide(100.0, 10.0, 4, 6, 112.0, 10.0) == (110.0, 6, 0, 2.0)


# -- several processes ----------------------------------------------------------------


def _hammer(path, inherited, key, attempts, barrier, results):
    limiter = inherited or SharedRateLimiter(path)
    barrier.wait()
    results.put(allowed(limiter, key, attempts, 1000, 60.0, NOW))


def run_together(count, target, args):
    barrier, results = FORK.Barrier(count), FORK.Queue()
    procs = [FORK.Process(target=target, args=(*args, barrier, results)) for _ in range(count)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    return outcomes


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_on_one_key_allow_exactly_capacity_in_total(table, processes):
    counts = run_together(processes, _hammer, (table, None, "ep/per-ip/203.0.113.9", 1000))
    assert sum(counts) == 1000
    with SharedRateLimiter(table) as limiter:
        assert limiter.hit("ep/per-ip/203.0.113.9", 1000, 60.0, NOW) is False


def test_limiter_inherited_through_fork_still_excludes(table):
    # POSIX record locks belong to the process, so each child locks on its own.
    with SharedRateLimiter(table) as inherited:
        counts = run_together(4, _hammer, (table, inherited, "shared", 1000))
    assert sum(counts) == 1000


def _open_and_hit(path, barrier, results):
    if barrier is not None:
        barrier.wait()
    with SharedRateLimiter(path) as limiter:
        inode = os.fstat(limiter._fd).st_ino
        results.put((inode, allowed(limiter, "k", 300, 500, 60.0, NOW)))


def test_processes_racing_to_create_the_table_share_one(table):
    outcomes = run_together(4, _open_and_hit, (table,))
    assert len({inode for inode, _ in outcomes}) == 1
    assert os.stat(table).st_ino == outcomes[0][0]
    assert sum(count for _, count in outcomes) == 500
    assert os.listdir(table.parent) == [table.name]  # no temporary files left


def waiting_for_lock(inode: int) -> int:
    """How many lock requests the kernel has queued on ``inode`` (Linux /proc/locks)."""
    with open("/proc/locks") as locks:
        return sum(" -> " in line and f":{inode} " in line for line in locks)


def test_processes_racing_to_replace_a_corrupt_table_share_one(table):
    table.write_bytes(b"not a table" * 10)
    table.chmod(0o600)
    # Hold the replacer's lock ourselves until all four found the same bad file and
    # queued behind it: then each must notice the one before it replaced the file.
    fd = os.open(table, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX, HEADER_SIZE, 0)
    results = FORK.Queue()
    procs = [FORK.Process(target=_open_and_hit, args=(table, None, results)) for _ in range(4)]
    for proc in procs:
        proc.start()
    while waiting_for_lock(os.fstat(fd).st_ino) < 4:
        assert all(proc.is_alive() for proc in procs)
        os.sched_yield()
    os.close(fd)
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    assert len({inode for inode, _ in outcomes}) == 1
    assert os.stat(table).st_ino == outcomes[0][0]
    assert sum(count for _, count in outcomes) == 500
    assert os.listdir(table.parent) == [table.name]


def _hold_bucket_lock_forever(path, key, ready):
    limiter = SharedRateLimiter(path)
    base = HEADER_SIZE + limiter.key_hash(key) % limiter.buckets * BUCKET_SIZE
    fcntl.lockf(limiter._fd, fcntl.LOCK_EX, BUCKET_SIZE, base)
    ready.send(b"locked")
    signal.pause()


@pytest.mark.timeout(60)
def test_a_killed_holder_does_not_wedge_the_others(table):
    reader, writer = FORK.Pipe(duplex=False)
    holder = FORK.Process(target=_hold_bucket_lock_forever, args=(table, "k", writer))
    holder.start()
    assert reader.recv() == b"locked"
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    with SharedRateLimiter(table) as limiter:
        assert limiter.hit("k", 1, 60.0, NOW) is True  # would block forever if still held


# -- the file -------------------------------------------------------------------------


def test_file_is_private_and_complete(table):
    with SharedRateLimiter(table, slots=100) as limiter:
        assert limiter.slots == 112  # rounded up to whole buckets
    info = os.stat(table)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_size == table_size(112)
    magic, version, ways, slots, salt = HEADER.unpack(table.read_bytes()[: HEADER.size])
    assert (magic, version, ways, slots) == (MAGIC, VERSION, WAYS, 112)
    assert salt != bytes(16)


def test_reopening_keeps_the_counts(table):
    with SharedRateLimiter(table) as first_generation:
        assert allowed(first_generation, "k", 6, 10, 60.0, NOW) == 6
        with SharedRateLimiter(table) as overlapping:
            assert allowed(overlapping, "k", 1, 10, 60.0, NOW) == 1
    with SharedRateLimiter(table) as next_generation:
        assert allowed(next_generation, "k", 10, 10, 60.0, NOW + 1) == 3


def _valid_header(slots):
    return HEADER.pack(MAGIC, VERSION, WAYS, slots, b"s" * 16).ljust(HEADER_SIZE, b"\0")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00" * 10,
        _valid_header(WAYS),  # header only: short
        b"garbage!" * (table_size(WAYS) // 8),  # right size, wrong magic
        _valid_header(2 * WAYS).ljust(table_size(2 * WAYS), b"\0"),  # another size
    ],
    ids=["empty", "short", "truncated", "bad-magic", "other-size"],
)
def test_corrupt_or_short_file_is_replaced(table, content):
    table.write_bytes(content)
    table.chmod(0o600)
    with SharedRateLimiter(table, slots=WAYS) as limiter:
        assert allowed(limiter, "k", 3, 2, 60.0, NOW) == 2
    assert os.stat(table).st_size == table_size(WAYS)
    assert HEADER.unpack(table.read_bytes()[: HEADER.size])[:4] == (MAGIC, VERSION, WAYS, WAYS)


def test_world_readable_table_is_replaced(table):
    with SharedRateLimiter(table) as limiter:
        assert allowed(limiter, "k", 3, 2, 60.0, NOW) == 2
    table.chmod(0o644)
    with SharedRateLimiter(table) as limiter:
        assert allowed(limiter, "k", 3, 2, 60.0, NOW) == 2  # a fresh table
    assert stat.S_IMODE(os.stat(table).st_mode) == 0o600


def test_replacing_leaves_workers_on_the_old_table_running(table):
    old = SharedRateLimiter(table, slots=WAYS)
    assert allowed(old, "k", 1, 5, 60.0, NOW) == 1
    with SharedRateLimiter(table, slots=4 * WAYS) as new:  # new generation, new size
        assert allowed(new, "k", 5, 5, 60.0, NOW) == 5
    assert allowed(old, "k", 5, 5, 60.0, NOW) == 4  # its mapping was never truncated
    old.close()


# -- a full table ---------------------------------------------------------------------


def test_full_bucket_evicts_the_stalest_key(table):
    with SharedRateLimiter(table, slots=WAYS) as limiter:  # one bucket: every key collides
        for i in range(WAYS):
            assert limiter.hit(f"key{i}", 1, 100.0, float(i)) is True
        assert limiter.hit("newcomer", 1, 100.0, 20.0) is True
        assert limiter.evictions == 1
        assert [limiter.hit(f"key{i}", 1, 100.0, 20.0) for i in range(1, WAYS)] == [False] * 15
        assert limiter.hit("newcomer", 1, 100.0, 20.0) is False
        assert limiter.hit("key0", 1, 100.0, 20.0) is True  # forgotten: fails open


def test_expired_keys_make_room_before_live_ones(table):
    with SharedRateLimiter(table, slots=WAYS) as limiter:
        assert limiter.hit("old", 1, 10.0, 0.0) is True
        for i in range(1, WAYS):
            assert limiter.hit(f"key{i}", 1, 10.0, 15.0) is True
        assert limiter.hit("newcomer", 1, 10.0, 21.0) is True  # "old" expired at 20
        assert limiter.evictions == 0
        assert [limiter.hit(f"key{i}", 1, 10.0, 21.0) for i in range(1, WAYS)] == [False] * 15


def test_key_flood_beyond_the_table_fails_open_never_closed(table):
    with SharedRateLimiter(table, slots=2 * WAYS) as limiter:
        first_hits = [limiter.hit(f"flood{i}", 1, 60.0, NOW) for i in range(1000)]
        assert first_hits == [True] * 1000
        assert limiter.evictions == 1000 - 2 * WAYS
        assert limiter.hit("victim", 1, 60.0, NOW) is True
        assert limiter.hit("victim", 1, 60.0, NOW) is False  # new keys are still counted
