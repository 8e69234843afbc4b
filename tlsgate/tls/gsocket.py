"""Cooperative pyOpenSSL over gevent sockets, through memory BIOs.

The worker makes a `GreenTLSConnection` per TLS session it speaks: `server(sock, ctx)`
to terminate a client's TLS, or over `prepare_upstream_connection` to re-encrypt to an
upstream. Its event-loop code does the socket I/O itself and uses the sans-IO methods:
the handshake (tlsgate/worker/handshake.py) `take_ciphertext`, `_handshake_step` and
`ciphertext_out`, feeding first the ClientHello bytes the core already read so the
client sees one normal handshake; the relay (tlsgate/worker/tlspump.py) `read_plaintext`,
`write_plaintext`, `write_close_notify` and `may_hold_input` too. Greenlet code (the
worker's hand-over for a host-name upstream, tests, tools) blocks instead:
`server_handshake`, `client_handshake`, and `recv`/`sendall`/`shutdown`/`close` as on a
plain gevent socket.

OpenSSL never touches the socket: it reads from and writes to memory BIOs, and this
module moves bytes between the BIOs and the gevent socket (whose recv/sendall yield
to the hub). So OpenSSL calls never block, and every byte OpenSSL writes, including
the alert of a failed handshake, is flushed to the peer before an error is raised.
Two greenlets may call `recv` and `sendall` at the same time: flushing is serialised by
a lock so records never interleave on the wire.

Cost per connection: the hot calls (handshake steps, BIO reads and writes, record
reads and writes) go to OpenSSL through pyOpenSSL's own cffi binding (``OpenSSL._util``)
rather than its Python methods, which raise an exception for every "want read" and
allocate a 64 KiB buffer per BIO read; any other outcome is handed to pyOpenSSL's
``_raise_ssl_error``, so errors are the exceptions pyOpenSSL raises. Fatal alerts are
learnt from one module-wide info callback (OpenSSL calls it for every handshake state;
pyOpenSSL's per-connection callback costs a cffi closure per connection and a weak-dict
lookup per state). scripts/bench_handshake.py measures it.
"""

from __future__ import annotations

import socket

import gevent
import gevent.lock
from cryptography import x509
from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from tlsgate.errors import TlsgateError
from tlsgate.tls.contexts import iana_cipher_name, prepare_upstream_connection, verify_error

BIO_READ_SIZE = 65536
SOCKET_READ_SIZE = 65536
WRITE_CHUNK = 65536
"""Plaintext handed to OpenSSL per flush: bounds the ciphertext buffered in memory."""
_FATAL = 2

_WANT_READ = _lib.SSL_ERROR_WANT_READ
_CB_ALERT = _lib.SSL_CB_ALERT
_CB_READ = _lib.SSL_CB_READ
_CB_WRITE = _lib.SSL_CB_WRITE
_SSL_do_handshake = _lib.SSL_do_handshake
_SSL_get_error = _lib.SSL_get_error
_SSL_read = _lib.SSL_read
_SSL_pending = _lib.SSL_pending
_SSL_write = _lib.SSL_write
_BIO_read = _lib.BIO_read
_BIO_write = _lib.BIO_write
_reverse_mapping = SSL.Connection._reverse_mapping

_SCRATCH = _ffi.new("char[]", BIO_READ_SIZE)
"""One buffer for every BIO and record read: the bytes are copied out before anything
can yield, and gevent runs one greenlet at a time."""
_scratch_bytes = _ffi.buffer


@_ffi.callback("void (*)(const SSL *, int, int)")
def _record_alert(ssl, where: int, ret: int) -> None:
    """OpenSSL's info callback: keep the fatal alerts, sent and received, on the Connection."""
    if where & _CB_ALERT and ret >> 8 == _FATAL:
        conn = _reverse_mapping.get(ssl)
        if conn is None:
            return
        if where & _CB_WRITE:
            conn._tlsgate_alert_sent = ret & 0xFF
        elif where & _CB_READ:
            conn._tlsgate_alert_received = ret & 0xFF


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
        self.closed_by_peer = False
        """True once the peer sent close_notify."""
        self.truncated = False
        """True if the peer's TCP stream ended without close_notify."""
        self._flush_lock = gevent.lock.Semaphore()
        self._fed = False
        """Ciphertext went in since OpenSSL last said it wants more (see `may_hold_input`)."""
        self._ssl = conn._ssl
        self._into_ssl = conn._into_ssl
        self._from_ssl = conn._from_ssl
        conn._tlsgate_alert_sent = None
        conn._tlsgate_alert_received = None
        _lib.SSL_set_info_callback(self._ssl, _record_alert)

    @property
    def alert_sent(self) -> int | None:
        """Description number of the fatal alert we sent, if any."""
        return self.conn._tlsgate_alert_sent

    @alert_sent.setter
    def alert_sent(self, value: int | None) -> None:
        self.conn._tlsgate_alert_sent = value

    @property
    def alert_received(self) -> int | None:
        """Description number of the fatal alert the peer sent, if any."""
        return self.conn._tlsgate_alert_received

    @alert_received.setter
    def alert_received(self, value: int | None) -> None:
        self.conn._tlsgate_alert_received = value

    @classmethod
    def server(cls, sock, ctx: SSL.Context) -> GreenTLSConnection:
        conn = SSL.Connection(ctx, None)
        conn.set_accept_state()
        return cls(sock, conn)

    def server_handshake(self, initial_bytes: bytes = b"", timeout: float = 60.0) -> None:
        """Complete the server handshake, starting from bytes already read from the client."""
        if initial_bytes:
            self._feed(initial_bytes)
        self._handshake(timeout)

    def _handshake(self, timeout: float) -> None:
        expired = TLSHandshakeTimeout(f"TLS handshake not completed within {timeout:g}s")
        try:
            with gevent.Timeout(timeout, expired):
                while not self._handshake_step():
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
            raise handshake_error(self, exc) from exc
        except OSError as exc:
            raise TLSHandshakeError(
                f"socket error during the handshake: {exc}", self.alert_sent, self.alert_received
            ) from exc

    def _handshake_step(self) -> bool:
        """One SSL_do_handshake: True when done, False when it wants more input.

        Anything else goes through pyOpenSSL's error mapping (so callbacks' exceptions
        and OpenSSL errors are raised exactly as ``Connection.do_handshake`` raises them).
        """
        ssl = self._ssl
        result = _SSL_do_handshake(ssl)
        if result != 1 and _SSL_get_error(ssl, result) == _WANT_READ:
            _raise_callback_problems(self.conn._context)
            return False
        self.conn._raise_ssl_error(ssl, result)  # raises, unless it really is done
        return True

    # -- data phase ----------------------------------------------------------------

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` plaintext bytes; b"" at close_notify or end of stream."""
        while True:
            try:
                data = self.read_plaintext(bufsize)
            except TLSStreamError:
                self._flush_quietly()  # the alert OpenSSL wrote for the peer
                raise
            if data is not None:
                return data
            self._flush()  # TLS 1.3 post-handshake replies (KeyUpdate) go out first
            raw = self.sock.recv(SOCKET_READ_SIZE)
            if not raw:
                self.truncated = True
                return b""
            self._feed(raw)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), WRITE_CHUNK):
            try:
                self.write_plaintext(view[start : start + WRITE_CHUNK])
            except TLSStreamError:
                self._flush_quietly()
                raise
            self._flush()

    # -- the same without the socket: for a relay that does its own non-blocking I/O ------

    def take_ciphertext(self, raw: bytes) -> None:
        """Bytes read from the peer, for `read_plaintext` to decrypt."""
        self._feed(raw)

    @property
    def may_hold_input(self) -> bool:
        """Whether `read_plaintext` may have something without another socket read: records
        that came in the same read as the handshake's last flight, or plaintext left over."""
        return self._fed or _SSL_pending(self._ssl) > 0

    def read_plaintext(self, bufsize: int) -> bytes | None:
        """Up to ``bufsize`` plaintext bytes OpenSSL can give now; None when it needs more
        ciphertext first, b"" at the peer's close_notify. Raises `TLSStreamError`. Replies
        OpenSSL owes the peer (a KeyUpdate's, an alert) wait in `ciphertext_out`."""
        if bufsize > BIO_READ_SIZE:
            bufsize = BIO_READ_SIZE
        ssl = self._ssl
        result = _SSL_read(ssl, _SCRATCH, bufsize)
        if result > 0:
            return _scratch_bytes(_SCRATCH, result)[:]
        try:
            self.conn._raise_ssl_error(ssl, result)
        except SSL.WantReadError:
            self._fed = False  # OpenSSL took everything it was given
            return None
        except SSL.ZeroReturnError:
            self.closed_by_peer = True
            return b""
        except SSL.Error as exc:
            raise TLSStreamError(_reason(exc, None)) from exc
        return None  # SSL_read gave nothing without an error: nothing to give yet

    def write_plaintext(self, data) -> None:
        """Encrypt all of ``data`` (a memory BIO never pushes back); see `ciphertext_out`."""
        ssl = self._ssl
        with _ffi.from_buffer(data) as buffer:
            start, size = 0, len(buffer)
            while start < size:
                result = _SSL_write(ssl, buffer + start, size - start)
                if result <= 0:
                    try:
                        self.conn._raise_ssl_error(ssl, result)
                    except SSL.Error as exc:
                        raise TLSStreamError(_reason(exc, None)) from exc
                    raise TLSStreamError(f"SSL_write returned {result}")
                start += result

    def write_close_notify(self) -> None:
        """TLS's half-close, into `ciphertext_out`; nothing if the session cannot send one."""
        try:
            self.conn.shutdown()
        except SSL.Error:
            pass

    def ciphertext_out(self) -> bytes:
        """What OpenSSL has written for the peer since the last call (b"" if nothing)."""
        return self._outgoing()

    def shutdown(self) -> None:
        """Send close_notify (TLS's half-close); the peer may still send until it closes."""
        self.write_close_notify()
        self._flush_quietly()

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
        self._feed(raw)
        return True

    def _feed(self, raw: bytes) -> None:
        """Hand bytes from the peer to OpenSSL (a memory BIO takes them all)."""
        self._fed = True
        if type(raw) is not bytes:
            raw = bytes(raw)
        if _BIO_write(self._into_ssl, raw, len(raw)) != len(raw):
            self.conn.bio_write(b"")  # not expected of a memory BIO: let pyOpenSSL raise
            raise MemoryError("OpenSSL's memory BIO did not take the bytes")

    def _outgoing(self) -> bytes:
        """Everything OpenSSL has written for the peer so far (b"" if nothing)."""
        from_ssl = self._from_ssl
        count = _BIO_read(from_ssl, _SCRATCH, BIO_READ_SIZE)
        if count <= 0:
            return b""  # an empty memory BIO (the only way its read fails)
        data = _scratch_bytes(_SCRATCH, count)[:]
        if count < BIO_READ_SIZE:
            return data  # a memory BIO's short read means it is now empty
        chunks = [data]
        while count == BIO_READ_SIZE:
            count = _BIO_read(from_ssl, _SCRATCH, BIO_READ_SIZE)
            if count > 0:
                chunks.append(_scratch_bytes(_SCRATCH, count)[:])
        return b"".join(chunks)

    def _flush(self) -> None:
        with self._flush_lock:
            data = self._outgoing()
            if data:
                send_all(self.sock, data)

    def _flush_quietly(self) -> None:
        """Deliver a final alert if the socket still takes it; the error is raised anyway."""
        try:
            self._flush()
        except OSError:
            pass


def handshake_error(tls: GreenTLSConnection, exc: SSL.Error) -> TLSHandshakeError:
    """The `TLSHandshakeError` for an OpenSSL error during ``tls``'s handshake."""
    return TLSHandshakeError(
        _reason(exc, verify_error(tls.conn)), tls.alert_sent, tls.alert_received
    )


def _raise_callback_problems(ctx: SSL.Context) -> None:
    """What pyOpenSSL's ``_raise_ssl_error`` does first: re-raise a callback's exception."""
    for helper in (ctx._verify_helper, ctx._alpn_select_helper, ctx._ocsp_helper):
        if helper is not None:
            helper.raise_if_problem()


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
