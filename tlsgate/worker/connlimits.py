"""Open-connection limits for the whole gateway, counted across worker processes.

`[limits] max_connections` caps the gateway's open client connections and
`max_connections_per_ip` those of one client IP, both for all workers together (not
once per worker). Every worker maps the same file, ``<state_dir>/connections.table``
(created afresh by the master at start), and owns one *slot* in it: its live count and
a small table of per-IP counts. A slot has exactly one writer, so counting needs no
lock; admitting a connection sums the slots (a few microseconds). Two workers
admitting at the same instant may overshoot a limit by one each, which is the price
of not locking on every accept.

A slot is claimed under a file lock when a worker starts; slots of processes that no
longer exist (a SIGKILLed worker) are wiped then, so their connections stop counting.
A per-IP table that is full (more distinct client IPs than it holds) stops counting new
IPs for that worker: the limit then fails open for them, never closed for everyone.

Layout (native byte order): header of 64 bytes (magic, version, high-water slot count),
then `SLOTS` slot heads of 16 bytes (pid u32, pad u32, live u64), then `SLOTS` per-IP
tables of `IP_ENTRIES` entries of 8 bytes (ip hash u32, count u32).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import zlib
from pathlib import Path

TABLE_NAME = "connections.table"
MAGIC = 0x746C_7367_636F_6E6E  # "tlsgconn"
VERSION = 1
SLOTS = 256
IP_ENTRIES = 4096
PROBES = 16
HEADER = 64
HEAD_SIZE = 16
_HEADER = struct.Struct("=QII")
FILE_SIZE = HEADER + SLOTS * HEAD_SIZE + SLOTS * IP_ENTRIES * 8


def create_table(path: Path) -> None:
    """A fresh, zeroed table (the master calls this at start: old counts are meaningless)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, FILE_SIZE)  # sparse: pages appear only where counts are written
        os.pwrite(fd, _HEADER.pack(MAGIC, VERSION, 0), 0)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def default_max_connections(workers: int) -> int:
    """What the descriptor limit allows: a relayed connection holds 2 descriptors, up to 4
    while a bulk transfer has a pipe; keep some for listeners, logs and the channel."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, workers * max(1, (soft - 64) // 4))


class ConnectionLimits:
    """One worker's view of the shared table; `admit` before serving, `release` after."""

    def __init__(self, path: Path, max_connections: int, max_per_ip: int):
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._map = mmap.mmap(self._fd, FILE_SIZE, mmap.MAP_SHARED)
        self._heads = memoryview(self._map)[HEADER : HEADER + SLOTS * HEAD_SIZE].cast("Q")
        self._ips = memoryview(self._map)[HEADER + SLOTS * HEAD_SIZE :].cast("I")
        self.slot = self._claim()
        self._live = 0

    # -- per connection --------------------------------------------------------------

    def admit(self, ip: str) -> str | None:
        """Count one new connection, or say which limit it would break (and count nothing)."""
        high = self._high()
        if sum(self._heads[1 : 2 * high : 2]) >= self.max_connections:
            return "max_connections"
        if self.max_per_ip:
            key = _ip_key(ip)
            if self._ip_total(key, high) >= self.max_per_ip:
                return "max_connections_per_ip"
            self._ip_add(key, 1)
        self._live += 1
        self._heads[2 * self.slot + 1] = self._live
        return None

    def release(self, ip: str) -> None:
        self._live -= 1
        self._heads[2 * self.slot + 1] = self._live
        if self.max_per_ip:
            self._ip_add(_ip_key(ip), -1)

    def total(self) -> int:
        return sum(self._heads[1 : 2 * self._high() : 2])

    def close(self) -> None:
        """Give the slot back (a clean exit); a killed worker's slot is wiped by the next claim."""
        self._wipe(self.slot)
        self._heads.release()
        self._ips.release()
        self._map.close()
        os.close(self._fd)

    # -- the shared table ------------------------------------------------------------

    def _high(self) -> int:
        return _HEADER.unpack_from(self._map, 0)[2]

    def _claim(self) -> int:
        fcntl.lockf(self._fd, fcntl.LOCK_EX, HEADER, 0)
        try:
            magic, version, high = _HEADER.unpack_from(self._map, 0)
            if (magic, version) != (MAGIC, VERSION):
                raise OSError(f"{TABLE_NAME} is not a connection table (magic {magic:#x})")
            free = None
            for slot in range(high):
                pid = self._heads[2 * slot] & 0xFFFF_FFFF
                if pid and not _alive(pid):
                    self._wipe(slot)  # a killed worker: its connections are gone
                    pid = 0
                if not pid and free is None:
                    free = slot
            if free is None:
                if high >= SLOTS:
                    raise OSError(f"all {SLOTS} slots of {TABLE_NAME} are taken")
                free = high
                _HEADER.pack_into(self._map, 0, magic, version, high + 1)
            self._heads[2 * free] = os.getpid()
            self._heads[2 * free + 1] = 0
            return free
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, HEADER, 0)

    def _wipe(self, slot: int) -> None:
        self._heads[2 * slot + 1] = 0
        base = slot * IP_ENTRIES * 2
        self._ips[base : base + IP_ENTRIES * 2] = memoryview(bytes(IP_ENTRIES * 8)).cast("I")
        self._heads[2 * slot] = 0

    def _ip_total(self, key: int, high: int) -> int:
        ips = self._ips
        total = 0
        start = key % IP_ENTRIES
        for slot in range(high):
            base = slot * IP_ENTRIES * 2
            for probe in range(PROBES):
                i = base + 2 * ((start + probe) % IP_ENTRIES)
                stored = ips[i]
                if stored == key:
                    total += ips[i + 1]
                    break
                if stored == 0:
                    break
        return total

    def _ip_add(self, key: int, delta: int) -> None:
        ips = self._ips
        base = self.slot * IP_ENTRIES * 2
        start = key % IP_ENTRIES
        reusable = None
        for probe in range(PROBES):
            i = base + 2 * ((start + probe) % IP_ENTRIES)
            stored = ips[i]
            if stored == key:
                ips[i + 1] = max(0, ips[i + 1] + delta)
                return
            if stored == 0:
                reusable = i if reusable is None else reusable
                break
            if ips[i + 1] == 0 and reusable is None:
                reusable = i
        if delta > 0 and reusable is not None:
            # Write the count before the key: a reader that sees the key sees a count.
            ips[reusable + 1] = delta
            ips[reusable] = key
        # else: full probe window (fail open for this IP) or releasing an uncounted IP


def _ip_key(ip: str) -> int:
    return zlib.crc32(ip.encode()) | 1  # never 0, which marks an empty entry


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
