"""Two-way byte relay between a client and an upstream socket.

One `Relay` per connection: the handler's greenlet pumps client -> upstream and
a second greenlet pumps upstream -> client. On Linux the bytes move with
`os.splice` through a pipe (zero copy, never entering Python); elsewhere a
read/write loop over one buffer per direction does the same work.

Idle rule (the issue's definition): the client leg is idle when the client has
sent nothing for `client_idle_timeout`, the upstream leg when the upstream has
sent nothing for `server_idle_timeout`; the connection closes only when both are
idle at once, so a long one-way transfer is never cut. Each pump waits with its
own leg's timeout and, when it expires, looks at the other leg.

Half-closes propagate: EOF on one side becomes `shutdown(SHUT_WR)` on the other
and the opposite direction keeps flowing until it ends too.
"""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import time

import gevent
from gevent import get_hub
from gevent.timeout import Timeout

from tlsgate.events import ConnectionRecord

# TLSGATE_RELAY=copy forces the portable loop on Linux too (tests run both paths).
_USE_SPLICE = hasattr(os, "splice") and os.environ.get("TLSGATE_RELAY") != "copy"
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_CHUNK = 256 * 1024
_STREAM_READ = 64 * 1024
_PIPE_SIZE = 256 * 1024
_F_SETPIPE_SZ = 1031
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT})


class RelayClosed(Exception):
    """Raised inside a pump greenlet to end the relay; carries the close reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Leg:
    """One direction's source: when it last delivered bytes and whether it ended."""

    __slots__ = ("last_activity", "idle_timeout", "ended")

    def __init__(self, idle_timeout: float, now: float):
        self.last_activity = now
        self.idle_timeout = idle_timeout
        self.ended = False

    def idle(self, now: float) -> bool:
        return self.ended or now - self.last_activity >= self.idle_timeout


class Relay:
    """Relays bytes both ways until both directions end (or idle/reset/kill)."""

    def __init__(
        self,
        client: stdlib_socket.socket,
        upstream: stdlib_socket.socket,
        record: ConnectionRecord,
        client_idle_timeout: float,
        server_idle_timeout: float,
        tls_sides: bool = False,
    ):
        now = time.monotonic()
        self.client = client
        self.upstream = upstream
        self.record = record
        self.client_leg = _Leg(client_idle_timeout, now)
        self.upstream_leg = _Leg(server_idle_timeout, now)
        self._pumps: tuple[gevent.Greenlet, ...] = ()
        # A TLS side (terminated client, re-encrypted upstream) holds plaintext OpenSSL may
        # already have buffered, so it is read through its own recv(), not by fd readiness.
        self._streams = tls_sides

    def run(self) -> str:
        """Relay until done; returns the close reason. Sockets are left for the caller to close."""
        up = gevent.spawn(self._pump_guarded, True)
        down = gevent.spawn(self._pump_guarded, False)
        self._pumps = (up, down)
        first = gevent.wait(self._pumps, count=1)[0]
        other = down if first is up else up
        reason = first.value
        if reason == "eof":
            # A half-close: the other direction keeps flowing until it ends too.
            return other.get()
        # Anything but a clean EOF (reset, idle, kill, shutdown) ends both directions at once.
        other.kill(block=True)
        return reason

    def stop(self, reason: str) -> None:
        """Called from another greenlet (drain deadline, kill): ends both pumps."""
        for pump in self._pumps:
            pump.kill(RelayClosed(reason), block=False)

    def _pump_guarded(self, upstream_bound: bool) -> str:
        try:
            if self._streams:
                self._pump_stream(upstream_bound)
            else:
                self._pump_fds(upstream_bound)
            return "eof"
        except RelayClosed as e:
            return e.reason

    # -- the two pumps ------------------------------------------------------

    def _direction(self, upstream_bound: bool):
        if upstream_bound:
            return self.client, self.upstream, self.client_leg, self.upstream_leg, "client", "upstream"
        return self.upstream, self.client, self.upstream_leg, self.client_leg, "upstream", "client"

    def _pump_fds(self, upstream_bound: bool) -> None:
        """For plain sockets: move bytes fd to fd with `_SpliceMover` or `_CopyMover`."""
        src, dst, leg, other_leg, src_name, dst_name = self._direction(upstream_bound)
        src_fd, dst_fd = src.fileno(), dst.fileno()
        hub = get_hub()
        read_watcher = hub.loop.io(src_fd, 1)
        write_watcher = hub.loop.io(dst_fd, 2)
        mover = _SpliceMover() if _USE_SPLICE else _CopyMover()
        record = self.record
        try:
            while True:
                try:
                    n = mover.take(src_fd)
                except BlockingIOError:
                    self._wait(hub, read_watcher, leg, other_leg)
                    continue
                except OSError as e:
                    raise self._reset(e, src_name) from e
                if n == 0:
                    leg.ended = True
                    _shutdown_write(dst)
                    return
                leg.last_activity = time.monotonic()
                if upstream_bound:
                    record.bytes_in += n
                else:
                    record.bytes_out += n
                while mover.pending:
                    try:
                        mover.give(dst_fd)
                    except BlockingIOError:
                        # A peer that stops reading stalls this leg too: the idle rule still applies.
                        self._wait(hub, write_watcher, leg, other_leg)
                    except OSError as e:
                        raise self._reset(e, dst_name) from e
        finally:
            read_watcher.close()
            write_watcher.close()
            mover.close()

    def _pump_stream(self, upstream_bound: bool) -> None:
        """For TLS sides: recv()/sendall() with the idle rule enforced by timeouts."""
        src, dst, leg, other_leg, src_name, dst_name = self._direction(upstream_bound)
        record = self.record
        while True:
            try:
                data = self._with_idle_rule(src.recv, _STREAM_READ, leg, other_leg)
            except OSError as e:
                raise self._reset(e, src_name) from e
            if not data:
                leg.ended = True
                try:
                    _shutdown_write(dst)
                except OSError as e:
                    raise self._reset(e, dst_name) from e
                return
            leg.last_activity = time.monotonic()
            if upstream_bound:
                record.bytes_in += len(data)
            else:
                record.bytes_out += len(data)
            try:
                self._with_idle_rule(dst.sendall, data, leg, other_leg)
            except OSError as e:
                raise self._reset(e, dst_name) from e

    def _with_idle_rule(self, call, arg, leg: _Leg, other_leg: _Leg):
        """``call(arg)``, unless both legs go idle first (then the connection closes)."""
        while True:
            remaining = leg.idle_timeout - (time.monotonic() - leg.last_activity)
            if remaining <= 0:
                if other_leg.idle(time.monotonic()):
                    raise RelayClosed("idle_timeout")
                remaining = max(other_leg.idle_timeout - (time.monotonic() - other_leg.last_activity), 0.05)
            timer = Timeout.start_new(remaining)
            try:
                return call(arg)
            except Timeout as t:
                if t is not timer:
                    raise
            finally:
                timer.close()

    def _wait(self, hub, watcher, leg: _Leg, other_leg: _Leg) -> None:
        """Wait for `watcher` (source readable or destination writable); close if both legs go idle."""
        while True:
            remaining = leg.idle_timeout - (time.monotonic() - leg.last_activity)
            if remaining <= 0:
                if other_leg.idle(time.monotonic()):
                    raise RelayClosed("idle_timeout")
                # This leg is idle but the other is not: check again when the other could be.
                remaining = max(other_leg.idle_timeout - (time.monotonic() - other_leg.last_activity), 0.05)
            timer = Timeout.start_new(remaining)
            try:
                hub.wait(watcher)
                return
            except Timeout as t:
                if t is not timer:
                    raise
            finally:
                timer.close()

    @staticmethod
    def _reset(e: OSError, side: str) -> RelayClosed:
        # ConnectionError covers TLS stream errors (bad record MAC, alerts after the handshake).
        if isinstance(e, ConnectionError) or e.errno in _RESET_ERRNOS or e.errno == errno.EBADF:
            return RelayClosed(f"{side}_reset")
        raise e


class _SpliceMover:
    """Zero copy: socket -> pipe -> socket with splice(2); the bytes never enter Python."""

    __slots__ = ("pipe_r", "pipe_w", "pending")

    def __init__(self):
        # The pipe is made on first data, so an idle connection holds no pipe descriptors.
        self.pipe_r = self.pipe_w = -1
        self.pending = 0

    def take(self, src_fd: int) -> int:
        if self.pipe_w < 0:
            self.pipe_r, self.pipe_w = _make_pipe()
        n = os.splice(src_fd, self.pipe_w, _CHUNK, flags=_SPLICE_FLAGS)
        self.pending = n
        return n

    def give(self, dst_fd: int) -> None:
        self.pending -= os.splice(self.pipe_r, dst_fd, self.pending, flags=_SPLICE_FLAGS)

    def close(self) -> None:
        if self.pipe_r >= 0:
            os.close(self.pipe_r)
            os.close(self.pipe_w)


class _CopyMover:
    """Portable: read into one buffer, write it out."""

    __slots__ = ("buf", "view", "sent", "pending")

    def __init__(self):
        self.buf = bytearray(64 * 1024)
        self.view = memoryview(self.buf)
        self.sent = 0
        self.pending = 0

    def take(self, src_fd: int) -> int:
        n = os.readv(src_fd, (self.buf,))
        self.sent, self.pending = 0, n
        return n

    def give(self, dst_fd: int) -> None:
        written = os.write(dst_fd, self.view[self.sent : self.sent + self.pending])
        self.sent += written
        self.pending -= written

    def close(self) -> None:
        self.view.release()


def _make_pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        import fcntl

        fcntl.fcntl(w, _F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass  # pipe-max-size may be lower for unprivileged users; the default pipe still works
    return r, w


class PlainStream:
    """A plain socket with the stream interface a TLS side has (`GreenTLSConnection`)."""

    __slots__ = ("sock", "recv", "sendall")

    def __init__(self, sock: stdlib_socket.socket):
        self.sock = sock
        self.recv = sock.recv
        self.sendall = sock.sendall

    def shutdown_write(self) -> None:
        _shutdown_write(self.sock)


def _shutdown_write(sock) -> None:
    if not isinstance(sock, stdlib_socket.socket) and hasattr(sock, "shutdown_write"):
        sock.shutdown_write()
        return
    try:
        sock.shutdown(stdlib_socket.SHUT_WR)
    except OSError as e:
        # The peer may already be gone; the other direction will notice and report it.
        if e.errno not in (errno.ENOTCONN, errno.EBADF):
            raise
