"""Fuzz target: `parse_proxy_header` on raw bytes, and build -> parse round trips.

Every input is used twice:

1. as raw bytes for `parse_proxy_header`: only None, a ProxyHeader or ProxyHeaderError
   may come out; a parsed header is re-parsed from exactly its own bytes to the same
   value, its prefixes are incomplete (None), and its ``authority``/``alpn`` properties
   work (the parser promised the authority is UTF-8);
2. as a `ByteSource` describing a client and a gateway address (IPv4, IPv6 with an
   optional zone, mixed families), ports, an authority and an ALPN value, given to
   `build_header` v1 or v2, whose output must parse back to the same addresses (the
   IPv4 side of a mixed pair as ``::ffff:a.b.c.d``) and TLVs.
"""

from __future__ import annotations

import ipaddress
import socket
import zlib

from tlsgate.proto.proxy_protocol import (
    ProxyHeader,
    ProxyHeaderError,
    build_header,
    parse_proxy_header,
)

from .bytesource import ByteSource


def check(data: bytes) -> None:
    _check_parse(data)
    _check_round_trip(ByteSource(data))


def _parse(data: bytes) -> ProxyHeader | ProxyHeaderError | None:
    try:
        return parse_proxy_header(data)
    except ProxyHeaderError as error:
        return error


def _check_parse(data: bytes) -> None:
    header = _parse(data)
    if header is None:
        if len(data) > 1:
            cut = 1 + zlib.crc32(data) % (len(data) - 1)
            assert _parse(data[:cut]) is None, f"prefix of {cut} bytes is not incomplete"
        return
    if isinstance(header, ProxyHeaderError):
        return
    assert 0 < header.length <= len(data), header.length
    assert _parse(data[: header.length]) == header
    cut = 1 + zlib.crc32(data) % max(header.length - 1, 1)
    if cut < header.length:
        assert _parse(data[:cut]) is None, f"prefix of {cut} bytes of a header is not incomplete"
    header.authority  # noqa: B018  (must not raise: the parser checked the UTF-8)
    header.alpn  # noqa: B018
    assert (header.source is None) == (header.destination is None), header


def _address(source: ByteSource) -> tuple[str, int, bytes, bool]:
    """``(host text as a socket gives it, port, packed address, is_ipv6)``."""
    if source.boolean():
        packed = source.take(16).ljust(16, b"\0")
        host = str(ipaddress.IPv6Address(packed))
        if source.int_in(0, 7) == 0:
            host += "%eth0"  # a link-local peer's zone: dropped when sent
        is_v6 = True
    else:
        packed = source.take(4).ljust(4, b"\0")
        host = str(ipaddress.IPv4Address(packed))
        is_v6 = False
    # Mostly valid ports; now and then one out of range, which must be a ValueError.
    port = source.int_in(0, 65535) if source.int_in(0, 15) else source.pick((-1, 65536, 1 << 20))
    return host, port, packed, is_v6


def _check_round_trip(source: ByteSource) -> None:
    version = source.pick((1, 2))
    client_host, client_port, client_packed, client_v6 = _address(source)
    server_host, server_port, server_packed, server_v6 = _address(source)
    authority = source.text(300) if source.boolean() else None
    alpn = source.blob(300) if source.boolean() else None
    bad_port = not (0 <= client_port <= 0xFFFF and 0 <= server_port <= 0xFFFF)
    try:
        wire = build_header(
            version,
            (client_host, client_port),
            (server_host, server_port),
            authority=authority,
            alpn=alpn,
        )
    except ValueError:
        assert bad_port, "build_header refused valid addresses"
        return
    assert not bad_port, f"build_header accepted port {client_port} / {server_port}"

    payload = b"\x16\x03\x01 client bytes"
    header = parse_proxy_header(wire + payload)
    assert isinstance(header, ProxyHeader), header
    assert header.length == len(wire), (header.length, len(wire))
    assert header.version == version and header.command == "PROXY"
    assert header.transport == "STREAM"
    mixed = client_v6 != server_v6
    family = socket.AF_INET6 if client_v6 or server_v6 else socket.AF_INET
    assert header.family == ("INET6" if family == socket.AF_INET6 else "INET"), header.family
    for sent, (packed, is_v6, port) in zip(
        (header.source, header.destination),
        ((client_packed, client_v6, client_port), (server_packed, server_v6, server_port)),
        strict=True,
    ):
        expected = b"\0" * 10 + b"\xff\xff" + packed if mixed and not is_v6 else packed
        assert sent is not None and socket.inet_pton(family, sent[0]) == expected, (sent, packed)
        assert sent[1] == port, (sent, port)
    if version == 1:
        assert header.tlvs == {}, header.tlvs
        return
    assert header.authority == (authority or None), (header.authority, authority)
    assert header.alpn == (alpn or None), (header.alpn, alpn)
