"""Non-blocking framed sockets in the master: control clients and worker channels.

The master is one thread with one `selectors` loop (tlsgate/master/arbiter.py);
every socket it talks JSON frames over is a `FramedStream` registered on that
selector, read when readable and written when it has output and the socket
takes it. Nothing here ever blocks: a peer that sends slowly just leaves a
partial frame in the decoder, a peer that reads slowly accumulates output up
to ``max_output`` bytes and is then disconnected.

A worker's channel is one end of a socketpair the master creates before the
fork (`create_channel`); the worker speaks on the other end
(tlsgate/worker/reporter.py).
"""

from __future__ import annotations

import logging
import selectors
import socket
from collections.abc import Callable, Iterator

from tlsgate.control.protocol import (
    MAX_MESSAGE_SIZE,
    FrameDecoder,
    FrameTooLarge,
    ProtocolError,
    decode_payload,
    encode_message,
)

log = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024
_MAX_READS_PER_WAKEUP = 64
"""Bounds the time one busy peer can keep the master's loop from everything else."""
MAX_OUTPUT = 64 * 1024 * 1024
"""Output held for one peer before it counts as not reading and is dropped."""


def accept_ready(listener: socket.socket, what: str) -> Iterator[socket.socket]:
    """The connections waiting on a non-blocking listener, a bounded batch per wakeup."""
    for _ in range(_MAX_READS_PER_WAKEUP):
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("%s: accept failed: %s", what, e)
            return
        yield sock


def create_channel() -> tuple[socket.socket, socket.socket]:
    """``(master_end, worker_end)``; the worker end is inherited through fork and closed by the master after it."""
    master_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return master_end, worker_end


class FramedStream:
    """One peer: frames in through ``on_message``, frames out through `send`."""

    def __init__(
        self,
        sock: socket.socket,
        selector: selectors.BaseSelector,
        on_message: Callable[[FramedStream, dict], None],
        on_close: Callable[[FramedStream], None],
        max_input: int = MAX_MESSAGE_SIZE,
        max_output: int = MAX_OUTPUT,
        on_protocol_error: Callable[[FramedStream, ProtocolError], None] | None = None,
    ):
        sock.setblocking(False)
        self.sock = sock
        self.selector = selector
        self.decoder = FrameDecoder(max_input)
        self.max_output = max_output
        self.output = bytearray()
        self.closed = False
        self.close_when_flushed = False
        self._on_message = on_message
        self._on_close = on_close
        self._on_protocol_error = on_protocol_error
        self._events = selectors.EVENT_READ
        selector.register(sock, self._events, self._ready)

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- output ----------------------------------------------------------------------

    def send(self, message: dict) -> None:
        if self.closed or self.close_when_flushed:
            return
        self.send_bytes(encode_message(message))

    def send_bytes(self, data: bytes) -> None:
        if self.closed:
            return
        self.output += data
        if len(self.output) > self.max_output:
            log.warning(
                "dropping a control peer that does not read (%d bytes waiting)", len(self.output)
            )
            self.close()
            return
        self._write()

    def close_after_flush(self) -> None:
        """Close once everything queued so far is written (an error reply, then goodbye)."""
        self.close_when_flushed = True
        self._stop_reading()
        if not self.output:
            self.close()

    def _write(self) -> None:
        while self.output:
            try:
                sent = self.sock.send(self.output)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            del self.output[:sent]
        if not self.output and self.close_when_flushed:
            self.close()
            return
        self._set_events(self._wanted_events())

    # -- input -----------------------------------------------------------------------

    def _ready(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._write()
        if mask & selectors.EVENT_READ and not self.closed:
            self.read_available()

    def read_available(self) -> None:
        """Read and dispatch what the socket holds now; at EOF, close."""
        for _ in range(_MAX_READS_PER_WAKEUP):
            if self.closed or self.close_when_flushed:
                return
            try:
                data = self.sock.recv(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            try:
                payloads = self.decoder.feed_frames(data)
            except FrameTooLarge as e:
                self._protocol_error(e)
                return
            for payload in payloads:
                if self.closed or self.close_when_flushed:
                    return
                try:
                    message = decode_payload(payload)
                except ProtocolError as e:
                    self._protocol_error(e)
                    continue
                self._on_message(self, message)

    def _protocol_error(self, error: ProtocolError) -> None:
        """A bad payload (framing intact) or `FrameTooLarge` (stream lost); default: close."""
        if self._on_protocol_error is not None:
            self._on_protocol_error(self, error)
        else:
            self.close()

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass  # never registered, or the selector is closed
        self.sock.close()
        self._on_close(self)

    def _wanted_events(self) -> int:
        events = 0 if self.close_when_flushed else selectors.EVENT_READ
        if self.output:
            events |= selectors.EVENT_WRITE
        return events

    def _stop_reading(self) -> None:
        self._set_events(self._wanted_events())

    def _set_events(self, events: int) -> None:
        if self.closed or events == self._events:
            return
        if events == 0:
            # A selector cannot hold a socket with no events; park it on EVENT_WRITE-less reads off.
            events = selectors.EVENT_WRITE if self.output else selectors.EVENT_READ
        self._events = events
        self.selector.modify(self.sock, events, self._ready)
