"""parse_client_hello on captured real hellos, re-fragmented and trickled, and on every error case.

The byte builders at the top (``hello_bytes`` and friends) are shared with
test_clienthello_props.py and test_ja4.py.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from tlsgate.errors import ProtocolError
from tlsgate.proto.alerts import (
    ALERT_NAMES,
    DECODE_ERROR,
    FATAL_ALERTS,
    ILLEGAL_PARAMETER,
    PROTOCOL_VERSION,
    RECORD_OVERFLOW,
    UNEXPECTED_MESSAGE,
    UNRECOGNIZED_NAME,
    alert_name,
    build_alert,
)
from tlsgate.proto.clienthello import (
    ClientHello,
    ClientHelloError,
    is_grease,
    parse_client_hello,
)

CAPTURE_DIR = Path(__file__).resolve().parent.parent / "data" / "clienthello"
CAPTURES = sorted(path.stem for path in CAPTURE_DIR.glob("*.hex"))


# --- bytes builders ---------------------------------------------------------------------------


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def vec8(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def vec16(data: bytes) -> bytes:
    return u16(len(data)) + data


def ext(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + vec16(data)


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    return ext(0, vec16(b"".join(bytes([name_type]) + vec16(name) for name in names)))


def alpn_ext(*protocols: bytes) -> bytes:
    return ext(0x10, vec16(b"".join(vec8(p) for p in protocols)))


def u16_list_ext(ext_type: int, values: list[int] | tuple[int, ...]) -> bytes:
    return ext(ext_type, vec16(b"".join(u16(v) for v in values)))


def versions_ext(*versions: int) -> bytes:
    return ext(0x2B, vec8(b"".join(u16(v) for v in versions)))


GOOD_EXTENSIONS = (
    sni_ext(b"example.com")
    + alpn_ext(b"h2", b"http/1.1")
    + versions_ext(0x0304, 0x0303)
    + u16_list_ext(0x0D, [0x0403, 0x0804])
    + u16_list_ext(0x0A, [0x001D, 0x0017])
    + ext(0x0B, vec8(b"\x00"))
)


def client_hello_body(
    *,
    legacy_version: int = 0x0303,
    session_id: bytes = bytes(32),
    ciphers: tuple[int, ...] = (0x1301, 0x1302),
    cipher_bytes: bytes | None = None,
    compression: bytes = b"\x00",
    extensions: bytes | None = GOOD_EXTENSIONS,
) -> bytes:
    if cipher_bytes is None:
        cipher_bytes = b"".join(u16(c) for c in ciphers)
    body = (
        u16(legacy_version)
        + bytes(range(32))  # random
        + vec8(session_id)
        + vec16(cipher_bytes)
        + vec8(compression)
    )
    if extensions is not None:
        body += vec16(extensions)
    return body


def handshake(body: bytes, msg_type: int = 1) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def records(
    payload: bytes, *, size: int = 1 << 14, version: int = 0x0301, content_type: int = 22
) -> bytes:
    """Cut ``payload`` into TLS records of ``size`` bytes."""
    return b"".join(
        bytes([content_type]) + u16(version) + vec16(payload[i : i + size])
        for i in range(0, len(payload), size)
    )


def hello_bytes(*, size: int = 1 << 14, **body_options) -> bytes:
    return records(handshake(client_hello_body(**body_options)), size=size)


def refragment_records(data: bytes, size: int) -> bytes:
    """Re-cut the handshake records in ``data`` into records of ``size`` bytes each."""
    payload = bytearray()
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        payload += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return records(bytes(payload), size=size, version=int.from_bytes(data[1:3], "big"))


def load_capture(name: str) -> bytes:
    lines = (CAPTURE_DIR / f"{name}.hex").read_text().splitlines()
    return bytes.fromhex("".join(line for line in lines if not line.startswith("#")))


def parse_error(data: bytes, **options) -> ClientHelloError:
    with pytest.raises(ClientHelloError) as info:
        parse_client_hello(data, **options)
    return info.value


# --- captured hellos --------------------------------------------------------------------------

# What each capture must contain: (server_name, first ALPN, highest_version).
EXPECTED = {
    "python_tls13_sni_alpn": ("app.example.com", "h2", "1.3"),
    "python_tls12_sni": ("legacy.example.com", None, "1.2"),
    "python_no_sni": (None, "http/1.1", "1.3"),
    "python_large_alpn": ("big.example.com", "tlsgate-test-protocol-00-" + "x" * 100, "1.3"),
    "openssl_tls12_sni_alpn": ("api.example.com", "h2", "1.2"),
    "openssl_tls13_sni_alpn": ("api.example.com", "h2", "1.3"),
    "openssl_large_multirecord": (
        "split.example.com",
        "tlsgate-test-protocol-00-" + "x" * 100,
        "1.3",
    ),
}


def test_every_capture_is_checked():
    assert CAPTURES == sorted(EXPECTED)


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_parses_whole(name):
    data = load_capture(name)
    hello = parse_client_hello(data)
    server_name, first_alpn, version = EXPECTED[name]
    assert hello is not None
    assert hello.server_name == server_name
    assert (hello.alpn[0] if hello.alpn else None) == first_alpn
    assert hello.highest_version == version
    assert hello.raw_length == len(data)
    assert (0 in hello.extensions) == (server_name is not None)
    assert hello.legacy_version == 0x0303
    assert hello.cipher_suites and hello.signature_algorithms
    assert len(set(hello.extensions)) == len(hello.extensions)


def test_large_captures_are_larger_than_one_segment_and_one_is_multi_record():
    for name in ("python_large_alpn", "openssl_large_multirecord"):
        assert len(load_capture(name)) > 1500
    data = load_capture("openssl_large_multirecord")
    first_record_length = int.from_bytes(data[3:5], "big")
    assert first_record_length == 512 < len(data) - 5


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_refragmented_into_one_byte_records(name):
    data = load_capture(name)
    one_byte_records = refragment_records(data, 1)
    assert len(one_byte_records) > 5 * len(data)  # really cut up
    hello = parse_client_hello(one_byte_records)
    assert hello == parse_client_hello(data)._replace(raw_length=len(one_byte_records))


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_delivered_one_byte_at_a_time(name):
    data = load_capture(name)
    buffer = bytearray()
    for byte in data[:-1]:
        buffer.append(byte)
        assert parse_client_hello(buffer) is None
    buffer.append(data[-1])
    assert parse_client_hello(buffer) == parse_client_hello(data)


@pytest.mark.parametrize("name", ["python_tls12_sni", "openssl_tls13_sni_alpn"])
def test_capture_in_one_byte_records_delivered_one_byte_at_a_time(name):
    data = refragment_records(load_capture(name), 1)
    view = memoryview(data)
    for end in range(1, len(data)):
        assert parse_client_hello(view[:end]) is None
    assert parse_client_hello(view) == parse_client_hello(load_capture(name))._replace(raw_length=len(data))


@pytest.mark.parametrize("size", [2, 3, 7, 100, 511])
def test_capture_refragmented_into_odd_record_sizes(size):
    data = load_capture("python_large_alpn")
    cut = refragment_records(data, size)
    assert parse_client_hello(cut) == parse_client_hello(data)._replace(raw_length=len(cut))


def test_bytes_after_the_hello_are_not_counted_in_raw_length():
    data = load_capture("openssl_tls13_sni_alpn")
    change_cipher_spec = b"\x14\x03\x03\x00\x01\x01"
    hello = parse_client_hello(data + change_cipher_spec + b"\x17\x03\x03\x00\x05hello")
    assert hello is not None and hello.raw_length == len(data)


def test_handshake_bytes_after_the_hello_in_its_last_record_are_left_to_the_endpoint():
    message = handshake(client_hello_body())
    data = records(message + b"\x14\x00\x00\x00")
    hello = parse_client_hello(data)
    assert hello is not None and hello.raw_length == len(data)


def test_built_hello_fields():
    hello = parse_client_hello(hello_bytes())
    assert hello == ClientHello(
        legacy_version=0x0303,
        cipher_suites=(0x1301, 0x1302),
        extensions=(0x0000, 0x0010, 0x002B, 0x000D, 0x000A, 0x000B),
        server_name="example.com",
        alpn=("h2", "http/1.1"),
        supported_versions=(0x0304, 0x0303),
        signature_algorithms=(0x0403, 0x0804),
        supported_groups=(0x001D, 0x0017),
        ec_point_formats=(0,),
        raw_length=len(hello_bytes()),
    )


def test_hello_without_extensions_block():
    hello = parse_client_hello(hello_bytes(extensions=None, legacy_version=0x0301))
    assert hello is not None
    assert hello.extensions == () and hello.server_name is None
    assert hello.highest_version == "1.0"


def test_well_formed_but_invalid_host_names_are_returned_as_sent():
    for name in (b"a..b", b"Example.COM.", b"1.2.3.4", b"nul\x00byte", b"-"):
        hello = parse_client_hello(hello_bytes(extensions=sni_ext(name)))
        assert hello.server_name == name.decode("ascii")


def test_highest_version_ignores_grease_and_drafts():
    extensions = versions_ext(0x3A3A, 0x7F1C, 0x0303)
    hello = parse_client_hello(hello_bytes(extensions=extensions))
    assert hello.highest_version == "1.2"
    assert (
        parse_client_hello(hello_bytes(legacy_version=0x0305, extensions=b"")).highest_version
        == "0x0305"
    )


def test_is_grease():
    grease = {v for v in range(0x10000) if is_grease(v)}
    assert grease == {0x0A0A + 0x1010 * i for i in range(16)}


def test_accepts_bytes_bytearray_and_memoryview():
    data = hello_bytes()
    expected = parse_client_hello(data)
    assert parse_client_hello(bytearray(data)) == expected
    assert parse_client_hello(memoryview(data)) == expected


# --- need more bytes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix", [b"", b"\x16", b"\x16\x03", b"\x16\x03\x01\x00", b"\x16\x03\x01\x00\x10\x01"]
)
def test_short_prefixes_need_more(prefix):
    assert parse_client_hello(prefix) is None


# --- not TLS: close without an alert ----------------------------------------------------------

SSLV2_HELLO = bytes.fromhex("802e0103010015000000100100800300800700c0060040020080040080") + bytes(
    16
)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"G",
        b"STARTTLS\r\n",
        b"EHLO mail.example.com\r\n",
        SSLV2_HELLO,
        b"\x00\x00\x00\x00\x00",
        b"\x16\x02\x00\x00\x10",  # handshake content type, but record version major 2
        b"\x16\xfe\xfd\x00\x00",  # DTLS record version
        b"\x15\x00",  # alert content type, but not a TLS version
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    ],
)
def test_not_tls_closes_without_alert(data):
    error = parse_error(data)
    assert (error.reason, error.alert) == ("not_tls", None)


def test_sslv2_hello_is_named_in_the_message():
    assert "SSLv2" in str(parse_error(SSLV2_HELLO))


# --- TLS, but not a valid ClientHello ---------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\x15\x03\x01\x00\x02\x02\x28",  # alert record first
        b"\x14\x03\x03\x00\x01\x01",  # change_cipher_spec first
        b"\x17\x03\x03\x00\x05hello",  # application data first
        b"\x18\x03\x03\x00\x03\x01\x00\x00",  # heartbeat first
        b"\x17\x03",  # decided from two bytes
    ],
)
def test_other_content_type_before_the_hello_is_unexpected_message(data):
    error = parse_error(data)
    assert (error.reason, error.alert) == ("bad_client_hello", UNEXPECTED_MESSAGE)


def test_other_content_type_between_hello_fragments_is_unexpected_message():
    data = refragment_records(hello_bytes(), 10)
    interleaved = data[:30] + b"\x14\x03\x03\x00\x01\x01" + data[30:]
    error = parse_error(interleaved)
    assert (error.reason, error.alert) == ("bad_client_hello", UNEXPECTED_MESSAGE)


def test_zero_length_handshake_record_is_unexpected_message():
    for data in (b"\x16\x03\x01\x00\x00", b"\x16\x03\x01\x00\x01\x01\x16\x03\x01\x00\x00"):
        error = parse_error(data)
        assert (error.reason, error.alert) == ("bad_client_hello", UNEXPECTED_MESSAGE)


def test_record_longer_than_2_to_the_14_is_record_overflow():
    error = parse_error(b"\x16\x03\x01\x40\x01\x01")
    assert (error.reason, error.alert) == ("bad_client_hello", RECORD_OVERFLOW)
    assert parse_client_hello(b"\x16\x03\x01\x40\x00\x01") is None  # exactly 2^14 is fine


def test_later_record_with_wrong_version_is_protocol_version():
    data = refragment_records(hello_bytes(), 10)
    broken = data[:15] + b"\x16\x02\x00" + data[18:]
    error = parse_error(broken)
    assert (error.reason, error.alert) == ("bad_client_hello", PROTOCOL_VERSION)


@pytest.mark.parametrize("msg_type", [0, 2, 11, 16, 20])
def test_handshake_other_than_client_hello_is_unexpected_message(msg_type):
    error = parse_error(records(handshake(client_hello_body(), msg_type=msg_type)))
    assert (error.reason, error.alert) == ("bad_client_hello", UNEXPECTED_MESSAGE)
    # decided from the first handshake byte, before the rest arrives
    error = parse_error(bytes([22, 3, 1, 0, 50, msg_type]))
    assert error.alert == UNEXPECTED_MESSAGE


def test_oversize_handshake_is_rejected_from_its_header():
    header_only = b"\x16\x03\x01\x40\x00" + b"\x01\x01\x00\x01"  # hello of 65537 bytes
    error = parse_error(header_only)
    assert (error.reason, error.alert) == ("handshake_too_large", ILLEGAL_PARAMETER)
    # also when the header is spread over 1-byte records
    error = parse_error(b"".join(records(bytes([b]), size=1) for b in b"\x01\x01\x00\x01"))
    assert error.reason == "handshake_too_large"
    # and against a configured limit, on a real hello
    data = load_capture("python_tls13_sni_alpn")
    error = parse_error(data[:9], max_handshake_message=400)
    assert (error.reason, error.alert) == ("handshake_too_large", ILLEGAL_PARAMETER)
    assert parse_client_hello(data, max_handshake_message=512 - 4) is not None


def test_legacy_version_that_is_not_tls_is_protocol_version():
    error = parse_error(hello_bytes(legacy_version=0x0200))
    assert (error.reason, error.alert) == ("bad_client_hello", PROTOCOL_VERSION)


def _with_extensions(extensions: bytes) -> bytes:
    return hello_bytes(extensions=extensions)


def _declared_shorter(data_length_delta: int) -> bytes:
    """A hello whose handshake length field is off by ``data_length_delta``."""
    body = client_hello_body()
    message = bytes([1]) + (len(body) + data_length_delta).to_bytes(3, "big") + body
    return records(message[: 4 + len(body) + data_length_delta])


DECODE_ERRORS = {
    "session id of 33 bytes": hello_bytes(session_id=bytes(33)),
    "odd cipher_suites length": hello_bytes(cipher_bytes=b"\x13\x01\x13"),
    "empty cipher_suites": hello_bytes(ciphers=()),
    "empty compression methods": hello_bytes(compression=b""),
    "body ends inside random": records(handshake(client_hello_body()[:20])),
    "body ends before compression": records(handshake(client_hello_body(extensions=None)[:-2])),
    "handshake length cuts the extensions": _declared_shorter(-3),
    "extensions block longer than the body": records(
        handshake(
            client_hello_body(extensions=None) + u16(len(GOOD_EXTENSIONS) + 1) + GOOD_EXTENSIONS
        )
    ),
    "extensions block shorter than the body": records(
        handshake(
            client_hello_body(extensions=None) + u16(len(GOOD_EXTENSIONS) - 1) + GOOD_EXTENSIONS
        )
    ),
    "one stray byte after the extensions length": records(
        handshake(client_hello_body(extensions=None) + b"\x00")
    ),
    "extension data runs past the block": _with_extensions(u16(0x1234) + u16(10) + b"abc"),
    "sni list length too long": _with_extensions(ext(0, u16(20) + b"\x00" + vec16(b"example.com"))),
    "sni list length too short": _with_extensions(ext(0, u16(3) + b"\x00" + vec16(b"example.com"))),
    "sni bytes after the list": _with_extensions(
        ext(0, vec16(b"\x00" + vec16(b"a.com")) + b"\x00")
    ),
    "empty sni list": _with_extensions(ext(0, vec16(b""))),
    "empty sni extension": _with_extensions(ext(0, b"")),
    "empty host name": _with_extensions(sni_ext(b"")),
    "host name length past the list": _with_extensions(ext(0, vec16(b"\x00" + u16(40) + b"a.com"))),
    "empty alpn list": _with_extensions(ext(0x10, vec16(b""))),
    "empty alpn name": _with_extensions(alpn_ext(b"h2", b"")),
    "alpn name past the list": _with_extensions(ext(0x10, vec16(b"\x05h2"))),
    "odd supported_versions": _with_extensions(ext(0x2B, vec8(b"\x03\x04\x03"))),
    "empty supported_versions": _with_extensions(ext(0x2B, vec8(b""))),
    "supported_versions trailing byte": _with_extensions(ext(0x2B, vec8(b"\x03\x04") + b"\x00")),
    "empty signature_algorithms": _with_extensions(u16_list_ext(0x0D, [])),
    "odd signature_algorithms": _with_extensions(ext(0x0D, vec16(b"\x04\x03\x08"))),
    "odd supported_groups": _with_extensions(ext(0x0A, vec16(b"\x00\x1d\x00"))),
    "empty ec_point_formats": _with_extensions(ext(0x0B, vec8(b""))),
}


@pytest.mark.parametrize("case", sorted(DECODE_ERRORS))
def test_bad_lengths_are_decode_error(case):
    error = parse_error(DECODE_ERRORS[case])
    assert (error.reason, error.alert) == ("bad_client_hello", DECODE_ERROR), str(error)


ILLEGAL_PARAMETERS = {
    "duplicate extension": GOOD_EXTENSIONS + ext(0x0B, vec8(b"\x00")),
    "duplicate unknown extension": ext(0x1234, b"") + ext(0x1234, b"x"),
    "two host names": sni_ext(b"a.example.com", b"b.example.com"),
    "sni name type 1": sni_ext(b"example.com", name_type=1),
    "host name then another name type": ext(
        0, vec16(b"\x00" + vec16(b"a.com") + b"\x01" + vec16(b"b.com"))
    ),
    "non-ASCII host name": sni_ext("bücher.example".encode()),
}


@pytest.mark.parametrize("case", sorted(ILLEGAL_PARAMETERS))
def test_inconsistent_fields_are_illegal_parameter(case):
    error = parse_error(hello_bytes(extensions=ILLEGAL_PARAMETERS[case]))
    assert (error.reason, error.alert) == ("bad_client_hello", ILLEGAL_PARAMETER), str(error)


def test_error_is_a_value_error_and_a_protocol_error():
    error = parse_error(b"GET /")
    assert isinstance(error, ValueError) and isinstance(error, ProtocolError)


# --- alert records ----------------------------------------------------------------------------


def test_build_alert():
    assert build_alert(UNRECOGNIZED_NAME) == b"\x15\x03\x03\x00\x02\x02\x70"
    assert build_alert(0, level=1) == b"\x15\x03\x03\x00\x02\x01\x00"
    assert FATAL_ALERTS[DECODE_ERROR] == build_alert(DECODE_ERROR)
    assert set(FATAL_ALERTS) == set(ALERT_NAMES) - {0}
    assert alert_name(47) == "illegal_parameter" and alert_name(99) == "alert_99"
    with pytest.raises(ValueError):
        build_alert(256)
    with pytest.raises(ValueError):
        build_alert(40, level=3)


def _serve_one_hello(server: socket.socket, max_handshake_message: int, outcome: dict) -> None:
    """Peek at a real client's hello the way the worker does, then answer with an alert."""
    conn, _ = server.accept()
    with conn:
        buffer = bytearray()
        try:
            while (hello := parse_client_hello(buffer, max_handshake_message)) is None:
                chunk = conn.recv(7)  # small reads: the parser sees many partial buffers
                if not chunk:
                    return
                buffer += chunk
            outcome["hello"] = hello
            conn.sendall(FATAL_ALERTS[UNRECOGNIZED_NAME])
        except ClientHelloError as error:
            outcome["error"] = error
            conn.sendall(FATAL_ALERTS[error.alert])


@pytest.mark.parametrize(
    ("max_handshake_message", "expected_text"),
    [(65536, "UNRECOGNIZED_NAME"), (100, "ILLEGAL_PARAMETER")],
)
def test_python_ssl_client_receives_our_alert(max_handshake_message, expected_text):
    with socket.create_server(("127.0.0.1", 0)) as server:
        outcome: dict = {}
        thread = threading.Thread(
            target=_serve_one_hello, args=(server, max_handshake_message, outcome)
        )
        thread.start()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection(server.getsockname(), timeout=30) as sock:
            with pytest.raises(ssl.SSLError) as info:
                context.wrap_socket(sock, server_hostname="unknown.example.com")
        thread.join(timeout=30)
    assert expected_text in str(info.value)
    if "hello" in outcome:
        assert outcome["hello"].server_name == "unknown.example.com"
    else:
        assert outcome["error"].reason == "handshake_too_large"
