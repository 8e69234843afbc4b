"""The ClientHello message itself: its fields, its errors, and decoding its body.

`tlsgate/proto/clienthello.py` walks the TLS records and hands the reassembled
handshake body to `parse_body` here; this module knows the message layout
(RFC 8446 §4.1.2) and the extensions the gateway reads (SNI, ALPN, supported
versions, signature algorithms, groups, point formats). Pure: bytes in, values out.

`parse_body` first tries `parse_well_formed`, a straight walk over a ``bytes`` copy
that accepts only what the careful parser accepts and gives up (None) at the first
thing it would have to report; the careful parser then runs and raises the precise
error. So every outcome is the careful parser's, at a fraction of its cost for the
hellos real clients send (tests/unit/test_perf_equivalence.py pins the equivalence, and the
clienthello fuzz target checks it on every input: scripts/fuzz/fuzzchecks/clienthello.py).
The walk decodes the fields it reads (but the SNI) through `_decoded`, which remembers
the decoding of the exact bytes: a client sends the same cipher suites, ALPN list,
signature algorithms and groups on every connection, so the usual hello is a walk over
the extension headers plus one dict lookup per field. The memory is bounded in entries
and in the length of a remembered field.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from tlsgate.errors import ProtocolError
from tlsgate.proto.alerts import DECODE_ERROR, ILLEGAL_PARAMETER, PROTOCOL_VERSION

REASON_NOT_TLS = "not_tls"
REASON_BAD_CLIENT_HELLO = "bad_client_hello"
REASON_HANDSHAKE_TOO_LARGE = "handshake_too_large"

EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B
SNI_HOST_NAME = 0
_U16_LIST_EXTENSIONS = {
    EXT_SIGNATURE_ALGORITHMS: "signature_algorithms",
    EXT_SUPPORTED_GROUPS: "supported_groups",
}
_PARSED_EXTENSIONS = frozenset(
    {EXT_SERVER_NAME, EXT_ALPN, EXT_SUPPORTED_VERSIONS, EXT_EC_POINT_FORMATS, *_U16_LIST_EXTENSIONS}
)

_VERSION_NAMES = {0x0304: "1.3", 0x0303: "1.2", 0x0302: "1.1", 0x0301: "1.0", 0x0300: "ssl3"}


def is_grease(value: int) -> bool:
    """True for the 16 reserved GREASE values 0x0a0a, 0x1a1a ... 0xfafa (RFC 8701)."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


class ClientHelloError(ProtocolError):
    """The client's first bytes can never become a valid ClientHello."""

    def __init__(self, reason: str, alert: int | None, message: str):
        super().__init__(message)
        self.reason = reason
        """Close reason for the connection event: not_tls, bad_client_hello, handshake_too_large."""
        self.alert = alert
        """Fatal alert description to send before closing, or None to close silently."""


class ClientHello(NamedTuple):
    """What the gateway needs from a ClientHello (routing, policy variables, JA4).

    A named tuple rather than a frozen dataclass: built once per connection on the
    accept path, where a frozen dataclass's ``__init__`` costs three times as much.
    """

    legacy_version: int
    """ClientHello.legacy_version (0x0303 for TLS 1.2 and 1.3 clients)."""
    cipher_suites: tuple[int, ...]
    """Cipher suites in the client's order, GREASE values included."""
    extensions: tuple[int, ...]
    """Extension types in the client's order, GREASE values included."""
    server_name: str | None = None
    """The SNI host name exactly as sent (ASCII, not normalised), or None without SNI."""
    alpn: tuple[str, ...] = ()
    """ALPN protocol names, decoded as Latin-1 so ``name.encode("latin-1")`` is the wire bytes."""
    supported_versions: tuple[int, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    supported_groups: tuple[int, ...] = ()
    ec_point_formats: tuple[int, ...] = ()
    raw_length: int = 0
    """Bytes of the buffer taken by the records that carry the hello (header bytes included)."""

    @property
    def highest_version(self) -> str:
        """Highest TLS version offered: "1.3", "1.2", "1.1", "1.0", "ssl3" or "0x...."

        From supported_versions (without GREASE, unknown and draft values) when the
        extension is there, else from legacy_version, as RFC 8446 §4.2.1 tells servers.
        """
        known = [v for v in self.supported_versions if v in _VERSION_NAMES]
        version = max(known) if known else self.legacy_version
        return _VERSION_NAMES.get(version, f"0x{version:04x}")


def _bad(alert: int, message: str) -> ClientHelloError:
    return ClientHelloError(REASON_BAD_CLIENT_HELLO, alert, message)


class _Reader:
    """Bounds-checked big-endian reads over a memoryview; every overrun is a decode_error."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: memoryview, what: str):
        self._data = data
        self._pos = 0
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, count: int, field: str) -> memoryview:
        start = self._pos
        end = start + count
        if end > len(self._data):
            raise _bad(DECODE_ERROR, f"{self._what}: {field} runs past the end")
        self._pos = end
        return self._data[start:end]

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        chunk = self.take(2, field)
        return chunk[0] << 8 | chunk[1]

    def vector8(self, field: str) -> memoryview:
        return self.take(self.u8(field), field)

    def vector16(self, field: str) -> memoryview:
        return self.take(self.u16(field), field)

    def expect_end(self) -> None:
        if self.remaining:
            raise _bad(DECODE_ERROR, f"{self._what}: {self.remaining} trailing bytes")


def _u16_list(data: memoryview, field: str) -> tuple[int, ...]:
    """A non-empty list of 16-bit values (every such list in a ClientHello is <2..2^16-2>)."""
    if len(data) % 2 or not data:
        raise _bad(DECODE_ERROR, f"{field}: bad length {len(data)}")
    return struct.unpack(f">{len(data) // 2}H", data)


def parse_body(body: memoryview, raw_length: int) -> ClientHello:
    hello = parse_well_formed(bytes(body), raw_length)
    if hello is not None:
        return hello
    return _parse_body_checked(body, raw_length)


def _parse_body_checked(body: memoryview, raw_length: int) -> ClientHello:
    reader = _Reader(body, "ClientHello")
    legacy_version = reader.u16("legacy_version")
    if legacy_version >> 8 != 3:
        raise _bad(PROTOCOL_VERSION, f"legacy_version 0x{legacy_version:04x} is not TLS")
    reader.take(32, "random")
    if len(reader.vector8("legacy_session_id")) > 32:
        raise _bad(DECODE_ERROR, "ClientHello: legacy_session_id longer than 32 bytes")
    cipher_suites = _u16_list(reader.vector16("cipher_suites"), "cipher_suites")
    if not reader.vector8("legacy_compression_methods"):
        raise _bad(DECODE_ERROR, "ClientHello: empty legacy_compression_methods")
    fields: dict[str, object] = {}
    extensions: list[int] = []
    seen: set[int] = set()
    if reader.remaining:  # pre-TLS 1.2 clients may send no extensions block at all
        block = reader.vector16("extensions")
        reader.expect_end()
        # Walked inline rather than with _Reader: this loop is most of the parsing time.
        pos, end = 0, len(block)
        while pos < end:
            if pos + 4 > end:
                raise _bad(DECODE_ERROR, "extensions: truncated extension header")
            ext_type = block[pos] << 8 | block[pos + 1]
            data_end = pos + 4 + (block[pos + 2] << 8 | block[pos + 3])
            if data_end > end:
                raise _bad(
                    DECODE_ERROR, f"extensions: extension 0x{ext_type:04x} runs past the end"
                )
            if ext_type in seen:
                raise _bad(ILLEGAL_PARAMETER, f"extension 0x{ext_type:04x} appears twice")
            seen.add(ext_type)
            extensions.append(ext_type)
            if ext_type in _PARSED_EXTENSIONS:
                _parse_extension(ext_type, block[pos + 4 : data_end], fields)
            pos = data_end
    return ClientHello(
        legacy_version=legacy_version,
        cipher_suites=cipher_suites,
        extensions=tuple(extensions),
        raw_length=raw_length,
        **fields,
    )


def _parse_extension(ext_type: int, data: memoryview, fields: dict[str, object]) -> None:
    """Decode the extensions the gateway uses into ``fields``; others are only listed."""
    if ext_type == EXT_SERVER_NAME:
        fields["server_name"] = _parse_server_name(data)
    elif ext_type == EXT_ALPN:
        fields["alpn"] = _parse_alpn(data)
    elif ext_type == EXT_SUPPORTED_VERSIONS:
        reader = _Reader(data, "supported_versions")
        fields["supported_versions"] = _u16_list(reader.vector8("versions"), "supported_versions")
        reader.expect_end()
    elif ext_type in _U16_LIST_EXTENSIONS:
        name = _U16_LIST_EXTENSIONS[ext_type]
        reader = _Reader(data, name)
        fields[name] = _u16_list(reader.vector16("list"), name)
        reader.expect_end()
    elif ext_type == EXT_EC_POINT_FORMATS:
        reader = _Reader(data, "ec_point_formats")
        formats = reader.vector8("list")
        reader.expect_end()
        if not formats:
            raise _bad(DECODE_ERROR, "ec_point_formats: empty list")
        fields["ec_point_formats"] = tuple(formats)


def _parse_server_name(data: memoryview) -> str:
    """RFC 6066 §3: a ServerNameList holding exactly one host_name entry."""
    outer = _Reader(data, "server_name")
    entries = _Reader(outer.vector16("server_name_list"), "server_name_list")
    outer.expect_end()
    if not entries.remaining:
        raise _bad(DECODE_ERROR, "server_name: empty server_name_list")
    host_name: str | None = None
    while entries.remaining:
        name_type = entries.u8("name_type")
        if name_type != SNI_HOST_NAME:
            raise _bad(
                ILLEGAL_PARAMETER, f"server_name: name_type {name_type} is not host_name (0)"
            )
        name = entries.vector16("host_name")
        if host_name is not None:
            raise _bad(ILLEGAL_PARAMETER, "server_name: more than one host_name")
        if not name:
            raise _bad(DECODE_ERROR, "server_name: empty host_name")
        try:
            host_name = str(name, "ascii")
        except UnicodeDecodeError:
            raise _bad(ILLEGAL_PARAMETER, "server_name: host_name is not ASCII") from None
    assert host_name is not None  # the list was not empty and every entry is a host_name
    return host_name


def _parse_alpn(data: memoryview) -> tuple[str, ...]:
    """RFC 7301 §3.1: a non-empty list of non-empty protocol names."""
    outer = _Reader(data, "alpn")
    names = _Reader(outer.vector16("protocol_name_list"), "protocol_name_list")
    outer.expect_end()
    if not names.remaining:
        raise _bad(DECODE_ERROR, "alpn: empty protocol_name_list")
    protocols = []
    while names.remaining:
        name = names.vector8("protocol_name")
        if not name:
            raise _bad(DECODE_ERROR, "alpn: empty protocol name")
        protocols.append(str(name, "latin-1"))
    return tuple(protocols)


def _u16s(data: bytes) -> tuple[int, ...] | None:
    """``data`` as a non-empty list of 16-bit values, else None."""
    length = len(data)
    if length == 0 or length & 1:
        return None
    return struct.unpack(f">{length >> 1}H", data)


def _u16_vector16(data: bytes) -> tuple[int, ...] | None:
    """A <2..2^16-2> list of 16-bit values behind its 2-byte length (signature_algorithms,
    supported_groups), else None."""
    if len(data) < 2 or data[0] << 8 | data[1] != len(data) - 2:
        return None
    return _u16s(data[2:])


def _server_name(data: bytes) -> str | None:
    """Exactly one host_name entry: list length, type 0, name length, name (ASCII)."""
    size = len(data)
    if size < 6 or data[0] << 8 | data[1] != size - 2 or data[2]:
        return None
    if data[3] << 8 | data[4] != size - 5:
        return None
    name = data[5:]
    return name.decode("ascii") if name.isascii() else None


def _alpn(data: bytes) -> tuple[str, ...] | None:
    size = len(data)
    if size < 4 or data[0] << 8 | data[1] != size - 2:
        return None
    names = []
    at = 2
    while at < size:
        name_end = at + 1 + data[at]
        if name_end == at + 1 or name_end > size:
            return None
        names.append(data[at + 1 : name_end].decode("latin-1"))
        at = name_end
    return tuple(names)


def _supported_versions(data: bytes) -> tuple[int, ...] | None:
    if len(data) < 1 or data[0] != len(data) - 1:
        return None
    return _u16s(data[1:])


def _point_formats(data: bytes) -> tuple[int, ...] | None:
    if len(data) < 2 or data[0] != len(data) - 1:
        return None
    return tuple(data[1:])


_CIPHER_SUITES = -1
"""`_decoded`'s kind for the cipher_suites vector (extension types are >= 0)."""
_DECODERS = {
    _CIPHER_SUITES: _u16s,
    EXT_ALPN: _alpn,
    EXT_SUPPORTED_VERSIONS: _supported_versions,
    EXT_EC_POINT_FORMATS: _point_formats,
    EXT_SIGNATURE_ALGORITHMS: _u16_vector16,
    EXT_SUPPORTED_GROUPS: _u16_vector16,
}
_DECODED: dict[tuple[int, bytes], object] = {}
_DECODED_SIZE = 1024
"""Entries kept; beyond it the cache starts over."""
_DECODED_MAX_BYTES = 256
"""Longer fields are decoded every time: the client chooses their size, up to the whole
message. A real client's longest (its cipher suites) is well under this."""
_EXT_HEADER = struct.Struct(">HH").unpack_from
_MISSING = object()
"""Not in `_DECODED` (a remembered decoding may be None: malformed bytes)."""


def _decoded(kind: int, data: bytes):
    """``_DECODERS[kind](data)``, remembered: a client sends the same bytes in these
    fields on every connection (its cipher suites, ALPN list, signature algorithms...),
    so the usual hello costs a dict lookup per field instead of a decode. Only the
    decoders' results are kept (None for malformed bytes), so the answer is always the
    one decoding would give."""
    if len(data) > _DECODED_MAX_BYTES:
        return _DECODERS[kind](data)
    key = (kind, data)
    value = _DECODED.get(key, _MISSING)
    if value is _MISSING:
        value = _DECODERS[kind](data)
        if len(_DECODED) >= _DECODED_SIZE:
            _DECODED.clear()
        _DECODED[key] = value
    return value


def parse_well_formed(data: bytes, raw_length: int) -> ClientHello | None:
    """`_parse_body_checked`'s result for a hello it accepts; None where it would raise."""
    end = len(data)
    if end < 35 or data[0] != 3:
        return None
    legacy_version = data[0] << 8 | data[1]
    session_id = data[34]
    if session_id > 32:
        return None
    pos = 35 + session_id
    if pos + 2 > end:
        return None
    length = data[pos] << 8 | data[pos + 1]
    pos += 2
    if pos + length > end:
        return None
    cipher_suites = _decoded(_CIPHER_SUITES, data[pos : pos + length])
    if cipher_suites is None:
        return None
    pos += length
    if pos >= end or data[pos] == 0 or pos + 1 + data[pos] > end:
        return None
    pos += 1 + data[pos]
    if pos == end:
        return ClientHello(legacy_version, cipher_suites, (), raw_length=raw_length)
    if pos + 2 > end or pos + 2 + (data[pos] << 8 | data[pos + 1]) != end:
        return None
    pos += 2
    extensions: list[int] = []
    server_name = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    point_formats: tuple[int, ...] = ()
    remembered = _DECODED.get
    while pos < end:
        if pos + 4 > end:
            return None
        ext_type, size = _EXT_HEADER(data, pos)
        start = pos + 4
        pos = start + size
        if pos > end:
            return None
        extensions.append(ext_type)
        if ext_type not in _PARSED_EXTENSIONS:
            continue
        if ext_type == EXT_SERVER_NAME:
            # Decoded every time: names vary more than the other fields, and cost little.
            server_name = _server_name(data[start:pos])
            if server_name is None:
                return None
            continue
        field = data[start:pos]
        value = remembered((ext_type, field), _MISSING)  # `_decoded`, its usual case inline
        if value is _MISSING:
            value = _decoded(ext_type, field)
        if value is None:
            return None
        if ext_type == EXT_ALPN:
            alpn = value
        elif ext_type == EXT_SUPPORTED_VERSIONS:
            versions = value
        elif ext_type == EXT_SIGNATURE_ALGORITHMS:
            signature_algorithms = value
        elif ext_type == EXT_SUPPORTED_GROUPS:
            groups = value
        else:
            point_formats = value
    if len(set(extensions)) != len(extensions):
        return None  # an extension appears twice
    return ClientHello(
        legacy_version,
        cipher_suites,
        tuple(extensions),
        server_name,
        alpn,
        versions,
        signature_algorithms,
        groups,
        point_formats,
        raw_length,
    )
