"""Single-value parsers of tlsgate/config/fields.py: accepted forms, messages, round trips."""

from __future__ import annotations

import datetime
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tlsgate.config.fields import (
    TLS_UPSTREAM_MESSAGE,
    FieldError,
    describe,
    expect_int,
    format_duration,
    format_endpoint_url,
    format_size,
    normalise_host,
    parse_duration,
    parse_endpoint_name,
    parse_endpoint_url,
    parse_listen_address,
    parse_proxy_protocol,
    parse_size,
    parse_upstream_address,
)
from tlsgate.config.model import HostPort

# -- describe / type checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (5, "integer 5"),
        (True, "boolean true"),
        (False, "boolean false"),
        (1.5, "float 1.5"),
        ("ab", 'string "ab"'),
        ({}, "a table"),
        ([1], "an array"),
        (datetime.date(1979, 5, 27), "date 1979-05-27"),
        (datetime.time(7, 32), "time 07:32:00"),
        ("x" * 100, 'string "' + "x" * 57 + '..."'),
    ],
)
def test_describe(value, text):
    assert describe(value) == text


def test_expect_int_rejects_booleans_and_out_of_range():
    assert expect_int(3, 1, 5) == 3
    with pytest.raises(FieldError, match="^expected an integer, got boolean true$"):
        expect_int(True, 0, 5)
    with pytest.raises(FieldError, match="^must be between 1 and 5, got 6$"):
        expect_int(6, 1, 5)


# -- durations -------------------------------------------------------------------------------

DURATIONS = [
    ("3s", 3.0),
    ("5m", 300.0),
    ("1h", 3600.0),
    ("250ms", 0.25),
    ("1m30s", 90.0),
    ("1h2m3s4ms", 3723.004),
    ("1.5s", 1.5),
    ("1.5h", 5400.0),
    (".5s", 0.5),
    (" 30 s ", 30.0),
    (3, 3.0),
    (0.5, 0.5),
    ("8760h", 8760 * 3600.0),
]


@pytest.mark.parametrize(("value", "seconds"), DURATIONS)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "3",
            'expected a duration such as "30s", "5m", "1m30s" or "250ms" (a unit is required), got string "3"',
        ),
        ("", 'expected a duration such as "30s", "5m", "1m30s" or "250ms", got string ""'),
        (
            "5 minutes",
            'expected a duration such as "30s", "5m", "1m30s" or "250ms", got string "5 minutes"',
        ),
        ("3d", 'expected a duration such as "30s", "5m", "1m30s" or "250ms", got string "3d"'),
        ("s", 'expected a duration such as "30s", "5m", "1m30s" or "250ms", got string "s"'),
        ("-1s", 'expected a duration such as "30s", "5m", "1m30s" or "250ms", got string "-1s"'),
        ("0s", 'must be greater than zero, got string "0s"'),
        (0, "must be greater than zero, got integer 0"),
        (-2.5, "must be greater than zero, got float -2.5"),
        ("8761h", 'must be at most 8760h (365 days), got string "8761h"'),
        (math.inf, "expected a finite number of seconds, got float inf"),
        (math.nan, "expected a finite number of seconds, got float nan"),
        (
            True,
            'expected a duration such as "30s" or "5m" (or a number of seconds), got boolean true',
        ),
        ([1], 'expected a duration such as "30s" or "5m" (or a number of seconds), got an array'),
    ],
)
def test_parse_duration_rejects(value, message):
    with pytest.raises(FieldError) as info:
        parse_duration(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (3.0, "3s"),
        (60.0, "1m"),
        (300.0, "5m"),
        (90.0, "1m30s"),
        (3600.0, "1h"),
        (3723.004, "1h2m3.004s"),
        (0.25, "250ms"),
        (1.5, "1.5s"),
        (0.0001, "0.0001s"),
        (1e-05, "0.00001s"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@given(st.floats(min_value=1e-9, max_value=365 * 24 * 3600.0, allow_nan=False))
def test_duration_round_trip_any_float(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=1, max_value=365 * 24 * 3600 * 1000))
def test_duration_round_trip_milliseconds(millis):
    seconds = millis / 1000
    text = format_duration(seconds)
    assert "e" not in text
    assert parse_duration(text) == seconds


# -- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1, 1),
        (65536, 65536),
        ("512B", 512),
        ("64KB", 65536),
        ("64kb", 65536),
        ("64 KB", 65536),
        ("256KiB", 262144),
        ("1MB", 1048576),
        ("2MiB", 2097152),
        ("100", 100),
    ],
)
def test_parse_size(value, size):
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "maximum", "message"),
    [
        ("64GB", None, 'expected a size such as "64KB", "1MB" or "512B", got string "64GB"'),
        ("1.5MB", None, 'expected a size such as "64KB", "1MB" or "512B", got string "1.5MB"'),
        ("KB", None, 'expected a size such as "64KB", "1MB" or "512B", got string "KB"'),
        (1.5, None, 'expected a size such as "64KB" or an integer number of bytes, got float 1.5'),
        (
            True,
            None,
            'expected a size such as "64KB" or an integer number of bytes, got boolean true',
        ),
        (0, None, "must be greater than zero, got integer 0"),
        ("0KB", None, 'must be greater than zero, got string "0KB"'),
        (-1, None, "must be greater than zero, got integer -1"),
        ("2MB", 1048576, 'must be at most 1048576 bytes, got string "2MB"'),
    ],
)
def test_parse_size_rejects(value, maximum, message):
    with pytest.raises(FieldError) as info:
        parse_size(value, maximum)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("size", "text"),
    [(65536, "64KB"), (262144, "256KB"), (1048576, "1MB"), (1000, "1000B"), (1536, "1536B")],
)
def test_format_size(size, text):
    assert format_size(size) == text


@given(st.integers(min_value=1, max_value=2**40))
def test_size_round_trip(size):
    assert parse_size(format_size(size)) == size


# -- listen addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:8443", HostPort("127.0.0.1", 8443)),
        ("0.0.0.0:443", HostPort("0.0.0.0", 443)),
        (":8443", HostPort("0.0.0.0", 8443)),
        ("localhost:8443", HostPort("127.0.0.1", 8443)),
        ("[::1]:8443", HostPort("::1", 8443)),
        ("[::]:8443", HostPort("::", 8443)),
        ("[0:0::0]:8443", HostPort("::", 8443)),
        ("[2001:DB8::1]:65535", HostPort("2001:db8::1", 65535)),
        (" 10.1.2.3:1 ", HostPort("10.1.2.3", 1)),
    ],
)
def test_parse_listen_address(text, address):
    assert parse_listen_address(text) == address


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("127.0.0.1", 'expected "HOST:PORT", "[IPV6]:PORT" or ":PORT", got string "127.0.0.1"'),
        ("127.0.0.1:0", "the port must be between 1 and 65535, got 0"),
        ("127.0.0.1:65536", "the port must be between 1 and 65535, got 65536"),
        ("127.0.0.1:https", 'the port must be a number, got "127.0.0.1:https"'),
        ("::1:8443", 'write IPv6 addresses in brackets, e.g. "[::1]:8443", got string "::1:8443"'),
        (
            "example.com:8443",
            'the listen host must be an IP address or localhost, got "example.com"',
        ),
        ("[127.0.0.1]:8443", '"127.0.0.1" in brackets is not an IPv6 address'),
        (8443, 'expected a string such as "127.0.0.1:8443", got integer 8443'),
        (None, "expected a string, got NoneType"),
    ],
)
def test_parse_listen_address_rejects(value, message):
    with pytest.raises(FieldError) as info:
        parse_listen_address(value)
    assert str(info.value) == message


def test_listen_address_str_round_trips():
    for text in ("127.0.0.1:8443", "[::1]:8443", "[fe80::1]:1"):
        assert str(parse_listen_address(text)) == text
        assert parse_listen_address(str(parse_listen_address(text))) == parse_listen_address(text)


# -- upstream addresses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (9443, HostPort("127.0.0.1", 9443)),
        ("9443", HostPort("127.0.0.1", 9443)),
        ("127.0.0.1:9443", HostPort("127.0.0.1", 9443)),
        ("tcp://127.0.0.1:9443", HostPort("127.0.0.1", 9443)),
        ("TCP://Backend.Example.net:443/", HostPort("backend.example.net", 443)),
        ("localhost:9443", HostPort("localhost", 9443)),
        ("[::1]:9443", HostPort("::1", 9443)),
        ("tcp://[::1]:9443", HostPort("::1", 9443)),
    ],
)
def test_parse_upstream_address(value, address):
    assert parse_upstream_address(value) == address


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tls://127.0.0.1:9443", TLS_UPSTREAM_MESSAGE),
        (
            "https://127.0.0.1:9443",
            "unsupported upstream scheme https://; use HOST:PORT or tcp://HOST:PORT",
        ),
        (
            "backend",
            'expected "HOST:PORT", "[IPV6]:PORT", "tcp://HOST:PORT" or a port number, got string "backend"',
        ),
        (
            ":9443",
            'expected "HOST:PORT", "[IPV6]:PORT", "tcp://HOST:PORT" or a port number, got string ":9443"',
        ),
        (0, "the port must be between 1 and 65535, got 0"),
        ("70000", "the port must be between 1 and 65535, got 70000"),
        ("::1:9443", 'write IPv6 addresses in brackets, e.g. "[::1]:9443", got string "::1:9443"'),
        ("*.example.com:9443", 'wildcards are not allowed here, got "*.example.com"'),
        (True, "expected a string, got boolean true"),
    ],
)
def test_parse_upstream_address_rejects(value, message):
    with pytest.raises(FieldError) as info:
        parse_upstream_address(value)
    assert str(info.value) == message


def test_tls_upstream_message_names_terminate_tls():
    assert TLS_UPSTREAM_MESSAGE.startswith("a tls:// upstream means re-encrypting after TLS")
    assert "no terminate-tls action" in TLS_UPSTREAM_MESSAGE


# -- host names and endpoint URLs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("App.Example.COM", "app.example.com"),
        ("app.example.com.", "app.example.com"),
        ("*.example.com", "*.example.com"),
        ("*.com", "*.com"),
        ("_svc.x-y.example", "_svc.x-y.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_normalise_host(text, host):
    assert normalise_host(text, allow_wildcard=True) == host


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("*", "a wildcard needs at least one label after it, e.g. *.example.com"),
        (
            "app.*.x",
            "'*' is allowed only as the whole leftmost label (*.example.com), got \"app.*.x\"",
        ),
        (
            "*-app.x",
            "'*' is allowed only as the whole leftmost label (*.example.com), got \"*-app.x\"",
        ),
        ("*.*.x", "'*' is allowed only as the whole leftmost label (*.example.com), got \"*.*.x\""),
        ("a..b", '"a..b" has an empty label'),
        ("a.b..", '"a.b.." has an empty label'),
        (".", "the host name is empty"),
        (
            "a" * 64 + ".com",
            f"label \"{'a' * 64}\" must be 1-63 letters, digits, '-' or '_', in \"{'a' * 64}.com\"",
        ),
        (
            ".".join(["abcdefgh"] * 29),
            "the host name is 260 characters long; at most 253 are allowed",
        ),
        ("a b.com", "label \"a b\" must be 1-63 letters, digits, '-' or '_', in \"a b.com\""),
    ],
)
def test_normalise_host_rejects(text, message):
    with pytest.raises(FieldError) as info:
        normalise_host(text, allow_wildcard=True)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("tls://app.example.com", ("app.example.com", None)),
        ("TLS://App.Example.com.:8443", ("app.example.com", 8443)),
        ("tls://*.example.com", ("*.example.com", None)),
        ("tls://db.internal:12345", ("db.internal", 12345)),
    ],
)
def test_parse_endpoint_url(text, parsed):
    assert parse_endpoint_url(text) == parsed
    assert parse_endpoint_url(format_endpoint_url(*parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "https://app.example.com",
            "tlsgate serves TLS endpoints, routed by SNI: write the URL as tls://HOST, not https://",
        ),
        (
            "tcp://app.example.com:1",
            "tlsgate serves TLS endpoints, routed by SNI: write the URL as tls://HOST, not tcp://",
        ),
        (
            "app.example.com",
            'expected "tls://HOST" or "tls://HOST:PORT", got string "app.example.com"',
        ),
        ("tls://", "the URL needs a host after tls://"),
        (
            "tls://a.example.com/path",
            'a TLS endpoint URL has no user, path or query part, got string "tls://a.example.com/path"',
        ),
        (
            "tls://a.example.com?x=1",
            'a TLS endpoint URL has no user, path or query part, got string "tls://a.example.com?x=1"',
        ),
        (
            "tls://u@a.example.com",
            'a TLS endpoint URL has no user, path or query part, got string "tls://u@a.example.com"',
        ),
        ("tls://10.0.0.1", "SNI carries host names, never IP addresses; use a host name"),
        ("tls://[::1]:443", "SNI carries host names, never IP addresses; use a host name"),
        ("tls://a.example.com:0", "the port must be between 1 and 65535, got 0"),
        ("tls://a.example.com:", 'the port must be a number, got "tls://a.example.com:"'),
        ("tls://*", "a wildcard needs at least one label after it, e.g. *.example.com"),
    ],
)
def test_parse_endpoint_url_rejects(text, message):
    with pytest.raises(FieldError) as info:
        parse_endpoint_url(text)
    assert str(info.value) == message


# -- small endpoint fields ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "version"), [(0, 0), (1, 1), (2, 2), ("", 0), ("1", 1), ("2", 2), ("0", 0)]
)
def test_parse_proxy_protocol(value, version):
    assert parse_proxy_protocol(value) == version


@pytest.mark.parametrize("value", [3, -1, "v2", True, False, 2.0, None])
def test_parse_proxy_protocol_rejects(value):
    with pytest.raises(FieldError, match=r'^expected 0, 1 or 2 \(or "", "1", "2"\), got '):
        parse_proxy_protocol(value)


@pytest.mark.parametrize("name", ["app", "a", "App_1.v2-x", "x" * 64])
def test_parse_endpoint_name(name):
    assert parse_endpoint_name(name) == name


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "naïve", "a/b"])
def test_parse_endpoint_name_rejects(name):
    with pytest.raises(FieldError, match="^an endpoint name must be 1-64 letters, digits"):
        parse_endpoint_name(name)
