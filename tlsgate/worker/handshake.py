"""A TLS handshake driven by event-loop callbacks: no greenlet waits for the peer.

tlsgate/worker/fasttls.py starts one to terminate a client's TLS (server side) and one
to re-encrypt to a ``tls://`` upstream (client side). Both go through the sans-IO
methods of `GreenTLSConnection` (OpenSSL only ever sees memory BIOs); this module reads
and writes the plain, non-blocking socket under it. One timer bounds the whole
handshake (``limits.handshake_timeout``), like the greenlet's `gevent.Timeout` does in
`GreenTLSConnection.server_handshake`.

The outcome is reported once: ``on_done()`` after the last flight (a TLS 1.3 server's
session tickets) is written, or ``on_failed(error, unsent)`` with a `TLSHandshakeError`
and the bytes OpenSSL wrote that the socket has not taken yet (a fatal alert, usually),
which the owner delivers during its graceful close. `cancel()` stops it silently.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from OpenSSL import SSL

from tlsgate.tls.gsocket import (
    SOCKET_READ_SIZE,
    GreenTLSConnection,
    TLSHandshakeError,
    TLSHandshakeTimeout,
    handshake_error,
)

log = logging.getLogger(__name__)

_READ, _WRITE = 1, 2


class Handshake:
    """One handshake in flight; see the module docstring."""

    __slots__ = (
        "tls",
        "fd",
        "loop",
        "timeout",
        "on_done",
        "on_failed",
        "reader",
        "writer",
        "timer",
        "unsent",
        "complete",
    )

    def __init__(
        self,
        tls: GreenTLSConnection,
        loop,
        timeout: float,
        on_done: Callable[[], None],
        on_failed: Callable[[TLSHandshakeError, bytes], None],
    ):
        self.tls = tls
        self.fd = tls.sock.fileno()
        self.loop = loop
        self.timeout = timeout
        self.on_done = on_done
        self.on_failed = on_failed
        self.reader = None
        self.writer = None
        self.timer = None
        self.unsent = b""
        """Bytes for the peer that its socket did not take yet."""
        self.complete = False
        """OpenSSL finished; only ``unsent`` is left to write."""

    def start(self, received: bytes = b"", prefix: bytes = b"") -> None:
        """Begin from ``received`` (bytes the peer sent already: a client's ClientHello),
        after writing ``prefix`` (bytes the peer gets first: the rest of a PROXY header)."""
        self.unsent = prefix
        if received:
            self.tls.take_ciphertext(received)
        self._guarded(self._step)

    def cancel(self) -> None:
        """Stop waiting; nothing is reported."""
        for watcher in (self.reader, self.writer, self.timer):
            if watcher is not None:
                watcher.close()
        self.reader = self.writer = self.timer = None

    # -- steps -------------------------------------------------------------------------

    def _guarded(self, step) -> None:
        # A bug here, or an exception a certificate callback raised inside OpenSSL, must
        # end the handshake (and so the connection) rather than leave it waiting.
        try:
            step()
        except Exception as exc:
            log.exception("TLS handshake step failed")
            self._fail(TLSHandshakeError(f"internal error: {type(exc).__name__}"))

    def _step(self) -> None:
        tls = self.tls
        try:
            self.complete = tls._handshake_step()
        except SSL.Error as exc:
            self._fail(handshake_error(tls, exc))
            return
        out = tls.ciphertext_out()
        if out:
            self.unsent += out
        if self.unsent and not self._write():
            return  # the writer resumes
        self._await_peer()

    def _await_peer(self) -> None:
        """Our flight is out: done, or wait for the peer's next one."""
        if self.complete:
            self._finish()
            return
        if self.reader is None:
            self.reader = self.loop.io(self.fd, _READ)
        if not self.reader.active:
            self.reader.start(self._guarded, self._on_readable)
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self.timer is None:
            self.timer = self.loop.timer(self.timeout)
            self.timer.start(self._guarded, self._expired)

    def _write(self) -> bool:
        """Write ``unsent``; True when all of it is out. Otherwise waits to write."""
        try:
            sent = os.write(self.fd, self.unsent)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(self._socket_error(exc))
            return False
        self.unsent = self.unsent[sent:]
        if not self.unsent:
            return True
        if self.writer is None:
            self.writer = self.loop.io(self.fd, _WRITE)
        if self.reader is not None:
            self.reader.stop()  # one thing at a time: OpenSSL's next flight follows this one
        self.writer.start(self._guarded, self._on_writable)
        self._arm_timer()
        return False

    def _on_writable(self) -> None:
        if not self._write():
            return
        self.writer.stop()
        self._await_peer()

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, SOCKET_READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(self._socket_error(exc))
            return
        if not data:
            tls = self.tls
            self._fail(
                TLSHandshakeError(
                    "peer closed the connection during the handshake",
                    tls.alert_sent,
                    tls.alert_received,
                )
            )
            return
        self.tls.take_ciphertext(data)
        self._step()

    def _expired(self) -> None:
        tls = self.tls
        self._fail(
            TLSHandshakeTimeout(
                f"TLS handshake not completed within {self.timeout:g}s",
                tls.alert_sent,
                tls.alert_received,
            )
        )

    # -- outcome -----------------------------------------------------------------------

    def _socket_error(self, exc: OSError) -> TLSHandshakeError:
        tls = self.tls
        return TLSHandshakeError(
            f"socket error during the handshake: {exc}", tls.alert_sent, tls.alert_received
        )

    def _finish(self) -> None:
        self.cancel()
        self.on_failed = None
        self.on_done()

    def _fail(self, error: TLSHandshakeError) -> None:
        if self.on_failed is None:
            return  # reported already
        self.cancel()
        unsent = self.unsent + self.tls.ciphertext_out()
        self.unsent = b""
        on_failed, self.on_failed = self.on_failed, None
        on_failed(error, unsent)
