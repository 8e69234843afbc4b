"""One direction of a plain-socket relay, driven by event-loop readiness callbacks.

Small reads (handshake flights, requests) are copied through one scratch buffer shared
by the worker; a read of `BULK` bytes or more means a bulk transfer, and from then on
the direction moves with `os.splice` through a pipe of its own (zero copy), so idle
and handshake traffic never holds a pipe. Created by `Relay` in tlsgate/worker/relay.py.
"""

from __future__ import annotations

import logging
import os
import time

from tlsgate.worker.relaybase import Leg, RelayClosed, closed_by, shutdown_write

log = logging.getLogger("tlsgate.worker.relay")

# TLSGATE_RELAY=copy forces the portable loop on Linux too (tests run both paths).
_USE_SPLICE = hasattr(os, "splice") and os.environ.get("TLSGATE_RELAY") != "copy"
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_CHUNK = 256 * 1024
_PIPE_SIZE = 256 * 1024
_F_SETPIPE_SZ = 1031
_BULK = 16 * 1024
"""A read this large means a bulk transfer: splice from then on (TLS records are at most 16 KiB)."""
_SCRATCH = bytearray(64 * 1024)
"""Shared by every relay of the worker: nothing yields between a read into it and the write."""
_SCRATCH_VIEW = memoryview(_SCRATCH)
_SCRATCH_IOV = (_SCRATCH,)
_READ, _WRITE = 1, 2
_ROUNDS = 8
"""Reads per readiness callback: up to 2 MiB of a bulk transfer per turn of the event loop."""
_PIPE_WARN_INTERVAL = 60.0


class FdDirection(Leg):
    """One direction of a plain-socket relay, driven by the event loop's io watchers.

    Waits for the source to be readable, moves what arrived, and waits for the
    destination to be writable only when it would not take everything at once. It is
    also its source's `Leg` (idle bookkeeping): one object per direction, not two.
    """

    __slots__ = (
        "relay",
        "dst",
        "src_fd",
        "dst_fd",
        "upstream_bound",
        "loop",
        "reader",
        "writer",
        "pending",
        "pipe_r",
        "pipe_w",
        "piped",
        "may_splice",
        "opposite",
    )

    def __init__(
        self,
        relay,
        src_fd: int,
        dst,
        dst_fd: int,
        idle_timeout: float,
        now: float,
        upstream_bound: bool,
        loop,
        reader=None,
    ):
        """``dst``: the destination socket (for ``shutdown``); ``src_fd``/``dst_fd``: the
        descriptors of the source and the destination. ``reader``: a read watcher on
        ``src_fd`` to use instead of a new one (the connection's, from waiting for the
        ClientHello: taking it over costs no new watcher and no epoll change)."""
        Leg.__init__(self, idle_timeout, now)
        self.relay = relay
        self.dst = dst
        self.src_fd = src_fd
        self.dst_fd = dst_fd
        self.upstream_bound = upstream_bound
        self.loop = loop
        self.reader = reader if reader is not None else loop.io(src_fd, _READ)
        self.writer = None
        """Made on the first write that would block (each watcher costs a syscall to make)."""
        self.pending: memoryview | None = None
        """Copied bytes the destination has not taken yet (our own copy, not the scratch buffer)."""
        self.pipe_r = self.pipe_w = -1
        self.piped = 0
        """Bytes in the pipe the destination has not taken yet."""
        self.may_splice = _USE_SPLICE
        self.opposite: FdDirection | None = None
        """The other direction of the relay (set by `Relay`)."""

    def wait_to_send(self, data: bytes) -> None:
        """Start with ``data`` pending for the destination: read only once it has taken it."""
        self.pending = memoryview(data)
        self.writer = self.loop.io(self.dst_fd, _WRITE)
        self.writer.start(self.on_writable)

    def on_writable(self) -> None:
        try:
            if not self._flush():
                return
            self.writer.stop()
            self.reader.start(self.on_readable)
        except RelayClosed as e:
            self.relay._finish(e.reason)
            return
        except Exception:
            self.relay._crash()
            return
        self.on_readable()  # whatever arrived meanwhile; saves a loop iteration

    def on_readable(self) -> None:
        """Move what the source has, until it has no more (at most `_ROUNDS` reads, so one
        bulk transfer cannot hold up the rest of the worker)."""
        # One frame per readiness callback: this runs about eight times per connection.
        try:
            record = self.relay.record
            rounds = _ROUNDS  # a counter, not range(): no iterator object per callback
            while rounds:
                rounds -= 1
                if self.pipe_w >= 0:
                    try:
                        n = os.splice(self.src_fd, self.pipe_w, _CHUNK, flags=_SPLICE_FLAGS)
                    except BlockingIOError:
                        return
                    except OSError as e:
                        raise closed_by(e, self._src_name, record) from e
                    self.piped = left = n
                    drained = n < _CHUNK
                else:
                    try:
                        n = os.readv(self.src_fd, _SCRATCH_IOV)
                    except BlockingIOError:
                        return
                    except OSError as e:
                        raise closed_by(e, self._src_name, record) from e
                    left = 0
                    if n:
                        try:
                            left = n - os.write(self.dst_fd, _SCRATCH_VIEW[:n])
                        except BlockingIOError:
                            left = n
                        except OSError as e:
                            raise closed_by(e, self._dst_name, record) from e
                        if left:
                            self.pending = memoryview(bytes(_SCRATCH_VIEW[n - left : n]))
                        if n >= _BULK and self.may_splice:
                            self._open_pipe()
                    # A short read emptied the socket: reading again now would only say EAGAIN.
                    drained = n < _BULK
                if n == 0:
                    self._ended()
                    return
                self.last_activity = time.monotonic()
                if self.upstream_bound:
                    record.bytes_in += n
                else:
                    record.bytes_out += n
                # ``left``: what the destination has not taken yet (the usual small write takes all).
                if left and not self._flush():
                    # The destination is not taking more: stop reading until it does. A peer
                    # that stops reading stalls this leg too, and the idle rule still applies.
                    self.reader.stop()
                    if self.writer is None:
                        self.writer = self.loop.io(self.dst_fd, _WRITE)
                    self.writer.start(self.on_writable)
                    return
                # Once the other side has closed, this one usually closes right after its
                # last bytes (a TLS close_notify, then FIN): read on, and its end costs no
                # wake-up of its own.
                if drained and not self.opposite.ended:
                    return
        except RelayClosed as e:
            self.relay._finish(e.reason)
        except Exception:
            self.relay._crash()

    def _flush(self) -> bool:
        """Give the destination what is pending; True when nothing is left."""
        try:
            if self.piped:
                while self.piped:
                    self.piped -= os.splice(
                        self.pipe_r, self.dst_fd, self.piped, flags=_SPLICE_FLAGS
                    )
            elif self.pending is not None:
                while self.pending:
                    # Keep the remainder after every write: the next one may stop short.
                    self.pending = self.pending[os.write(self.dst_fd, self.pending) :]
                self.pending = None
        except BlockingIOError:
            return False
        except OSError as e:
            raise closed_by(e, self._dst_name, self.relay.record) from e
        return True

    def _open_pipe(self) -> None:
        try:
            self.pipe_r, self.pipe_w = _make_pipe()
        except OSError as e:
            # Out of descriptors (EMFILE/ENFILE): this direction keeps copying, which works.
            self.may_splice = False
            _warn_no_pipe(e)

    def _ended(self) -> None:
        self.ended = True
        self.stop_watching()
        try:
            shutdown_write(self.dst)
        except OSError as e:
            raise closed_by(e, self._dst_name, self.relay.record) from e
        self.relay._direction_ended()

    @property
    def _src_name(self) -> str:
        return "client" if self.upstream_bound else "upstream"

    @property
    def _dst_name(self) -> str:
        return "upstream" if self.upstream_bound else "client"

    def stop_watching(self) -> None:
        self.reader.stop()
        if self.writer is not None:
            self.writer.stop()

    def close(self) -> None:
        self.reader.close()
        if self.writer is not None:
            self.writer.close()
        if self.pipe_r >= 0:
            os.close(self.pipe_r)
            os.close(self.pipe_w)
            self.pipe_r = self.pipe_w = -1
        self.pending = None
        self.opposite = None  # the two directions point at each other: no cycle left behind


_last_pipe_warning = [0.0]


def _warn_no_pipe(e: OSError) -> None:
    now = time.monotonic()
    if now - _last_pipe_warning[0] >= _PIPE_WARN_INTERVAL:
        _last_pipe_warning[0] = now
        log.warning("relay: cannot create a splice pipe (%s); copying instead", e)


def _make_pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        import fcntl

        fcntl.fcntl(w, _F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass  # pipe-max-size may be lower for unprivileged users; the default pipe still works
    return r, w
