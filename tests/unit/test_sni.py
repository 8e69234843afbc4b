"""normalise_sni: the table of names a client may send and what routing sees."""

from __future__ import annotations

import pytest

from tests.unit.test_clienthello import hello_bytes, load_capture, sni_ext
from tlsgate.proto.clienthello import parse_client_hello
from tlsgate.proto.sni import normalise_sni

LABEL_63 = "a" * 63
NAME_253 = ".".join([LABEL_63, LABEL_63, LABEL_63, "b" * 61])  # 63*3 + 61 + 3 dots = 253

CASES = [
    # (sent, routed)
    (None, None),
    ("", None),
    ("example.com", "example.com"),
    ("Example.COM", "example.com"),
    ("WWW.EXAMPLE.COM", "www.example.com"),
    ("example.com.", "example.com"),
    ("Example.Com.", "example.com"),
    ("example.com..", None),
    (".", None),
    (".example.com", None),
    ("a..b", None),
    ("localhost", "localhost"),
    ("a", "a"),
    ("_acme-challenge.example.com", "_acme-challenge.example.com"),
    ("my_host.internal", "my_host.internal"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("a-b.c-d.example", "a-b.c-d.example"),
    ("3com.example", "3com.example"),
    ("example.c0m", "example.c0m"),
    ("*.example.com", None),
    ("exa mple.com", None),
    ("example.com/", None),
    ("example.com:443", None),
    ("nul\x00byte.example.com", None),
    ("example.com\x00", None),
    ("example.com\n", None),
    ("bücher.example", None),
    ("例え.jp", None),
    ("\u212aelvin.example", None),  # KELVIN SIGN lower-cases to ASCII "k": still refused
    # IP literals (RFC 6066 §3 forbids them in HostName)
    ("1.2.3.4", None),
    ("127.0.0.1.", None),
    ("10.1", None),
    ("3232235777", None),
    ("::1", None),
    ("[::1]", None),
    ("2001:db8::1", None),
    ("1.2.3.4.example", "1.2.3.4.example"),
    # lengths
    (LABEL_63 + ".example", LABEL_63 + ".example"),
    ("a" * 64 + ".example", None),
    (NAME_253, NAME_253),
    (NAME_253 + ".", NAME_253),  # 254 with the trailing dot, which does not count
    (NAME_253 + "c", None),  # 254 bytes
    ("b" + NAME_253, None),
]


@pytest.mark.parametrize(("sent", "routed"), CASES)
def test_normalise_sni(sent, routed):
    assert normalise_sni(sent) == routed


def test_length_fixtures():
    assert len(NAME_253) == 253 and len(LABEL_63) == 63


def test_normalising_twice_changes_nothing():
    for _sent, routed in CASES:
        if routed is not None:
            assert normalise_sni(routed) == routed


def test_names_from_real_and_built_hellos():
    hello = parse_client_hello(load_capture("openssl_tls13_sni_alpn"))
    assert normalise_sni(hello.server_name) == "api.example.com"
    hello = parse_client_hello(load_capture("python_no_sni"))
    assert normalise_sni(hello.server_name) is None
    hello = parse_client_hello(hello_bytes(extensions=sni_ext(b"API.Example.COM.")))
    assert normalise_sni(hello.server_name) == "api.example.com"
    hello = parse_client_hello(hello_bytes(extensions=sni_ext(b"10.0.0.1")))
    assert normalise_sni(hello.server_name) is None
