"""Cooperative pyOpenSSL over gevent sockets, through memory BIOs.

The worker's connection handler calls `GreenTLSConnection.server(sock, ctx)` then
`server_handshake(client_hello_bytes, timeout)` to terminate a client's TLS, feeding
the bytes the core already read so the client sees one normal handshake, and
`client_handshake(sock, ctx, server_name, timeout)` to re-encrypt to an upstream. The
relay then uses `recv`/`sendall`/`shutdown`/`close` as on a plain gevent socket.

OpenSSL never touches the socket: it reads from and writes to memory BIOs, and this
module moves bytes between the BIOs and the gevent socket (whose recv/sendall yield
to the hub). So OpenSSL calls never block, and every byte OpenSSL writes, including
the alert of a failed handshake, is flushed to the peer before an error is raised.
The relay's two greenlets may call `recv` and `sendall` at the same time: flushing is
serialised by a lock so records never interleave on the wire.
"""

from __future__ import annotations

import socket

import gevent
import gevent.lock
from cryptography import x509
from OpenSSL import SSL

from tlsgate.errors import TlsgateError
from tlsgate.tls.contexts import iana_cipher_name, prepare_upstream_connection, verify_error

BIO_READ_SIZE = 65536
SOCKET_READ_SIZE = 65536
WRITE_CHUNK = 65536
"""Plaintext handed to OpenSSL per flush: bounds the ciphertext buffered in memory."""
_FATAL = 2


class TLSHandshakeError(TlsgateError):
    """A TLS handshake failed; ``alert`` is the fatal alert we sent, if any."""

    def __init__(self, reason: str, alert: int | None = None, peer_alert: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.alert = alert
        """Alert description number we sent (70 protocol_version, 116 certificate_required...)."""
        self.peer_alert = peer_alert
        """Alert description number the peer sent, when it gave up first."""


class TLSHandshakeTimeout(TLSHandshakeError):
    """The handshake did not complete within its deadline (close_reason handshake_timeout)."""


class TLSStreamError(TlsgateError, ConnectionError):
    """A TLS error after the handshake; a ConnectionError so relays treat it like a reset."""


class GreenTLSConnection:
    """One TLS connection (server or client side) over a gevent socket."""

    def __init__(self, sock, conn: SSL.Connection):
        self.sock = sock
        """The gevent socket; `close()` closes it."""
        self.conn = conn
        self.alert_sent: int | None = None
        self.alert_received: int | None = None
        self.closed_by_peer = False
        """True once the peer sent close_notify."""
        self.truncated = False
        """True if the peer's TCP stream ended without close_notify."""
        self._flush_lock = gevent.lock.Semaphore()
        conn.set_info_callback(self._record_alerts)

    @classmethod
    def server(cls, sock, ctx: SSL.Context) -> GreenTLSConnection:
        conn = SSL.Connection(ctx, None)
        conn.set_accept_state()
        return cls(sock, conn)

    def server_handshake(self, initial_bytes: bytes = b"", timeout: float = 60.0) -> None:
        """Complete the server handshake, starting from bytes already read from the client."""
        if initial_bytes:
            self.conn.bio_write(initial_bytes)
        self._handshake(timeout)

    def _handshake(self, timeout: float) -> None:
        expired = TLSHandshakeTimeout(f"TLS handshake not completed within {timeout:g}s")
        try:
            with gevent.Timeout(timeout, expired):
                while True:
                    try:
                        self.conn.do_handshake()
                        break
                    except SSL.WantReadError:
                        self._flush()
                        if not self._fill():
                            raise TLSHandshakeError(
                                "peer closed the connection during the handshake",
                                self.alert_sent,
                                self.alert_received,
                            ) from None
                self._flush()
        except SSL.Error as exc:
            self._flush_quietly()
            raise TLSHandshakeError(
                _reason(exc, verify_error(self.conn)), self.alert_sent, self.alert_received
            ) from exc
        except OSError as exc:
            raise TLSHandshakeError(
                f"socket error during the handshake: {exc}", self.alert_sent, self.alert_received
            ) from exc

    # -- data phase ----------------------------------------------------------------

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` plaintext bytes; b"" at close_notify or end of stream."""
        while True:
            try:
                return self.conn.recv(bufsize)
            except SSL.WantReadError:
                self._flush()  # TLS 1.3 post-handshake replies (KeyUpdate) go out first
                raw = self.sock.recv(SOCKET_READ_SIZE)
                if not raw:
                    self.truncated = True
                    return b""
                self.conn.bio_write(raw)
            except SSL.ZeroReturnError:
                self.closed_by_peer = True
                return b""
            except SSL.Error as exc:
                self._flush_quietly()
                raise TLSStreamError(_reason(exc, None)) from exc

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), WRITE_CHUNK):
            try:
                self.conn.sendall(view[start : start + WRITE_CHUNK])
            except SSL.Error as exc:
                self._flush_quietly()
                raise TLSStreamError(_reason(exc, None)) from exc
            self._flush()

    def shutdown(self) -> None:
        """Send close_notify (TLS's half-close); the peer may still send until it closes."""
        try:
            self.conn.shutdown()
        except SSL.Error:
            return  # handshake unfinished or already shut: nothing to announce
        self._flush_quietly()

    def shutdown_write(self) -> None:
        """The relay's half-close: close_notify, while the peer may still send."""
        self.shutdown()

    def close(self) -> None:
        self.sock.close()

    def close_gracefully(self, drain_timeout: float = 2.0) -> None:
        """Close after a failed handshake without turning our alert into a reset.

        Closing a socket with unread input makes the kernel send RST, which can destroy
        the alert still in flight to the peer; so half-close, discard what the peer
        still sends (until it closes or ``drain_timeout``), then close.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
            with gevent.Timeout(drain_timeout, False):
                while self.sock.recv(SOCKET_READ_SIZE):
                    pass
        except OSError:
            pass
        finally:
            self.sock.close()

    # -- what was negotiated ----------------------------------------------------------

    @property
    def version(self) -> str | None:
        """``"1.2"`` or ``"1.3"``."""
        name = self.conn.get_protocol_version_name()
        return name.removeprefix("TLSv") if name.startswith("TLSv") else None

    @property
    def cipher_suite(self) -> str | None:
        """IANA name, e.g. ``TLS_AES_128_GCM_SHA256``."""
        name = self.conn.get_cipher_name()
        return iana_cipher_name(name) if name else None

    @property
    def alpn(self) -> str | None:
        proto = self.conn.get_alpn_proto_negotiated()
        return proto.decode("ascii", "replace") if proto else None

    @property
    def server_name(self) -> str | None:
        raw = self.conn.get_servername()
        return raw.decode("ascii", "replace") if raw else None

    def peer_certificate(self) -> x509.Certificate | None:
        return self.conn.get_peer_certificate(as_cryptography=True)

    # -- moving bytes ---------------------------------------------------------------

    def _fill(self) -> bool:
        raw = self.sock.recv(SOCKET_READ_SIZE)
        if not raw:
            return False
        self.conn.bio_write(raw)
        return True

    def _flush(self) -> None:
        with self._flush_lock:
            chunks = []
            while True:
                try:
                    chunks.append(self.conn.bio_read(BIO_READ_SIZE))
                except SSL.WantReadError:
                    break
            if chunks:
                send_all(self.sock, chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _flush_quietly(self) -> None:
        """Deliver a final alert if the socket still takes it; the error is raised anyway."""
        try:
            self._flush()
        except OSError:
            pass

    def _record_alerts(self, conn: SSL.Connection, where: int, ret: int) -> None:
        if where & SSL.SSL_CB_ALERT and ret >> 8 == _FATAL:
            if where & SSL.SSL_CB_WRITE:
                self.alert_sent = ret & 0xFF
            elif where & SSL.SSL_CB_READ:
                self.alert_received = ret & 0xFF


def send_all(sock, data: bytes) -> None:
    """``sock.sendall(data)``, but one ``send()`` first: gevent's sendall() asks the kernel for
    SO_SNDBUF on every call, a syscall per record that a socket with room never needs."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def client_handshake(
    sock, ctx: SSL.Context, server_name: str, timeout: float
) -> GreenTLSConnection:
    """TLS to an upstream over ``sock``, verified as ``ctx`` says; raises TLSHandshakeError."""
    tls = GreenTLSConnection(sock, prepare_upstream_connection(ctx, server_name))
    tls._handshake(timeout)
    return tls


def _reason(exc: SSL.Error, verify_failure: str | None) -> str:
    """OpenSSL's reasons, e.g. ``unsupported protocol``; plus why verification failed."""
    if isinstance(exc, SSL.SysCallError):
        reason = "unexpected end of stream" if exc.args[0] == -1 else str(exc.args[1])
    elif exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        reason = "; ".join(str(item[-1]) for item in exc.args[0])
    else:
        reason = str(exc) or type(exc).__name__
    if verify_failure:
        reason = f"{reason} ({verify_failure})"
    return reason
