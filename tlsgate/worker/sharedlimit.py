"""The connection rate limiter whose counts every worker process shares.

`SharedRateLimiter` is what a worker hands to `policy.engine.evaluate` as
``rate_limiter`` (the ``rate-limit`` action calls ``hit``).  A per-process
`policy.ratelimit.SlidingWindowLimiter` would let N workers allow N times the limit;
this one keeps its counts in a file, ``<state_dir>/ratelimit.table``, that each worker
opens and maps ``MAP_SHARED``.  No master, no threads, no sockets: every worker of
every generation maps the same file, so a reload keeps the counts.

Algorithm: the sliding-window *counter* (two weighted windows), fixed-size per key
whatever the capacity.  Each key has the start of its current window (anchored at the
key's first hit), the count allowed in it and in the previous window; a hit is allowed
when ``prev * (1 - elapsed / rate) + cur < capacity`` and only allowed hits count.  A
burst in a fresh window gets exactly ``capacity``; in any ``rate``-second span fewer than
``2 * capacity`` get through (when the previous window's traffic was bunched at its
end), which the exact sliding log in `policy.ratelimit` avoids at ``capacity`` floats
per key.  A rate change (policy reload) restarts the key's count.

File layout (little-endian; never truncated or rewritten in place once published):

    header   64 bytes: magic, version, ways, slots, 16-byte random salt
    buckets  slots / 16 of them, 512 bytes each:
             16 key hashes (u64, 0 = empty), then 16 records
             (window start f64, rate f64, previous count u32, current count u32)

A key is blake2b(key, salt) truncated to 64 bits (the per-table salt stops anyone who
chooses bucket keys from aiming them all at one bucket).  It lives in bucket
``hash % buckets``, in any of the bucket's 16 ways: a bounded probe.  A new key takes
an empty way, else one whose counts have expired (window start + 2 * rate <= now: both
counts would be zero anyway), else the way that expires first -- a *live* key is
evicted and `evictions` counts it.  So a flood of more distinct keys than the table
holds makes the oldest keys forget their counts: they fail open for a window, and
every other key and every new key is still counted; nothing ever fails closed.

Locking: `fcntl.lockf` on the bucket's 512-byte range, held only while one record is
read and written -- a few microseconds, no I/O, nothing that yields -- so blocking in
a gevent worker is fine.  POSIX record locks are released by the kernel when a worker
dies (even by SIGKILL), and belong to the process, so a limiter inherited through
fork still excludes correctly -- and one OS thread per process may use the limiter
(a gevent worker has one).  Measured (docs/rate-limit.md, scripts/bench_sharedlimit.py,
2 CPUs): about 4 us per `hit`, 5 us with two processes on different keys and 8-10 us on
the same key, against 1.3 us for the in-process limiter and 11-15 us for one socketpair
round trip to a master; a robust pthread mutex in the map would save 1 us at the price
of ctypes and libc-specific layouts in a file shared across generations.

Creating and repairing the file: a worker writes a complete table to a temporary file
(0600, blocks allocated so a full disk cannot SIGBUS a mapped worker later) and
publishes it with ``link`` (the first of racing workers wins, the others open the
winner's).  A short or foreign file, or one others can access, is replaced by ``rename``
while its opener holds a lock on its header, re-checking first that nobody replaced it
already, so racing workers agree on one new table and workers still mapping the old
inode are never truncated under their feet.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import stat
import struct
import tempfile
import time
from pathlib import Path

from tlsgate.errors import TlsgateError

TABLE_NAME = "ratelimit.table"
"""The file's name inside ``state_dir``."""

MAGIC = b"tlsgRLT\x00"
VERSION = 1
WAYS = 16
HEADER = struct.Struct("<8sIIQ16s")
HEADER_SIZE = 64
HASHES = struct.Struct(f"<{WAYS}Q")
RECORD = struct.Struct("<ddII")
RECORDS = struct.Struct("<" + "ddII" * WAYS)
BUCKET_SIZE = HASHES.size + RECORDS.size
HASH_ONE = struct.Struct("<Q")
MAX_COUNT = 0xFFFF_FFFF
"""Counts are u32: a capacity above this is treated as this."""
_OPEN_ATTEMPTS = 8


def table_size(slots: int) -> int:
    """Bytes of a table with ``slots`` ways (a multiple of `WAYS`)."""
    return HEADER_SIZE + slots // WAYS * BUCKET_SIZE


def slide(
    start: float, slot_rate: float, prev: int, cur: int, now: float, rate: float
) -> tuple[float, int, int, float]:
    """Bring a key's record to ``now``: ``(window start, prev, cur, elapsed in window)``.

    A record of another rate, two or more windows old, from more than a window in the
    future (the clock stepped back) or unreadable (NaN) starts afresh at ``now``.  A
    start slightly after ``now`` is another worker whose clock read came a little later:
    that counts as the start of the window.
    """
    elapsed = now - start
    if slot_rate != rate or not -rate <= elapsed < 2 * rate:
        return now, 0, 0, 0.0
    if elapsed < 0:
        return start, prev, cur, 0.0
    if elapsed >= rate:
        return start + rate, cur, 0, elapsed - rate
    return start, prev, cur, elapsed


def sliding_counter_allow(prev: int, cur: int, elapsed: float, capacity: int, rate: float) -> bool:
    """Whether one more hit fits: previous window weighted by what is left of it, plus this one."""
    return prev * (1.0 - elapsed / rate) + cur < min(capacity, MAX_COUNT)


class SharedRateLimiter:
    """``hit(key, capacity, rate, now)``: may one more connection of ``key`` start now?

    Every process that opens the same ``path`` shares the counts.  ``slots`` (rounded
    up to a multiple of 16) bounds how many keys are remembered at once; a file made
    for another size is replaced.  Raises `OSError` if the file cannot be created.
    """

    def __init__(self, path: Path, slots: int = 65536) -> None:
        self.path = Path(path)
        self.slots = max(WAYS, -(-slots // WAYS) * WAYS)
        self.buckets = self.slots // WAYS
        self.evictions = 0
        """Live keys this process forgot to make room for a new one (table too small)."""
        self._fd, self._salt = _open_table(self.path, self.slots)
        self._map = mmap.mmap(self._fd, table_size(self.slots), mmap.MAP_SHARED)

    def key_hash(self, key: str) -> int:
        digest = hashlib.blake2b(key.encode(), digest_size=8, key=self._salt).digest()
        return int.from_bytes(digest, "little") or 1  # 0 marks an empty way

    def hit(self, key: str, capacity: int, rate: float, now: float | None = None) -> bool:
        if now is None:
            now = time.time()
        h = self.key_hash(key)
        base = HEADER_SIZE + h % self.buckets * BUCKET_SIZE
        # Nothing between lock and unlock may yield to another greenlet or block.
        fcntl.lockf(self._fd, fcntl.LOCK_EX, BUCKET_SIZE, base)
        try:
            hashes = HASHES.unpack_from(self._map, base)
            if h in hashes:
                way = hashes.index(h)
                offset = base + HASHES.size + way * RECORD.size
                start, slot_rate, prev, cur = RECORD.unpack_from(self._map, offset)
            else:
                way = self._victim(base, hashes, now)
                offset = base + HASHES.size + way * RECORD.size
                start, slot_rate, prev, cur = now, rate, 0, 0
            start, prev, cur, elapsed = slide(start, slot_rate, prev, cur, now, rate)
            allowed = sliding_counter_allow(prev, cur, elapsed, capacity, rate)
            # Record before hash: a worker killed in between leaves one key's counts
            # wrong for two windows at most, never a malformed table.
            RECORD.pack_into(self._map, offset, start, rate, prev, cur + allowed)
            if hashes[way] != h:
                HASH_ONE.pack_into(self._map, base + way * HASH_ONE.size, h)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, BUCKET_SIZE, base)
        return allowed

    def _victim(self, base: int, hashes: tuple[int, ...], now: float) -> int:
        """The way a new key takes: empty, else expired, else the one expiring first."""
        if 0 in hashes:
            return hashes.index(0)
        records = RECORDS.unpack_from(self._map, base + HASHES.size)
        victim, victim_expiry = 0, math.inf
        for way in range(WAYS):
            expiry = records[4 * way] + 2 * records[4 * way + 1]
            if not expiry > now:  # expired, or unreadable (NaN)
                return way
            if expiry < victim_expiry:
                victim, victim_expiry = way, expiry
        self.evictions += 1
        return victim

    def close(self) -> None:
        """Unmap and close.  (POSIX locks are per process: closing any descriptor of the
        file drops this process's locks on it -- harmless, as none is held between calls.)"""
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SharedRateLimiter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _open_table(path: Path, slots: int) -> tuple[int, bytes]:
    """Open (creating or replacing as needed) a valid table: ``(fd, salt)``."""
    for _ in range(_OPEN_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            _publish_new_table(path, slots, replace=False)
            continue
        salt = None
        try:
            salt = _valid_salt(fd, slots)
            if salt is not None:
                return fd, salt
            # One replacer per bad file: the others wait here, then see a new inode.
            fcntl.lockf(fd, fcntl.LOCK_EX, HEADER_SIZE, 0)
            if _same_file(fd, path):
                _publish_new_table(path, slots, replace=True)
        finally:
            if salt is None:
                os.close(fd)
    raise TlsgateError(f"{path}: replaced by other processes {_OPEN_ATTEMPTS} times in a row")


def _valid_salt(fd: int, slots: int) -> bytes | None:
    """The table's salt if it is a complete table of ``slots`` only we can access."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
        return None
    if info.st_size != table_size(slots):
        return None
    raw = os.pread(fd, HEADER.size, 0)
    if len(raw) != HEADER.size:
        return None
    magic, version, ways, file_slots, salt = HEADER.unpack(raw)
    return salt if (magic, version, ways, file_slots) == (MAGIC, VERSION, WAYS, slots) else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _publish_new_table(path: Path, slots: int, *, replace: bool) -> None:
    """Write a complete empty table beside ``path``, then link it in (or rename over)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.posix_fallocate(fd, 0, table_size(slots))  # zeros: every way empty
        header = HEADER.pack(MAGIC, VERSION, WAYS, slots, os.urandom(16))
        os.pwrite(fd, header, 0)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another worker published first; the caller opens theirs
    finally:
        os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass  # renamed into place
