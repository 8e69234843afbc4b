"""A relay with a TLS side, driven by event-loop readiness callbacks.

Created by `Relay` (tlsgate/worker/relay.py) when the gateway terminated the client's
TLS, re-encrypts to the upstream, or both. Like the plain relay (tlsgate/worker/fdpump.py)
it holds no greenlet: readiness callbacks read, decrypt, encrypt and write, so an idle
terminated connection costs its objects only.

A `Side` is one socket: what the relay could not write to it yet (``pending``), and for
a TLS side the `GreenTLSConnection` whose sans-IO methods turn ciphertext into plaintext
and back (the sockets themselves are read and written here, without blocking). Both
directions may write to a TLS side's socket (records one way, protocol replies such as
a KeyUpdate's the other), so pending bytes belong to the side, not to a direction.

A direction stops reading its source while its destination has pending bytes and
starts again once they are written, so a slow reader holds back its peer instead of
filling memory (the idle rule still applies to a stalled leg). Because of that, a
source's end is only seen once everything before it was written.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from tlsgate.worker.relaybase import Leg, RelayClosed, closed_by

_READ, _WRITE = 1, 2
_SOCKET_READ = 256 * 1024
"""Bytes asked of a socket at once: plaintext from a plain side, ciphertext from a TLS side.
A plain upstream's bulk response is encrypted from reads this large: against 64 KiB
reads, 12-20% less CPU per GiB through a terminating endpoint (docs/benchmarks.md,
"What changed on the hot path", has the runs)."""
_PLAINTEXT_READ = 64 * 1024
_ROUNDS = 16
"""Reads per callback (a TLS source gives one record, at most 16 KiB, per read)."""
_TURN_BYTES = 1024 * 1024
"""Bytes per callback at most; the rest waits for the next turn of the event loop, so one
bulk transfer cannot hold up the worker's other connections for long."""
_GONE = frozenset({errno.ENOTCONN, errno.EBADF})


class Side:
    """One socket of the relay, and its TLS session if the gateway speaks TLS on it."""

    __slots__ = ("sock", "fd", "tls", "name", "relay", "pending", "writer", "blocked")

    def __init__(self, sock, tls, name: str, relay):
        self.sock = sock
        self.fd = sock.fileno()
        self.tls = tls
        self.name = name
        self.relay = relay
        self.pending: memoryview | None = None
        """Bytes for this socket that it did not take yet."""
        self.writer = None
        self.blocked: StreamDirection | None = None
        """The direction that stopped reading until `pending` is written."""

    def send(self, data: bytes) -> bool:
        """Write ``data`` after whatever is pending; True when nothing is left pending."""
        if self.pending is not None:
            self.pending = memoryview(bytes(self.pending) + data)
            return False
        try:
            sent = os.write(self.fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            raise closed_by(e, self.name, self.relay.record) from e
        if sent == len(data):
            return True
        self.pending = memoryview(data)[sent:]
        if self.writer is None:
            self.writer = self.relay.loop.io(self.fd, _WRITE)
        self.writer.start(self._on_writable)
        return False

    def send_tls_output(self) -> bool:
        """Send what OpenSSL wrote for this side's peer; True when nothing is left pending."""
        data = self.tls.ciphertext_out()
        if data:
            return self.send(data)
        return self.pending is None

    def _on_writable(self) -> None:
        relay = self.relay
        try:
            while self.pending:
                # Keep the remainder after every write: the next one may stop short.
                self.pending = self.pending[os.write(self.fd, self.pending) :]
        except BlockingIOError:
            return
        except OSError as e:
            relay._finish(closed_by(e, self.name, relay.record).reason)
            return
        except Exception:
            relay._crash()
            return
        self.pending = None
        self.writer.stop()
        blocked, self.blocked = self.blocked, None
        if blocked is not None:
            blocked.resume()
        else:
            relay._direction_ended()  # the last bytes of an ended relay went out

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.pending = None


class StreamDirection(Leg):
    """Plaintext from ``src`` to ``dst``, either or both of them TLS; also its source's `Leg`."""

    __slots__ = ("relay", "src", "dst", "upstream_bound", "reader")

    def __init__(
        self, relay, src: Side, dst: Side, idle_timeout: float, now: float, upstream_bound: bool
    ):
        Leg.__init__(self, idle_timeout, now)
        self.relay = relay
        self.src = src
        self.dst = dst
        self.upstream_bound = upstream_bound
        self.reader = relay.loop.io(src.fd, _READ)

    def resume(self) -> None:
        """Read whenever the socket is readable (the watcher is level-triggered, so bytes
        already waiting count), and now if OpenSSL may hold records the socket's readiness
        cannot show: ones that came with the handshake's last flight, or the rest of a read
        cut short while the destination was full."""
        self.reader.start(self.on_readable)
        tls = self.src.tls
        if tls is not None and tls.may_hold_input:
            self.on_readable()

    def on_readable(self) -> None:
        try:
            self._move()
        except RelayClosed as e:
            self.relay._finish(e.reason)
        except Exception:
            self.relay._crash()

    def _move(self) -> None:
        dst, record = self.dst, self.relay.record
        budget = _TURN_BYTES
        for _ in range(_ROUNDS):
            data = self._read()
            if data is None:
                return  # nothing more for now: wait for readiness
            if not data:
                self._ended()
                return
            self.last_activity = time.monotonic()
            if self.upstream_bound:
                record.bytes_in += len(data)
            else:
                record.bytes_out += len(data)
            if dst.tls is not None:
                try:
                    dst.tls.write_plaintext(data)
                except ConnectionError as e:
                    raise closed_by(e, dst.name, record) from e
                drained = dst.send_tls_output()
            else:
                drained = dst.send(data)
            if not drained:
                self.reader.stop()
                dst.blocked = self
                return
            budget -= len(data)
            if budget <= 0:
                break
        # More may wait inside OpenSSL, where readiness cannot see it: come back next turn.
        self.relay.loop.run_callback(self._continue)

    def _continue(self) -> None:
        if not self.ended and self.relay.running and self.dst.blocked is not self:
            self.on_readable()

    def _read(self) -> bytes | None:
        """Plaintext from the source; None when it has none now, b"" at its end."""
        src = self.src
        tls = src.tls
        if tls is None:
            return self._read_socket()
        while True:
            try:
                data = tls.read_plaintext(_PLAINTEXT_READ)
            except ConnectionError as e:
                self._send_replies()  # the alert OpenSSL wrote for the peer, if it can go
                raise closed_by(e, src.name, self.relay.record) from e
            if data is not None:
                return data
            self._send_replies()  # what OpenSSL owes the peer (a KeyUpdate's) goes first
            raw = self._read_socket()
            if raw is None:
                return None
            if not raw:
                tls.truncated = True  # the stream ended without close_notify
                return b""
            tls.take_ciphertext(raw)

    def _read_socket(self) -> bytes | None:
        try:
            return os.read(self.src.fd, _SOCKET_READ)
        except BlockingIOError:
            return None
        except OSError as e:
            raise closed_by(e, self.src.name, self.relay.record) from e

    def _send_replies(self) -> None:
        try:
            self.src.send_tls_output()
        except RelayClosed:
            pass  # the peer is gone; reading says so next

    def _ended(self) -> None:
        """The source ended: half-close the destination (close_notify, or FIN)."""
        self.ended = True
        self.reader.stop()
        dst = self.dst
        try:
            if dst.tls is not None:
                dst.tls.write_close_notify()
                dst.send_tls_output()
            else:
                dst.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            if e.errno not in _GONE:
                raise closed_by(e, dst.name, self.relay.record) from e
        self.relay._direction_ended()

    def stop_watching(self) -> None:
        self.reader.stop()

    def close(self) -> None:
        self.reader.close()
