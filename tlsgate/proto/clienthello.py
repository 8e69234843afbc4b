"""Sans-IO TLS ClientHello parser: the bytes a client has sent so far -> hello, "need more", or error.

The worker first tries `hello_in_one_record` on a new connection's first read (the
usual case: the whole hello in one record); otherwise it feeds every read to a
`ClientHelloReader` while it peeks at the connection (the incremental form of
`parse_client_hello(buffer)`, which parses everything the client has sent so far). It
never consumes bytes: whatever the outcome, it later replays everything it read to the
upstream or to the TLS terminator. Three outcomes, as in mitmproxy's `parse_client_hello`:

* ``None``: the ClientHello is not complete yet; read more and call again.
* a `ClientHello`: the message is complete and well formed.
* `ClientHelloError`: the bytes can never become a valid ClientHello. Its
  ``reason`` is the close reason for the connection event and its ``alert`` the
  fatal alert to send first (see tlsgate/proto/alerts.py), or None to close
  without one (the peer does not speak TLS, so an alert would be noise to it).

The parser reassembles a ClientHello split over any number of TLS records (1-byte
records are legal) and over any number of reads. A call is O(len(buffer)): it
first walks the record headers only, and decodes the message only once all of it
is present; it never copies more than the message and never recurses. The reader
keeps its place between reads, so a whole hello costs O(total bytes) however it
is cut.

Alerts chosen (RFC 8446 §6.2 defines them; where it leaves a choice we mostly send
what OpenSSL 3 sends, as most backends behind the gateway would). Inside the SNI
extension we follow RFC 8446's definitions instead: decode_error for lengths,
illegal_parameter for well-encoded but wrong content (OpenSSL says decode_error
to both):

===========================================================  ==================  ===================
what                                                         alert               reason
===========================================================  ==================  ===================
first record is not TLS (HTTP, STARTTLS, SSLv2 hello, junk)  none                not_tls
change_cipher_spec/alert/app data/heartbeat record (§5.1)    unexpected_message  bad_client_hello
zero-length handshake record (§5.1 forbids them)             unexpected_message  bad_client_hello
record longer than 2^14 bytes (§5.1)                         record_overflow     bad_client_hello
later record with version major != 3 (OpenSSL too)           protocol_version    bad_client_hello
handshake message other than client_hello                    unexpected_message  bad_client_hello
handshake length > max_handshake_message, from the header    illegal_parameter   handshake_too_large
(OpenSSL's SSL_R_EXCESSIVE_MESSAGE_SIZE)
legacy_version major != 3                                    protocol_version    bad_client_hello
a length inconsistent or outside its vector's range          decode_error        bad_client_hello
(session id > 32 bytes, empty or odd cipher list, ...)
the same extension type twice (§4.2)                         illegal_parameter   bad_client_hello
SNI: two host names, another name type, non-ASCII name       illegal_parameter   bad_client_hello
===========================================================  ==================  ===================

A well-formed but invalid host name ("a..b", "Example.COM.", "1.2.3.4") is not a
parser error: ``server_name`` carries it as sent and the caller runs it through
`tlsgate.proto.sni.normalise_sni`. Bytes after the ClientHello inside its last
record (another handshake message, which a client must not send yet) are left to
the TLS endpoint that gets the replayed bytes.
"""

from __future__ import annotations

from tlsgate.proto.alerts import (
    ILLEGAL_PARAMETER,
    PROTOCOL_VERSION,
    RECORD_OVERFLOW,
    UNEXPECTED_MESSAGE,
)
from tlsgate.proto.hellobody import (  # noqa: F401  (re-exported: the parser's public names)
    EXT_ALPN,
    EXT_EC_POINT_FORMATS,
    EXT_SERVER_NAME,
    EXT_SIGNATURE_ALGORITHMS,
    EXT_SUPPORTED_GROUPS,
    EXT_SUPPORTED_VERSIONS,
    REASON_BAD_CLIENT_HELLO,
    REASON_HANDSHAKE_TOO_LARGE,
    REASON_NOT_TLS,
    SNI_HOST_NAME,
    ClientHello,
    ClientHelloError,
    _bad,
    is_grease,
    parse_body,
    parse_well_formed,
)

CONTENT_HANDSHAKE = 22
# change_cipher_spec, alert, application_data, heartbeat: TLS, but not where a hello belongs
_OTHER_TLS_CONTENT_TYPES = frozenset({20, 21, 23, 24})

HANDSHAKE_CLIENT_HELLO = 1
RECORD_HEADER_LENGTH = 5
HANDSHAKE_HEADER_LENGTH = 4
MAX_RECORD_PLAINTEXT = 1 << 14
"""RFC 8446 §5.1: a TLSPlaintext fragment is at most 2^14 bytes (record_overflow beyond)."""
DEFAULT_MAX_HANDSHAKE_MESSAGE = 64 * 1024


def parse_client_hello(
    buf: bytes | bytearray | memoryview,
    max_handshake_message: int = DEFAULT_MAX_HANDSHAKE_MESSAGE,
) -> ClientHello | None:
    """Parse the client's first bytes; None until the whole ClientHello is there.

    ``max_handshake_message`` bounds the handshake body length (the 24-bit length
    field); a larger one raises `ClientHelloError` (handshake_too_large) as soon as
    the 4-byte handshake header has arrived. See the module docstring for the
    alert sent for each error. To parse as the bytes arrive, use `ClientHelloReader`.
    """
    return _parse(memoryview(buf).cast("B"), max_handshake_message, _Walk())


class ClientHelloReader:
    """`parse_client_hello` for a buffer that grows read by read (the worker's peek loop).

    It remembers how far the record walk got, so each `feed` walks only the records
    that arrived since the last one: a hello sent as thousands of tiny records over
    thousands of reads costs O(total bytes), not O(reads x bytes), which would let one
    slow client keep a worker busy re-walking its records.
    """

    __slots__ = ("buffer", "_max", "_walk")

    def __init__(self, max_handshake_message: int = DEFAULT_MAX_HANDSHAKE_MESSAGE):
        self.buffer = bytearray()
        """Everything fed so far (replayed later to the upstream or the TLS terminator)."""
        self._max = max_handshake_message
        self._walk = _Walk()

    def feed(self, data: bytes) -> ClientHello | None:
        """Add one read's bytes; same outcomes as `parse_client_hello` on `buffer`."""
        self.buffer += data
        return _parse(memoryview(self.buffer), self._max, self._walk)


class _Walk:
    """How far the record walk got: only complete records are committed here."""

    __slots__ = ("pos", "header", "needed", "have", "fragments")

    def __init__(self):
        self.pos = 0
        """Offset of the first record not yet complete."""
        self.header = b""
        """The handshake header bytes (up to 4) found in complete records."""
        self.needed: int | None = None
        """Header + body length, once the header is known."""
        self.have = 0
        self.fragments: list[tuple[int, int]] = []


def hello_in_one_record(data: bytes, max_handshake_message: int) -> ClientHello | None:
    """`parse_client_hello(data)` for the usual first read, a well-formed hello in a single
    record, taken straight to `parse_well_formed` (the worker then needs no reader and no
    buffer). None for anything else (more to come, several records, an error): the caller
    then feeds ``data`` to a `ClientHelloReader`, which handles it as every input."""
    size = len(data)
    if size < 9 or data[0] != CONTENT_HANDSHAKE or data[1] != 3 or data[5] != HANDSHAKE_CLIENT_HELLO:
        return None
    end = RECORD_HEADER_LENGTH + (data[3] << 8 | data[4])
    body_length = data[6] << 16 | data[7] << 8 | data[8]
    if (
        end > size
        or end - RECORD_HEADER_LENGTH > MAX_RECORD_PLAINTEXT
        or body_length + HANDSHAKE_HEADER_LENGTH + RECORD_HEADER_LENGTH != end
        or body_length > max_handshake_message
    ):
        return None
    return parse_well_formed(bytes(data[RECORD_HEADER_LENGTH + HANDSHAKE_HEADER_LENGTH : end]), end)


def _parse(view: memoryview, max_handshake_message: int, walk: _Walk) -> ClientHello | None:
    size = len(view)
    if size == 0:
        return None
    _check_first_bytes(view)

    while walk.needed is None or walk.have < walk.needed:
        pos = walk.pos
        if pos >= size:
            return None
        content_type = view[pos]
        if content_type != CONTENT_HANDSHAKE:
            raise _unexpected_content(content_type, pos)
        if pos + RECORD_HEADER_LENGTH > size:
            return None
        if view[pos + 1] != 3:
            version = f"{view[pos + 1]}.{view[pos + 2]}"
            raise _bad(PROTOCOL_VERSION, f"record at offset {pos} has version {version}")
        length = view[pos + 3] << 8 | view[pos + 4]
        if length > MAX_RECORD_PLAINTEXT:
            raise _bad(RECORD_OVERFLOW, f"record at offset {pos} is {length} bytes long")
        if length == 0:
            raise _bad(UNEXPECTED_MESSAGE, f"zero-length handshake record at offset {pos}")
        start = pos + RECORD_HEADER_LENGTH
        end = start + length
        if walk.needed is None:
            # Checked as soon as its bytes arrive (a too-large length fails early), but
            # committed only with a complete record, so a re-walk never counts bytes twice.
            header = walk.header + bytes(
                view[start : min(start + HANDSHAKE_HEADER_LENGTH - len(walk.header), end)]
            )
            needed = _check_handshake_header(header, max_handshake_message)
            if end > size:
                return None
            walk.header, walk.needed = header, needed
        elif end > size:
            return None
        walk.fragments.append((start, end))
        walk.have += length
        walk.pos = end

    fragments, needed = walk.fragments, walk.needed
    if len(fragments) == 1:
        start, end = fragments[0]
        message = view[start:end]
    else:
        message = memoryview(b"".join(view[start:end] for start, end in fragments))
    return parse_body(message[HANDSHAKE_HEADER_LENGTH:needed], raw_length=walk.pos)


def _check_first_bytes(view: memoryview) -> None:
    """Reject a first record that is not TLS at all (no alert) or not a handshake."""
    first = view[0]
    if first != CONTENT_HANDSHAKE and first not in _OTHER_TLS_CONTENT_TYPES:
        raise ClientHelloError(REASON_NOT_TLS, None, _describe_not_tls(view))
    if len(view) < 2:
        return
    if view[1] != 3:
        raise ClientHelloError(REASON_NOT_TLS, None, _describe_not_tls(view))
    if first != CONTENT_HANDSHAKE:
        raise _unexpected_content(first, 0)


def _describe_not_tls(view: memoryview) -> str:
    head = bytes(view[:8])
    if head[0] & 0x80 and len(head) >= 3 and head[2] == 1:
        return "SSLv2-style ClientHello (not supported)"
    if head[:1].isalpha():
        return f"plain text, not TLS: {head!r}"
    return f"not a TLS record: first bytes {head.hex()}"


def _unexpected_content(content_type: int, pos: int) -> ClientHelloError:
    return _bad(UNEXPECTED_MESSAGE, f"record of content type {content_type} at offset {pos}")


def _check_handshake_header(header: bytes, max_handshake_message: int) -> int | None:
    """Check as much of the handshake header as has arrived; its total length once complete."""
    if header and header[0] != HANDSHAKE_CLIENT_HELLO:
        raise _bad(UNEXPECTED_MESSAGE, f"handshake message of type {header[0]}, not client_hello")
    if len(header) < HANDSHAKE_HEADER_LENGTH:
        return None
    body_length = header[1] << 16 | header[2] << 8 | header[3]
    if body_length > max_handshake_message:
        raise ClientHelloError(
            REASON_HANDSHAKE_TOO_LARGE,
            ILLEGAL_PARAMETER,
            f"ClientHello of {body_length} bytes exceeds the limit of {max_handshake_message}",
        )
    return HANDSHAKE_HEADER_LENGTH + body_length
