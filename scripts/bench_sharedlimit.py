"""Measure `SharedRateLimiter.hit` against the alternatives a gateway could use.

Run: ``python scripts/bench_sharedlimit.py [iterations]``.  Prints microseconds per
operation, the median of several runs, for:

- the in-process `SlidingWindowLimiter` (exact sliding log; what one worker alone uses);
- `SharedRateLimiter.hit` in one process, on one key and cycling over 10,000 keys;
- two processes hammering the same key (same bucket lock) and different keys
  (different buckets), started together by a barrier; each process's own time per hit;
- a master-held counter, estimated by its floor: one request/reply round trip over a
  socketpair between two processes (the master's own work not included);
- the lock primitives alone (lock + unlock, uncontended): ``lockf`` on a byte range,
  ``flock`` on the whole file, and Linux open-file-description locks.

The table lives in a temporary directory; nothing else is touched.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from tlsgate.policy.ratelimit import SlidingWindowLimiter  # noqa: E402
from tlsgate.worker.sharedlimit import SharedRateLimiter  # noqa: E402

RUNS = 5
CAPACITY = 100
RATE = 60.0
MANY_KEYS = [f"ep_1/per-ip/10.0.{i // 256}.{i % 256}" for i in range(10_000)]


def per_op(loop, iterations: int) -> float:
    """Median over `RUNS` of microseconds per iteration of ``loop(iterations)``."""
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        loop(iterations)
        times.append((time.perf_counter() - start) / iterations * 1e6)
    return statistics.median(times)


def hits_one_key(limiter, key: str = "ep_1/per-ip/203.0.113.7"):
    def loop(n: int) -> None:
        hit, now = limiter.hit, 1_000.0
        for i in range(n):
            hit(key, CAPACITY, RATE, now + i * 1e-3)

    return loop


def hits_many_keys(limiter):
    def loop(n: int) -> None:
        hit, keys, count, now = limiter.hit, MANY_KEYS, len(MANY_KEYS), 1_000.0
        for i in range(n):
            hit(keys[i % count], CAPACITY, RATE, now + i * 1e-3)

    return loop


def _hammer(path: Path, key: str, iterations: int, barrier, results) -> None:
    with SharedRateLimiter(path) as limiter:
        barrier.wait()
        results.put(per_op(hits_one_key(limiter, key), iterations))


def two_processes(path: Path, keys: tuple[str, str], iterations: int) -> list[float]:
    """Each process's µs per hit while both run at once."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(path, k, iterations, barrier, results)) for k in keys
    ]
    for proc in procs:
        proc.start()
    figures = sorted(results.get(timeout=600) for _ in procs)
    for proc in procs:
        proc.join()
    return figures


def keys_in_different_buckets(limiter: SharedRateLimiter) -> tuple[str, str]:
    first = "ep_1/per-ip/198.51.100.1"
    bucket = limiter.key_hash(first) % limiter.buckets
    other = next(k for k in MANY_KEYS if limiter.key_hash(k) % limiter.buckets != bucket)
    return first, other


def socketpair_round_trip(iterations: int) -> float:
    """µs per 32-byte request + 1-byte reply between two processes."""
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the "master": answer every request
        parent.close()
        try:
            while child.recv(32):
                child.sendall(b"1")
        finally:
            os._exit(0)
    child.close()
    request = b"x" * 32

    def loop(n: int) -> None:
        for _ in range(n):
            parent.sendall(request)
            parent.recv(1)

    try:
        return per_op(loop, iterations)
    finally:
        parent.close()
        os.waitpid(pid, 0)


def lock_pairs(path: Path, iterations: int) -> dict[str, float]:
    fd = os.open(path, os.O_RDWR)
    flock_struct = "hhxxxxqqixxxx"  # struct flock on Linux x86_64/aarch64
    lock = struct.pack(flock_struct, fcntl.F_WRLCK, os.SEEK_SET, 4096, 512, 0)
    unlock = struct.pack(flock_struct, fcntl.F_UNLCK, os.SEEK_SET, 4096, 512, 0)

    def lockf_loop(n: int) -> None:
        for _ in range(n):
            fcntl.lockf(fd, fcntl.LOCK_EX, 512, 4096)
            fcntl.lockf(fd, fcntl.LOCK_UN, 512, 4096)

    def flock_loop(n: int) -> None:
        for _ in range(n):
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.flock(fd, fcntl.LOCK_UN)

    def ofd_loop(n: int) -> None:
        for _ in range(n):
            fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, lock)
            fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, unlock)

    try:
        figures = {"lockf byte range": per_op(lockf_loop, iterations)}
        figures["flock whole file"] = per_op(flock_loop, iterations)
        if hasattr(fcntl, "F_OFD_SETLKW"):
            figures["OFD lock byte range"] = per_op(ofd_loop, iterations)
        return figures
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    iterations = int(argv[1]) if len(argv) > 1 else 100_000
    print(f"{iterations} iterations, median of {RUNS} runs, {os.cpu_count()} CPUs")
    rows = []
    memory = SlidingWindowLimiter()
    rows.append(
        ("in-process SlidingWindowLimiter, one key", per_op(hits_one_key(memory), iterations))
    )
    memory = SlidingWindowLimiter()
    rows.append(
        ("in-process SlidingWindowLimiter, 10k keys", per_op(hits_many_keys(memory), iterations))
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ratelimit.table"
        with SharedRateLimiter(path) as shared:
            rows.append(
                ("SharedRateLimiter, 1 process, one key", per_op(hits_one_key(shared), iterations))
            )
            rows.append(
                (
                    "SharedRateLimiter, 1 process, 10k keys",
                    per_op(hits_many_keys(shared), iterations),
                )
            )
            different = keys_in_different_buckets(shared)
        same = two_processes(path, ("ep_1/per-ip/203.0.113.7",) * 2, iterations)
        rows.append(("SharedRateLimiter, 2 processes, same key (each)", statistics.mean(same)))
        apart = two_processes(path, different, iterations)
        rows.append(
            ("SharedRateLimiter, 2 processes, different keys (each)", statistics.mean(apart))
        )
        rows.append(("socketpair round trip to another process", socketpair_round_trip(iterations)))
        for name, figure in lock_pairs(path, iterations).items():
            rows.append((f"{name}: lock + unlock", figure))
    width = max(len(name) for name, _ in rows)
    for name, figure in rows:
        print(f"{name:<{width}}  {figure:7.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
