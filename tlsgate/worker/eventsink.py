"""Writes connection events without ever blocking the relay path.

Handlers only append to an in-memory queue; one writer greenlet takes whatever
has queued up and writes it with a single `os.write` on a gevent thread-pool
thread, so a slow disk or a full stdout pipe stalls only the writer. The file is
opened with O_APPEND by every worker, and each write holds whole lines, so lines
from different workers never interleave.
"""

from __future__ import annotations

import logging
import os
import stat

import gevent
from gevent.event import Event
from gevent.queue import SimpleQueue

from tlsgate.events import encode_event

log = logging.getLogger(__name__)

# A pipe (stdout) only keeps writes up to PIPE_BUF atomic; regular files keep any size whole.
_PIPE_BATCH = 4096
_FILE_BATCH = 256 * 1024


class EventSink:
    def __init__(self, path: str | None):
        self._queue: SimpleQueue = SimpleQueue()
        self._idle = Event()
        self._idle.set()
        self._fd = -1
        self._batch = _FILE_BATCH
        if path is not None:
            if path == "-":
                self._fd = os.dup(1)
            else:
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            if not stat.S_ISREG(os.fstat(self._fd).st_mode):
                self._batch = _PIPE_BATCH
        self._writer = gevent.spawn(self._run) if self._fd >= 0 else None

    @property
    def enabled(self) -> bool:
        return self._fd >= 0

    def emit(self, event: dict) -> None:
        if self._fd < 0:
            return
        self._queue.put(encode_event(event))
        self._idle.clear()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far is written (used at exit)."""
        if self._fd >= 0:
            self._idle.wait(timeout)

    def _run(self) -> None:
        pool = gevent.get_hub().threadpool
        while True:
            lines = [self._queue.get()]
            size = len(lines[0])
            while size < self._batch and not self._queue.empty():
                line = self._queue.get()
                lines.append(line)
                size += len(line)
            data = b"".join(lines)
            try:
                while data:
                    written = pool.apply(os.write, (self._fd, data))
                    data = data[written:]
            except OSError as e:
                log.error("cannot write events: %s (%d events lost)", e, len(lines))
            if self._queue.empty():
                self._idle.set()
