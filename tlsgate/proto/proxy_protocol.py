"""PROXY protocol headers, versions 1 and 2: built for upstreams, parsed for tests and inbound PROXY.

This module owns the byte layout of haproxy's PROXY protocol (doc/proxy-protocol.txt,
revision 2020/03/05). It is pure and sans-IO:

- `build_v1` / `build_v2` / `build_header` turn the client's and the gateway's address into
  the header that the worker's upstream code writes before anything else on an upstream
  connection (before the TLS handshake when the upstream speaks TLS). They run once per
  proxied connection, so they only do `socket.inet_pton` and `struct.pack`.
- `parse_proxy_header` reads a header back: `None` while more bytes are needed, a
  `ProxyHeader` when complete, `ProxyHeaderError` when the bytes can never become a valid
  header. The tests use it, and so will a listener that accepts PROXY headers itself.

Mixed address families (an IPv4 client reached through an IPv6 listener address, or the
reverse) are sent the way haproxy's ``make_proxy_line_v1``/``make_proxy_line_v2`` send them:
when either side is IPv6, both are sent as IPv6 and the IPv4 one is written as its
IPv4-mapped form ``::ffff:a.b.c.d``. The spec leaves this case open; ``UNKNOWN`` would
make receivers fall back to our own address, losing the client's, and some receivers
reject ``UNKNOWN`` outright. Addresses are otherwise sent in the family they are given in:
``::ffff:a.b.c.d`` from a dual-stack socket stays IPv6, as haproxy does.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

from tlsgate.errors import ProtocolError

Address = tuple[str, int]
"""``(ip_literal, port)``: what ``getpeername()``/``getsockname()`` give, minus flow info."""
Command = Literal["PROXY", "LOCAL"]
Family = Literal["INET", "INET6", "UNIX", "UNSPEC"]
Transport = Literal["STREAM", "DGRAM", "UNSPEC"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107
"""The longest v1 line, CRLF included (``PROXY UNKNOWN`` with two full IPv6 addresses)."""
V2_MAX_LENGTH = 4096
"""Our bound on a whole v2 header. The spec has none beyond the 16-bit length; real senders
stay far below this (addresses, ALPN, a <=255-byte authority, a few SSL strings)."""

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_TYPE_NETNS = 0x30

_V2_FIXED = struct.Struct("!12sBBH")
_V2_LENGTH = struct.Struct("!H")
_V2_INET = struct.Struct("!4s4sHH")
_V2_INET6 = struct.Struct("!16s16sHH")
_TLV_HEAD = struct.Struct("!BH")
_V2_PROXY_TCP4 = V2_SIGNATURE + b"\x21\x11"
_V2_PROXY_TCP6 = V2_SIGNATURE + b"\x21\x21"
_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"
_MAX_TLV_BYTES = V2_MAX_LENGTH - 16 - _V2_INET6.size

# The byte at offset 13 (family << 4 | transport) -> (family, transport, address block size).
# Only the seven combinations the spec lists are accepted; for any other byte we could not
# even tell where the address block ends and the TLVs start.
_V2_FAMILIES: dict[int, tuple[Family, Transport, int]] = {
    0x00: ("UNSPEC", "UNSPEC", 0),
    0x11: ("INET", "STREAM", _V2_INET.size),
    0x12: ("INET", "DGRAM", _V2_INET.size),
    0x21: ("INET6", "STREAM", _V2_INET6.size),
    0x22: ("INET6", "DGRAM", _V2_INET6.size),
    0x31: ("UNIX", "STREAM", 216),
    0x32: ("UNIX", "DGRAM", 216),
}
_V2_COMMANDS: dict[int, Command] = {0x0: "LOCAL", 0x1: "PROXY"}
_V1_PROTOCOLS = (b"TCP4", b"TCP6", b"UNKNOWN")
# Bytes that can appear in a TCP4/TCP6 line; anything else fails before the CRLF arrives.
_V1_TEXT = b"0123456789abcdefABCDEFPROXYTCPUNKNOWN .:\r"


class ProxyHeaderError(ProtocolError):
    """The bytes are not, and can never become, a valid PROXY protocol header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed PROXY protocol header."""

    version: Literal[1, 2]
    command: Command
    """``LOCAL`` (v2 only): the sender's own connection, e.g. a health check."""
    family: Family
    """``UNSPEC`` for v1 ``UNKNOWN`` and for v2 ``AF_UNSPEC``."""
    transport: Transport
    source: Address | None
    """The client. ``None`` for LOCAL, UNSPEC and UNIX: use the real peer address then."""
    destination: Address | None
    """The address the client connected to; ``None`` whenever ``source`` is."""
    tlvs: dict[int, bytes] = field(default_factory=dict, hash=False)
    """v2 TLVs by type, NOOP padding left out; the CRC32C one, if any, was verified."""
    length: int = 0
    """Bytes of the buffer the header took; the payload starts there."""

    @property
    def authority(self) -> str | None:
        """PP2_TYPE_AUTHORITY: the client's SNI when the sender saw TLS."""
        value = self.tlvs.get(PP2_TYPE_AUTHORITY)
        return None if value is None else value.decode("utf-8")

    @property
    def alpn(self) -> bytes | None:
        """PP2_TYPE_ALPN: the negotiated application protocol, e.g. ``b"h2"``."""
        return self.tlvs.get(PP2_TYPE_ALPN)


# --- building -------------------------------------------------------------------------


def build_header(
    version: Literal[1, 2],
    client: Address,
    server: Address,
    *,
    authority: str | None = None,
    alpn: bytes | None = None,
) -> bytes:
    """The header for an upstream's ``proxy_protocol`` setting; v1 has no room for TLVs."""
    if version == 2:
        return build_v2(client, server, authority=authority, alpn=alpn)
    if version == 1:
        return build_v1(client, server)
    raise ValueError(f"PROXY protocol version must be 1 or 2, not {version!r}")


def build_v1(client: Address, server: Address) -> bytes:
    """``PROXY TCP4|TCP6 <client ip> <server ip> <client port> <server port>\\r\\n``."""
    family, client_ip, server_ip = _packed_pair(client, server)
    keyword = "TCP4" if family == socket.AF_INET else "TCP6"
    line = (
        f"PROXY {keyword} {socket.inet_ntop(family, client_ip)} "
        f"{socket.inet_ntop(family, server_ip)} {client[1]} {server[1]}\r\n"
    )
    return line.encode("ascii")


def build_v2(
    client: Address,
    server: Address,
    *,
    authority: str | None = None,
    alpn: bytes | None = None,
) -> bytes:
    """The binary v2 header: PROXY command, TCP over IPv4/IPv6, then the TLVs.

    ``alpn`` becomes PP2_TYPE_ALPN and ``authority`` (the SNI) PP2_TYPE_AUTHORITY, in that
    order, as haproxy writes them; each is left out when ``None`` or empty.
    """
    family, client_ip, server_ip = _packed_pair(client, server)
    if family == socket.AF_INET:
        prefix = _V2_PROXY_TCP4
        addresses = _V2_INET.pack(client_ip, server_ip, client[1], server[1])
    else:
        prefix = _V2_PROXY_TCP6
        addresses = _V2_INET6.pack(client_ip, server_ip, client[1], server[1])
    tlvs = b""
    if alpn:
        tlvs += _TLV_HEAD.pack(PP2_TYPE_ALPN, len(alpn)) + alpn
    if authority:
        value = authority.encode("utf-8")
        tlvs += _TLV_HEAD.pack(PP2_TYPE_AUTHORITY, len(value)) + value
    if len(tlvs) > _MAX_TLV_BYTES:
        # Keeps every header we build within what parse_proxy_header accepts.
        raise ValueError(f"PROXY v2 TLVs too long: {len(tlvs)} bytes")
    return prefix + _V2_LENGTH.pack(len(addresses) + len(tlvs)) + addresses + tlvs


def _packed_pair(client: Address, server: Address) -> tuple[int, bytes, bytes]:
    """The common family and both packed addresses, IPv4 mapped into IPv6 when mixed."""
    client_family, client_ip = _pack_ip(client)
    server_family, server_ip = _pack_ip(server)
    if client_family == server_family:
        return client_family, client_ip, server_ip
    if client_family == socket.AF_INET:
        client_ip = _V4_MAPPED_PREFIX + client_ip
    else:
        server_ip = _V4_MAPPED_PREFIX + server_ip
    return socket.AF_INET6, client_ip, server_ip


def _pack_ip(address: Address) -> tuple[int, bytes]:
    host, port = address
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port!r}")
    try:
        if ":" in host:
            # A link-local peer comes back as fe80::1%eth0; the zone means nothing upstream.
            return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        return socket.AF_INET, socket.inet_pton(socket.AF_INET, host)
    except OSError as e:
        raise ValueError(f"not an IP address: {host!r}") from e


# --- parsing --------------------------------------------------------------------------


def parse_proxy_header(buf: bytes) -> ProxyHeader | None:
    """Parse a v1 or v2 header at the start of ``buf``.

    Returns ``None`` when ``buf`` is a valid but incomplete start of a header, and raises
    `ProxyHeaderError` as soon as it cannot be one (including a v1 line without CRLF in its
    first 107 bytes and a v2 header longer than `V2_MAX_LENGTH`).
    """
    head = bytes(buf[:V2_MAX_LENGTH])
    if head.startswith(V2_SIGNATURE):
        return _parse_v2(head)
    if head.startswith(V1_PREFIX):
        return _parse_v1(head)
    if V2_SIGNATURE.startswith(head) or V1_PREFIX.startswith(head):
        return None
    raise ProxyHeaderError(f"not a PROXY protocol header: {head[:16]!r}")


def _parse_v1(head: bytes) -> ProxyHeader | None:
    end = head.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        _check_partial_v1(head[:V1_MAX_LENGTH])
        return None
    line = head[len(V1_PREFIX) : end]
    if b"\r" in line or b"\n" in line:
        # Rejected while incomplete too (_check_partial_v1): whether a header is accepted
        # must not depend on how its bytes were split into reads. haproxy ends the line at
        # the first CR as well, so a lone CR or LF never reaches an UNKNOWN's ignored part.
        raise ProxyHeaderError("PROXY v1: line ends with a lone CR or LF")
    length = end + 2
    keyword, _, rest = line.partition(b" ")
    if keyword == b"UNKNOWN":
        # The spec says to ignore whatever follows UNKNOWN up to the CRLF.
        return ProxyHeader(1, "PROXY", "UNSPEC", "UNSPEC", None, None, {}, length)
    if keyword == b"TCP4":
        family, family_name = socket.AF_INET, "INET"
    elif keyword == b"TCP6":
        family, family_name = socket.AF_INET6, "INET6"
    else:
        raise ProxyHeaderError(f"PROXY v1: unknown protocol {keyword!r}")
    fields = rest.split(b" ")
    if len(fields) != 4:
        raise ProxyHeaderError(f"PROXY v1: expected 4 fields after {keyword!r}, got {rest!r}")
    source = (_parse_v1_ip(family, fields[0]), _parse_v1_port(fields[2]))
    destination = (_parse_v1_ip(family, fields[1]), _parse_v1_port(fields[3]))
    return ProxyHeader(1, "PROXY", family_name, "STREAM", source, destination, {}, length)


def _check_partial_v1(head: bytes) -> None:
    """Fail early on a v1 line that no further bytes can make valid."""
    if len(head) >= V1_MAX_LENGTH:
        raise ProxyHeaderError(f"PROXY v1: no CRLF in the first {V1_MAX_LENGTH} bytes")
    if b"\n" in head or b"\r" in head[:-1]:
        raise ProxyHeaderError("PROXY v1: line ends with a lone CR or LF")
    # A trailing CR may be the first half of the CRLF; it ends the keyword like a space.
    keyword, space, _ = head[len(V1_PREFIX) :].rstrip(b"\r").partition(b" ")
    space = space or head.endswith(b"\r")
    if space and keyword not in _V1_PROTOCOLS:
        raise ProxyHeaderError(f"PROXY v1: unknown protocol {keyword!r}")
    if not space and not any(known.startswith(keyword) for known in _V1_PROTOCOLS):
        raise ProxyHeaderError(f"PROXY v1: unknown protocol {keyword!r}")
    if keyword != b"UNKNOWN" and head.translate(None, _V1_TEXT):
        raise ProxyHeaderError("PROXY v1: unexpected bytes in the address line")


def _parse_v1_ip(family: int, text: bytes) -> str:
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text.decode("ascii")))
    except (OSError, ValueError) as e:
        raise ProxyHeaderError(f"PROXY v1: bad address {text!r}") from e


def _parse_v1_port(text: bytes) -> int:
    # Decimal, no sign, no leading zero (the spec forbids them to avoid octal confusion).
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[0] == 0x30):
        raise ProxyHeaderError(f"PROXY v1: bad port {text!r}")
    port = int(text)
    if port > 0xFFFF:
        raise ProxyHeaderError(f"PROXY v1: port out of range {text!r}")
    return port


def _parse_v2(head: bytes) -> ProxyHeader | None:
    if len(head) < _V2_FIXED.size:
        return None
    _, version_command, family_byte, block_length = _V2_FIXED.unpack_from(head)
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2: version {version_command >> 4}, expected 2")
    command = _V2_COMMANDS.get(version_command & 0x0F)
    if command is None:
        raise ProxyHeaderError(f"PROXY v2: unassigned command {version_command & 0x0F:#x}")
    known = _V2_FAMILIES.get(family_byte)
    if known is None:
        raise ProxyHeaderError(f"PROXY v2: unsupported family/transport {family_byte:#04x}")
    family, transport, address_size = known
    total = _V2_FIXED.size + block_length
    if total > V2_MAX_LENGTH:
        raise ProxyHeaderError(f"PROXY v2: header of {total} bytes exceeds {V2_MAX_LENGTH}")
    if len(head) < total:
        return None
    if block_length < address_size:
        raise ProxyHeaderError(
            f"PROXY v2: {family} needs {address_size} address bytes, length is {block_length}"
        )
    source = destination = None
    if command == "PROXY" and family == "INET":
        src, dst, sport, dport = _V2_INET.unpack_from(head, _V2_FIXED.size)
        source = (socket.inet_ntop(socket.AF_INET, src), sport)
        destination = (socket.inet_ntop(socket.AF_INET, dst), dport)
    elif command == "PROXY" and family == "INET6":
        src, dst, sport, dport = _V2_INET6.unpack_from(head, _V2_FIXED.size)
        source = (socket.inet_ntop(socket.AF_INET6, src), sport)
        destination = (socket.inet_ntop(socket.AF_INET6, dst), dport)
    tlvs = _parse_tlvs(head, _V2_FIXED.size + address_size, total)
    return ProxyHeader(2, command, family, transport, source, destination, tlvs, total)


def _parse_tlvs(head: bytes, start: int, end: int) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    crc_offset = -1
    position = start
    while position < end:
        if position + _TLV_HEAD.size > end:
            raise ProxyHeaderError("PROXY v2: truncated TLV header")
        tlv_type, value_length = _TLV_HEAD.unpack_from(head, position)
        value_start = position + _TLV_HEAD.size
        position = value_start + value_length
        if position > end:
            raise ProxyHeaderError(f"PROXY v2: TLV {tlv_type:#04x} runs past the header")
        if tlv_type == PP2_TYPE_NOOP:
            continue
        if tlv_type in tlvs:
            # Two authorities (or two checksums) would let sender and receiver disagree.
            raise ProxyHeaderError(f"PROXY v2: TLV {tlv_type:#04x} repeated")
        tlvs[tlv_type] = head[value_start:position]
        if tlv_type == PP2_TYPE_CRC32C:
            if value_length != 4:
                raise ProxyHeaderError("PROXY v2: CRC32C TLV must be 4 bytes")
            crc_offset = value_start
    if crc_offset >= 0:
        zeroed = head[:crc_offset] + b"\x00\x00\x00\x00" + head[crc_offset + 4 : end]
        if crc32c(zeroed) != int.from_bytes(tlvs[PP2_TYPE_CRC32C], "big"):
            raise ProxyHeaderError("PROXY v2: CRC32C checksum mismatch")
    authority = tlvs.get(PP2_TYPE_AUTHORITY)
    if authority is not None:
        try:
            authority.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProxyHeaderError("PROXY v2: authority TLV is not UTF-8") from e
    return tlvs


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli, RFC 4960 appendix B), as PP2_TYPE_CRC32C uses it.

    Only the parser needs it, and only for senders that add the checksum TLV, so a plain
    table-driven loop is fast enough for headers of at most `V2_MAX_LENGTH` bytes.
    """
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
