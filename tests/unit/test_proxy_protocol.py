"""Tests for tlsgate.proto.proxy_protocol.

Expected bytes come from haproxy's doc/proxy-protocol.txt (2020/03/05): the v1 example line
of section 2.1, the v1 maximum lengths, and the v2 layout of section 2.2 (signature,
``struct proxy_hdr_v2``, ``union proxy_addr``, ``struct pp2_tlv``). The ``spec_*`` helpers
below are a second, independent reading of that layout, written with `struct` and
`ipaddress` and never calling the module under test: the builder's output is checked by
the spec parser, and the parser is fed headers assembled by the spec builder. Where the
PyPI package ``proxy-protocol`` is installed, it checks both directions a third time.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlsgate.errors import ProtocolError
from tlsgate.proto.proxy_protocol import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    V1_MAX_LENGTH,
    V2_MAX_LENGTH,
    ProxyHeader,
    ProxyHeaderError,
    build_header,
    build_v1,
    build_v2,
    crc32c,
    parse_proxy_header,
)

FUZZ = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])

# --- an independent reading of the spec ------------------------------------------------

SPEC_SIGNATURE = bytes.fromhex("0D0A0D0A000D0A515549540A")  # section 2.2, "\x0D \x0A ..."
SPEC_V1 = re.compile(rb"PROXY (TCP4|TCP6) ([0-9a-fA-F.:]+) ([0-9a-fA-F.:]+) (\d+) (\d+)\r\n")
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def spec_build_v2(
    family_byte: int,
    source: tuple[IP, int] | None,
    destination: tuple[IP, int] | None,
    tlvs: list[tuple[int, bytes]] = (),
    *,
    version_command: int = 0x21,
    length_delta: int = 0,
) -> bytes:
    """struct proxy_hdr_v2 + union proxy_addr + pp2_tlv entries, assembled field by field."""
    block = b""
    if source is not None and destination is not None:
        block = source[0].packed + destination[0].packed
        block += source[1].to_bytes(2, "big") + destination[1].to_bytes(2, "big")
    for tlv_type, value in tlvs:
        block += bytes([tlv_type, len(value) >> 8, len(value) & 0xFF]) + value
    length = len(block) + length_delta
    return (
        SPEC_SIGNATURE + bytes([version_command, family_byte]) + length.to_bytes(2, "big") + block
    )


def spec_parse_v2(data: bytes) -> dict:
    """Section 2.2 read literally; TLVs kept as an ordered list."""
    signature, version_command, family_byte, length = struct.unpack("!12sBBH", data[:16])
    assert signature == SPEC_SIGNATURE
    block = data[16 : 16 + length]
    if family_byte == 0x11:  # TCP over IPv4, len = 12
        src, dst, sport, dport = struct.unpack("!4s4sHH", block[:12])
        make, rest = ipaddress.IPv4Address, block[12:]
    elif family_byte == 0x21:  # TCP over IPv6, len = 36
        src, dst, sport, dport = struct.unpack("!16s16sHH", block[:36])
        make, rest = ipaddress.IPv6Address, block[36:]
    else:
        raise AssertionError(f"unexpected family byte {family_byte:#x}")
    tlvs = []
    while rest:
        value_length = (rest[1] << 8) | rest[2]
        tlvs.append((rest[0], rest[3 : 3 + value_length]))
        rest = rest[3 + value_length :]
    return {
        "version": version_command >> 4,
        "command": version_command & 0x0F,
        "family": family_byte,
        "source": (make(src), sport),
        "destination": (make(dst), dport),
        "tlvs": tlvs,
        "total": 16 + length,
    }


def spec_parse_v1(data: bytes) -> dict:
    match = SPEC_V1.match(data)
    assert match is not None, data
    keyword, src, dst, sport, dport = match.groups()
    make = ipaddress.IPv4Address if keyword == b"TCP4" else ipaddress.IPv6Address
    return {
        "keyword": keyword.decode(),
        "source": (make(src.decode()), int(sport)),
        "destination": (make(dst.decode()), int(dport)),
        "total": match.end(),
    }


def as_ip(address: tuple[str, int] | None) -> tuple[IP, int] | None:
    return None if address is None else (ipaddress.ip_address(address[0]), address[1])


def expected_pair(client: tuple[IP, int], server: tuple[IP, int]):
    """haproxy's rule for mixed families: both IPv6, the IPv4 side IPv4-mapped."""
    if client[0].version == server[0].version:
        return client, server

    def widen(ip: IP) -> IP:
        if ip.version == 6:
            return ip
        return ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + ip.packed)

    return (widen(client[0]), client[1]), (widen(server[0]), server[1])


# --- strategies ---------------------------------------------------------------------

ports = st.integers(0, 65535)
ips = st.ip_addresses()
endpoints = st.tuples(ips, ports)
authorities = st.none() | st.text(st.characters(codec="utf-8"), min_size=1, max_size=255)
alpns = st.none() | st.binary(min_size=1, max_size=255)


def text_address(endpoint: tuple[IP, int]) -> tuple[str, int]:
    return str(endpoint[0]), endpoint[1]


# --- spec examples, byte for byte ---------------------------------------------------


def test_v1_spec_example_line():
    # Section 2.1: "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    assert (
        build_v1(("192.168.0.1", 56324), ("192.168.0.11", 443))
        == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    )


def test_v1_longest_tcp4_and_tcp6_lines_have_the_spec_lengths():
    tcp4 = build_v1(("255.255.255.255", 65535), ("255.255.255.255", 65535))
    assert tcp4 == b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
    assert len(tcp4) == 56
    full = ":".join(["ffff"] * 8)
    tcp6 = build_v1((full, 65535), (full, 65535))
    assert tcp6 == f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert len(tcp6) == 104


def test_v1_tcp6_is_written_in_compressed_form():
    assert (
        build_v1(("2001:DB8:0:0:0:0:0:1", 1), ("2001:db8::2", 2))
        == b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"
    )


def test_v2_tcp4_header_layout():
    header = build_v2(("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert header == (
        b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"  # signature
        b"\x21"  # version 2, command PROXY
        b"\x11"  # AF_INET, STREAM
        b"\x00\x0c"  # 12 address bytes
        b"\xc0\xa8\x00\x01"  # 192.168.0.1
        b"\xc0\xa8\x00\x0b"  # 192.168.0.11
        b"\xdc\x04"  # 56324
        b"\x01\xbb"  # 443
    )


def test_v2_tcp6_header_layout():
    header = build_v2(("2001:db8::1", 1), ("2001:db8::2", 65535))
    assert header == (
        SPEC_SIGNATURE
        + b"\x21\x21\x00\x24"  # PROXY, AF_INET6 + STREAM, 36 bytes
        + bytes.fromhex("20010db8000000000000000000000001")
        + bytes.fromhex("20010db8000000000000000000000002")
        + b"\x00\x01\xff\xff"
    )


def test_v2_tlvs_alpn_then_authority_and_the_length_covers_them():
    header = build_v2(
        ("10.0.0.1", 1000), ("10.0.0.2", 443), authority="app.example.com", alpn=b"h2"
    )
    assert header == (
        SPEC_SIGNATURE
        + b"\x21\x11"
        + (12 + 5 + 18).to_bytes(2, "big")
        + b"\x0a\x00\x00\x01\x0a\x00\x00\x02\x03\xe8\x01\xbb"
        + b"\x01\x00\x02h2"  # PP2_TYPE_ALPN
        + b"\x02\x00\x0fapp.example.com"  # PP2_TYPE_AUTHORITY
    )


def test_v2_tlvs_are_left_out_when_none_or_empty():
    plain = build_v2(("10.0.0.1", 1), ("10.0.0.2", 2))
    assert build_v2(("10.0.0.1", 1), ("10.0.0.2", 2), authority="", alpn=b"") == plain
    only_authority = build_v2(("10.0.0.1", 1), ("10.0.0.2", 2), authority="a.b")
    assert spec_parse_v2(only_authority)["tlvs"] == [(PP2_TYPE_AUTHORITY, b"a.b")]


# --- mixed families, zones, bad input --------------------------------------------------


def test_mixed_families_map_the_ipv4_side_into_ipv6_like_haproxy():
    assert (
        build_v1(("192.0.2.1", 1), ("2001:db8::2", 2))
        == b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n"
    )
    assert (
        build_v1(("2001:db8::1", 1), ("192.0.2.2", 2))
        == b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.2 1 2\r\n"
    )
    parsed = spec_parse_v2(build_v2(("192.0.2.1", 1), ("2001:db8::2", 2)))
    assert parsed["family"] == 0x21
    assert parsed["source"] == (ipaddress.IPv6Address("::ffff:192.0.2.1"), 1)
    assert parsed["destination"] == (ipaddress.IPv6Address("2001:db8::2"), 2)


def test_link_local_zone_is_dropped():
    assert build_v1(("fe80::1%eth0", 1), ("fe80::2", 2)) == b"PROXY TCP6 fe80::1 fe80::2 1 2\r\n"


@pytest.mark.parametrize(
    "client,server",
    [
        (("example.com", 1), ("10.0.0.1", 2)),
        (("10.0.0.256", 1), ("10.0.0.1", 2)),
        (("010.0.0.1", 1), ("10.0.0.1", 2)),
        (("10.0.0.1", 1), ("1::2::3", 2)),
        (("10.0.0.1", -1), ("10.0.0.1", 2)),
        (("10.0.0.1", 1), ("10.0.0.1", 65536)),
        (("10.0.0.1 10.0.0.2", 1), ("10.0.0.1", 2)),
    ],
)
def test_build_rejects_what_is_not_an_ip_and_port(client, server):
    with pytest.raises(ValueError):
        build_v1(client, server)
    with pytest.raises(ValueError):
        build_v2(client, server)


def test_build_v2_refuses_tlvs_the_parser_would_refuse():
    with pytest.raises(ValueError):
        build_v2(("10.0.0.1", 1), ("10.0.0.2", 2), alpn=b"x" * V2_MAX_LENGTH)


def test_build_header_picks_the_version():
    client, server = ("10.0.0.1", 1), ("10.0.0.2", 2)
    assert build_header(1, client, server, authority="a.b") == build_v1(client, server)
    assert build_header(2, client, server, authority="a.b") == build_v2(
        client, server, authority="a.b"
    )
    with pytest.raises(ValueError):
        build_header(3, client, server)


# --- parsing what the spec shows --------------------------------------------------------


def test_parse_spec_example_leaves_the_payload():
    line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    payload = b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
    header = parse_proxy_header(line + payload)
    assert header == ProxyHeader(
        1, "PROXY", "INET", "STREAM", ("192.168.0.1", 56324), ("192.168.0.11", 443), {}, len(line)
    )
    assert (line + payload)[header.length :] == payload


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n",
        b"PROXY UNKNOWN " + b" ".join([b":".join([b"ffff"] * 8)] * 2) + b" 65535 65535\r\n",
    ],
)
def test_parse_v1_unknown_ignores_the_rest_of_the_line(line):
    header = parse_proxy_header(line + b"\x16\x03\x01")
    assert header == ProxyHeader(1, "PROXY", "UNSPEC", "UNSPEC", None, None, {}, len(line))


def test_parse_v1_worst_case_is_exactly_107_bytes():
    full = b":".join([b"ffff"] * 8)
    line = b"PROXY UNKNOWN " + full + b" " + full + b" 65535 65535\r\n"
    assert len(line) == V1_MAX_LENGTH
    assert parse_proxy_header(line).length == V1_MAX_LENGTH
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(line[:-2] + b"0\r\n")


def test_parse_v2_local_command_has_no_addresses():
    header = parse_proxy_header(spec_build_v2(0x00, None, None, version_command=0x20))
    assert header == ProxyHeader(2, "LOCAL", "UNSPEC", "UNSPEC", None, None, {}, 16)


def test_parse_v2_local_with_an_address_block_skips_it():
    src = (ipaddress.ip_address("10.0.0.1"), 1)
    data = spec_build_v2(0x11, src, src, [(PP2_TYPE_AUTHORITY, b"h")], version_command=0x20)
    header = parse_proxy_header(data)
    assert (header.command, header.source, header.authority) == ("LOCAL", None, "h")


def test_parse_v2_udp_and_unix_are_accepted_without_addresses_for_unix():
    src = (ipaddress.ip_address("10.0.0.1"), 53)
    udp = parse_proxy_header(spec_build_v2(0x12, src, src))
    assert (udp.family, udp.transport, udp.source) == ("INET", "DGRAM", ("10.0.0.1", 53))
    unix = SPEC_SIGNATURE + b"\x21\x31" + (216).to_bytes(2, "big") + b"/a".ljust(216, b"\x00")
    parsed = parse_proxy_header(unix)
    assert (parsed.family, parsed.transport, parsed.source, parsed.length) == (
        "UNIX",
        "STREAM",
        None,
        232,
    )


def test_parse_v2_keeps_unknown_tlvs_and_drops_noop_padding():
    src = (ipaddress.ip_address("10.0.0.1"), 1)
    data = spec_build_v2(
        0x11,
        src,
        src,
        [(PP2_TYPE_NOOP, b"\x00" * 5), (PP2_TYPE_SSL, b"\x01\x00\x00\x00\x00"), (0xE0, b"")],
    )
    assert parse_proxy_header(data).tlvs == {PP2_TYPE_SSL: b"\x01\x00\x00\x00\x00", 0xE0: b""}


def test_crc32c_known_values():
    # RFC 3720 B.4 and the common check value of CRC-32C.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"\x00" * 32) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43


def test_parse_v2_verifies_a_crc32c_tlv():
    src = (ipaddress.ip_address("10.0.0.1"), 1)
    zeroed = spec_build_v2(0x11, src, src, [(PP2_TYPE_CRC32C, b"\x00" * 4), (2, b"a.b")])
    checksum = crc32c(zeroed).to_bytes(4, "big")
    offset = zeroed.index(b"\x03\x00\x04") + 3
    signed = zeroed[:offset] + checksum + zeroed[offset + 4 :]
    assert parse_proxy_header(signed).tlvs[PP2_TYPE_CRC32C] == checksum
    tampered = signed[:-1] + b"c"
    with pytest.raises(ProxyHeaderError, match="CRC32C"):
        parse_proxy_header(tampered)


# --- truncation and garbage -----------------------------------------------------------


SAMPLES = [
    build_v1(("192.168.0.1", 56324), ("192.168.0.11", 443)),
    build_v1(("2001:db8::1", 1), ("2001:db8::2", 2)),
    b"PROXY UNKNOWN\r\n",
    build_v2(("10.0.0.1", 1), ("10.0.0.2", 2)),
    build_v2(("2001:db8::1", 1), ("192.0.2.1", 2), authority="a.example.com", alpn=b"h2"),
    spec_build_v2(0x00, None, None, version_command=0x20),
]


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_proper_prefix_needs_more(sample):
    for cut in range(len(sample)):
        assert parse_proxy_header(sample[:cut]) is None, sample[:cut]
    assert parse_proxy_header(sample).length == len(sample)


def _v2(**kwargs) -> bytes:
    src = (ipaddress.ip_address("10.0.0.1"), 1)
    return spec_build_v2(kwargs.pop("family_byte", 0x11), src, src, **kwargs)


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"GET / HTTP/1.1\r\n",
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",  # a lone CR
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 999999\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2" + b" " * 80,  # no CRLF in 107 bytes
        b"PROXY TCP4 1.2.3.4\x00",  # not address text, fails before the CRLF
        b"PROXY TC4",
        _v2(version_command=0x11),  # version 1 in a v2 header
        _v2(version_command=0x22),  # unassigned command
        _v2(family_byte=0x13),  # unassigned transport
        _v2(family_byte=0x41),  # unassigned family
        _v2(family_byte=0x10),  # AF_INET with UNSPEC transport: layout unknown
        _v2(family_byte=0x21),  # claims IPv6 but carries 12 address bytes
        _v2(tlvs=[(2, b"abc")], length_delta=-1),  # TLV runs past the header
        _v2(tlvs=[(2, b"abc")], length_delta=1) + b"\x00",  # a 1-byte TLV stub
        _v2(tlvs=[(2, b"a"), (2, b"b")]),  # two authorities
        _v2(tlvs=[(PP2_TYPE_CRC32C, b"\x00" * 3)]),
        _v2(tlvs=[(2, b"\xff\xfe")]),  # authority not UTF-8
        SPEC_SIGNATURE + b"\x21\x11" + (V2_MAX_LENGTH - 15).to_bytes(2, "big"),  # too long
    ],
)
def test_garbage_raises(data):
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(data)


def test_header_error_is_a_protocol_error_and_a_value_error():
    assert issubclass(ProxyHeaderError, ProtocolError)
    assert issubclass(ProxyHeaderError, ValueError)


# --- properties -----------------------------------------------------------------------


@FUZZ
@given(client=endpoints, server=endpoints, authority=authorities, alpn=alpns)
def test_v2_round_trip(client, server, authority, alpn):
    data = build_v2(text_address(client), text_address(server), authority=authority, alpn=alpn)
    header = parse_proxy_header(data)
    want_client, want_server = expected_pair(client, server)
    assert header.version == 2 and header.command == "PROXY" and header.transport == "STREAM"
    assert header.family == ("INET" if want_client[0].version == 4 else "INET6")
    assert as_ip(header.source) == want_client
    assert as_ip(header.destination) == want_server
    assert header.authority == authority
    assert header.alpn == alpn
    assert header.length == len(data)


@FUZZ
@given(client=endpoints, server=endpoints)
def test_v1_round_trip(client, server):
    data = build_v1(text_address(client), text_address(server))
    header = parse_proxy_header(data)
    want_client, want_server = expected_pair(client, server)
    assert (header.version, header.command, header.tlvs, header.length) == (
        1,
        "PROXY",
        {},
        len(data),
    )
    assert as_ip(header.source) == want_client
    assert as_ip(header.destination) == want_server


@FUZZ
@given(client=endpoints, server=endpoints, authority=authorities, alpn=alpns)
def test_builder_agrees_with_the_spec_parser(client, server, authority, alpn):
    want_client, want_server = expected_pair(client, server)
    v1 = spec_parse_v1(build_v1(text_address(client), text_address(server)))
    assert v1["keyword"] == ("TCP4" if want_client[0].version == 4 else "TCP6")
    assert (v1["source"], v1["destination"]) == (want_client, want_server)

    data = build_v2(text_address(client), text_address(server), authority=authority, alpn=alpn)
    v2 = spec_parse_v2(data)
    assert (v2["version"], v2["command"], v2["total"]) == (2, 1, len(data))
    assert v2["family"] == (0x11 if want_client[0].version == 4 else 0x21)
    assert (v2["source"], v2["destination"]) == (want_client, want_server)
    want_tlvs = []
    if alpn:
        want_tlvs.append((PP2_TYPE_ALPN, alpn))
    if authority:
        want_tlvs.append((PP2_TYPE_AUTHORITY, authority.encode()))
    assert v2["tlvs"] == want_tlvs


tlv_lists = st.lists(
    st.tuples(st.sampled_from([0x01, 0x02, 0x05, 0x20, 0x30, 0xE0, 0xF7]), st.binary(max_size=64)),
    max_size=6,
    unique_by=lambda tlv: tlv[0],
)


@FUZZ
@given(
    source=endpoints,
    data=st.data(),
    tlvs=tlv_lists,
    payload=st.binary(max_size=64),
)
def test_parser_reads_spec_built_v2_headers(source, data, tlvs, payload):
    same_family = st.ip_addresses(v=source[0].version)
    destination = (data.draw(same_family), data.draw(ports))
    tlvs = [(t, v) for t, v in tlvs if t != PP2_TYPE_AUTHORITY or _is_utf8(v)]
    family_byte = 0x11 if source[0].version == 4 else 0x21
    header_bytes = spec_build_v2(family_byte, source, destination, tlvs)
    header = parse_proxy_header(header_bytes + payload)
    assert header.length == len(header_bytes)
    assert (as_ip(header.source), as_ip(header.destination)) == (source, destination)
    assert header.tlvs == dict(tlvs)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@FUZZ
@given(sample=st.sampled_from(SAMPLES), suffix=st.binary(max_size=200))
def test_a_complete_header_ignores_what_follows(sample, suffix):
    assert parse_proxy_header(sample + suffix) == parse_proxy_header(sample)


@FUZZ
@given(
    prefix=st.sampled_from(
        [b"", b"PROXY ", b"PROXY TCP4 ", SPEC_SIGNATURE, SPEC_SIGNATURE + b"\x21"]
    ),
    noise=st.binary(max_size=300),
)
def test_random_bytes_give_none_a_header_or_a_header_error(prefix, noise):
    data = prefix + noise
    try:
        header = parse_proxy_header(data)
    except ProxyHeaderError:
        return
    if header is not None:
        assert 0 < header.length <= len(data)


@FUZZ
@given(client=endpoints, server=endpoints, authority=authorities, alpn=alpns, data=st.data())
def test_truncated_builds_need_more(client, server, authority, alpn, data):
    built = build_v2(text_address(client), text_address(server), authority=authority, alpn=alpn)
    cut = data.draw(st.integers(0, len(built) - 1))
    assert parse_proxy_header(built[:cut]) is None
    line = build_v1(text_address(client), text_address(server))
    assert parse_proxy_header(line[: data.draw(st.integers(0, len(line) - 1))]) is None


# --- a third opinion: the proxy-protocol package from PyPI ----------------------------


@FUZZ
@given(client=endpoints, server=endpoints, authority=authorities, alpn=alpns)
def test_proxy_protocol_package_reads_our_headers(client, server, authority, alpn):
    detect = pytest.importorskip("proxyprotocol.detect", reason="pip install proxy-protocol")
    want_client, want_server = expected_pair(client, server)
    for data in (
        build_v1(text_address(client), text_address(server)),
        build_v2(text_address(client), text_address(server), authority=authority, alpn=alpn),
    ):
        result = detect.ProxyProtocolDetect().unpack(data)
        assert (result.source, result.dest) == (want_client, want_server)
        if data.startswith(SPEC_SIGNATURE):
            assert result.tlv.authority == authority
            assert result.tlv.alpn == alpn


@FUZZ
@given(source=endpoints, data=st.data(), authority=authorities, alpn=alpns)
def test_we_read_the_proxy_protocol_packages_headers(source, data, authority, alpn):
    pytest.importorskip("proxyprotocol", reason="pip install proxy-protocol")
    from proxyprotocol.result import ProxyResultIPv4, ProxyResultIPv6
    from proxyprotocol.tlv import ProxyProtocolTLV
    from proxyprotocol.v1 import ProxyProtocolV1
    from proxyprotocol.v2 import ProxyProtocolV2

    destination = (data.draw(st.ip_addresses(v=source[0].version)), data.draw(ports))
    result_type = ProxyResultIPv4 if source[0].version == 4 else ProxyResultIPv6
    tlv = ProxyProtocolTLV(alpn=alpn, authority=authority)
    result = result_type(source, destination, protocol=socket.SOCK_STREAM, tlv=tlv)
    v2 = parse_proxy_header(ProxyProtocolV2().pack(result))
    assert (as_ip(v2.source), as_ip(v2.destination)) == (source, destination)
    assert (v2.authority, v2.alpn) == (authority, alpn)
    v1 = parse_proxy_header(ProxyProtocolV1().pack(result_type(source, destination)))
    assert (as_ip(v1.source), as_ip(v1.destination)) == (source, destination)
