"""Property tests for parse_client_hello: truncation, random bytes, mutation, re-fragmentation.

The parser's contract: for any input it returns None, a ClientHello, or raises
ClientHelloError -- never anything else -- and how the hello is cut into records
or reads does not change the result.
"""

from __future__ import annotations

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
    hello_in_one_record,
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


def one_record_agrees(data: bytes, limit: int = 64 * 1024) -> None:
    """`hello_in_one_record` gives the parser's hello, or None (never a hello the parser
    would reject or parse differently)."""
    try:
        expected = parse_client_hello(data, limit)
    except ClientHelloError:
        expected = None
    one = hello_in_one_record(data, limit)
    assert one is None or one == expected, (one, expected)


@SETTINGS
@given(mutated_captures())
def test_the_one_record_shortcut_agrees_with_the_parser(data):
    # The worker takes a hello in one record straight to the body walk; what it accepts
    # must be what the record walk accepts, the same hello.
    one_record_agrees(data)


def test_the_one_record_shortcut_takes_the_usual_hello_and_agrees_on_every_header_change():
    # It reads the 9 header bytes itself: every value that matters there (content type,
    # version, record length, message type, message length), and a limit the message
    # exceeds, must end the way the record walk ends.
    for data in CAPTURED.values():
        if data[3] << 8 | data[4] == len(data) - 5:  # one record (not the multi-record capture)
            assert hello_in_one_record(data, 64 * 1024) == parse_client_hello(data)
        for pos in range(9):
            for value in {0, 1, 2, 3, 0x16, 0x40, 0xFF, (data[pos] + 1) & 0xFF, (data[pos] - 1) & 0xFF}:
                changed = data[:pos] + bytes([value]) + data[pos + 1 :]
                for limit in (64 * 1024, 256):
                    one_record_agrees(changed, limit)


def test_the_one_record_shortcut_leaves_a_hello_in_one_oversized_record_to_the_parser():
    # Well formed but carried in a single record longer than TLS allows (2^14 bytes).
    data = hello_bytes(size=1 << 15, extensions=sni_ext(b"example.com") + ext(0x15, bytes(17_000)))
    expected = parse_or_error(data)
    assert isinstance(expected, ClientHelloError) and expected.reason == "bad_client_hello"
    assert hello_in_one_record(data, 64 * 1024) is None


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
