"""Property tests for parse_client_hello: truncation, random bytes, mutation, re-fragmentation.

The parser's contract: for any input it returns None, a ClientHello, or raises
ClientHelloError -- never anything else -- and how the hello is cut into records
or reads does not change the result.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_clienthello import (
    CAPTURES,
    alpn_ext,
    ext,
    hello_bytes,
    load_capture,
    records,
    refragment_records,
    sni_ext,
    u16_list_ext,
    versions_ext,
)
from tlsgate.proto.clienthello import (
    ClientHello,
    ClientHelloError,
    ClientHelloReader,
    parse_client_hello,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CAPTURED = {name: load_capture(name) for name in CAPTURES}
PARSED = {name: parse_client_hello(data) for name, data in CAPTURED.items()}
captures = st.sampled_from(CAPTURES)


def parse_or_error(data: bytes) -> ClientHello | ClientHelloError | None:
    """Parse, turning the one allowed exception into a value; any other escapes the test."""
    try:
        return parse_client_hello(data)
    except ClientHelloError as error:
        assert error.reason in ("not_tls", "bad_client_hello", "handshake_too_large")
        assert error.alert is None or 0 < error.alert < 256
        return error


@SETTINGS
@given(name=captures, data=st.data())
def test_any_prefix_of_a_hello_is_none_or_the_hello(name, data):
    whole = CAPTURED[name]
    end = data.draw(st.integers(0, len(whole)))
    result = parse_client_hello(whole[:end])
    assert result is None if end < len(whole) else result == PARSED[name]


@SETTINGS
@given(name=captures, data=st.data())
def test_random_record_sizes_give_the_same_hello(name, data):
    whole = CAPTURED[name]
    payload = refragment_records(whole, 1 << 14)[5:]  # the handshake bytes alone
    cut = bytearray()
    pos = 0
    while pos < len(payload):
        size = data.draw(st.integers(1, 600), label="record size")
        cut += records(payload[pos : pos + size], size=size)
        pos += size
    assert parse_client_hello(cut) == PARSED[name]._replace(raw_length=len(cut))


@settings(max_examples=20, deadline=None)
@given(name=captures)
def test_one_byte_records_give_the_same_hello(name):
    cut = refragment_records(CAPTURED[name], 1)
    assert parse_client_hello(cut) == PARSED[name]._replace(raw_length=len(cut))


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_anything_else(data):
    parse_or_error(data)


@SETTINGS
@given(st.binary(max_size=600), st.sampled_from([b"\x16\x03\x01", b"\x16\x03\x03\x02\x00\x01"]))
def test_arbitrary_bytes_behind_a_tls_header_never_raise_anything_else(tail, head):
    parse_or_error(head + tail)


@st.composite
def mutated_captures(draw):
    data = bytearray(CAPTURED[draw(captures)])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif len(data) > 1:
            del data[pos : pos + draw(st.integers(1, 4))]
    return bytes(data)


@SETTINGS
@given(mutated_captures())
def test_mutated_hellos_never_raise_anything_else(data):
    result = parse_or_error(data)
    if isinstance(result, ClientHello):
        assert result.raw_length <= len(data)
        assert len(set(result.extensions)) == len(result.extensions)


@SETTINGS
@given(mutated_captures())
def test_a_reader_fed_everything_at_once_agrees_with_the_parser(data):
    # The reader takes a hello in one record straight to the body walk; whatever it
    # decides must be what the record walk decides (the same hello, or the same error).
    expected = parse_or_error(data)
    try:
        read = ClientHelloReader().feed(data)
    except ClientHelloError as error:
        assert isinstance(expected, ClientHelloError), (error, expected)
        assert (error.reason, error.alert) == (expected.reason, expected.alert)
        return
    assert read == expected


def test_a_reader_agrees_with_the_parser_on_every_change_to_the_record_and_handshake_headers():
    # The one-record shortcut reads the 9 header bytes itself: every value that matters
    # there (content type, version, record length, message type, message length), and
    # a limit the message exceeds, must end the way the record walk ends.
    for data in CAPTURED.values():
        for pos in range(9):
            for value in {0, 1, 2, 3, 0x16, 0x40, 0xFF, (data[pos] + 1) & 0xFF, (data[pos] - 1) & 0xFF}:
                changed = data[:pos] + bytes([value]) + data[pos + 1 :]
                for limit in (64 * 1024, 256):
                    try:
                        expected = parse_client_hello(changed, limit)
                    except ClientHelloError as error:
                        expected = (error.reason, error.alert)
                    try:
                        read = ClientHelloReader(limit).feed(changed)
                    except ClientHelloError as error:
                        read = (error.reason, error.alert)
                    assert read == expected, (pos, value, limit)


def test_a_reader_rejects_a_hello_in_one_oversized_record_as_the_parser_does():
    # Well formed but carried in a single record longer than TLS allows (2^14 bytes).
    data = hello_bytes(size=1 << 15, extensions=sni_ext(b"example.com") + ext(0x15, bytes(17_000)))
    expected = parse_or_error(data)
    assert isinstance(expected, ClientHelloError) and expected.reason == "bad_client_hello"
    with pytest.raises(ClientHelloError) as info:
        ClientHelloReader().feed(data)
    assert (info.value.reason, info.value.alert) == (expected.reason, expected.alert)


extension_types = st.integers(0, 0xFFFF)
known_extension = st.sampled_from(
    [
        sni_ext(b"example.com"),
        alpn_ext(b"h2"),
        versions_ext(0x0304),
        u16_list_ext(0x0D, [0x0403]),
        u16_list_ext(0x0A, [0x001D]),
        ext(0x0B, b"\x01\x00"),
    ]
)


@SETTINGS
@given(
    st.lists(
        st.one_of(
            known_extension,
            st.builds(ext, extension_types, st.binary(max_size=40)),
        ),
        max_size=12,
    )
)
def test_built_hellos_with_random_extensions(extensions):
    data = hello_bytes(extensions=b"".join(extensions))
    result = parse_or_error(data)
    types = [int.from_bytes(e[:2], "big") for e in extensions]
    if len(set(types)) < len(types):
        assert isinstance(result, ClientHelloError) and result.alert is not None
    elif isinstance(result, ClientHello):
        assert result.extensions == tuple(types)
        assert result.raw_length == len(data)
