"""JA4 against FoxIO's published vectors and the captured hellos.

Each vector is rebuilt as real ClientHello bytes from the lists FoxIO publishes
(cipher suites, extensions and signature algorithms in the client's order, from
the JA4_ro field of FoxIO-LLC/ja4 python/test/testdata/*.json), parsed with
parse_client_hello, and fingerprinted. JA4 depends only on those lists, the ALPN
value and the versions, so the rebuilt hello has the same fingerprint as the
packet FoxIO captured.
"""

from __future__ import annotations

import re

import pytest

from tests.unit.test_clienthello import (
    CAPTURES,
    alpn_ext,
    ext,
    hello_bytes,
    load_capture,
    sni_ext,
    u16_list_ext,
    vec8,
    versions_ext,
)
from tlsgate.proto.clienthello import ClientHello, parse_client_hello
from tlsgate.proto.ja4 import alpn_chars, ja4_fingerprint, ja4_raw

JA4_FORMAT = re.compile(
    r"[tqd](13|12|11|10|s3|s2|d1|d2|d3|00)[di]\d{4}[0-9a-zA-Z]{2}_[0-9a-f]{12}_[0-9a-f]{12}"
)


def hexes(text: str) -> tuple[int, ...]:
    return tuple(int(item, 16) for item in text.split(","))


def build_hello(
    *,
    ciphers: str,
    extensions: str,
    signature_algorithms: str = "",
    alpn: bytes = b"h2",
    versions: tuple[int, ...] = (0x0304, 0x0303),
    legacy_version: int = 0x0303,
    grease: bool = False,
) -> bytes:
    """Real hello bytes with these lists; each extension gets plausible content."""
    body = b""
    for ext_type in hexes(extensions):
        if ext_type == 0x0000:
            body += sni_ext(b"example.com")
        elif ext_type == 0x0010:
            body += alpn_ext(alpn)
        elif ext_type == 0x000D:
            body += u16_list_ext(0x0D, hexes(signature_algorithms))
        elif ext_type == 0x002B:
            body += versions_ext(*versions)
        elif ext_type == 0x000A:
            body += u16_list_ext(0x0A, [0x001D, 0x0017])
        elif ext_type == 0x000B:
            body += ext(0x0B, vec8(b"\x00"))
        else:
            body += ext(ext_type, b"\x00" if ext_type == 0x0015 else b"")
    cipher_list = hexes(ciphers)
    if grease:  # as Chrome sends them; JA4 must not see any of these
        body = ext(0x6A6A, b"") + body + ext(0x0A0A, b"\x00")
        cipher_list = (0xAAAA, *cipher_list)
    return hello_bytes(legacy_version=legacy_version, ciphers=cipher_list, extensions=body)


CHROME_CIPHERS = "1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035"
CHROME_SIGALGS = "0403,0804,0401,0503,0805,0501,0806,0601"

# (name, expected JA4, build_hello options). Sources: FoxIO-LLC/ja4
# python/test/testdata/<file> (JA4.1 and JA4_ro.1 fields) unless noted.
VECTORS = [
    (
        "tls-sni.pcapng stream 0 (Chrome, GREASE as sent)",
        "t13d1516h2_8daaf6152771_e5627efa2ab1",
        dict(
            ciphers=CHROME_CIPHERS,
            extensions="ff01,0033,002d,0005,4469,000d,0010,0023,001b,002b,0000,0012,000a,0017,000b,0015",
            signature_algorithms=CHROME_SIGALGS,
            versions=(0x7A7A, 0x0304, 0x0303),
            grease=True,
        ),
    ),
    (
        "tls-sni.pcapng stream 5 (ALPN http/1.1)",
        "t13d1516h1_8daaf6152771_e5627efa2ab1",
        dict(
            ciphers=CHROME_CIPHERS,
            extensions="000d,0033,0000,ff01,002b,0023,002d,0005,0012,000b,0017,4469,0010,001b,000a,0015",
            signature_algorithms=CHROME_SIGALGS,
            alpn=b"http/1.1",
        ),
    ),
    (
        "tls-sni.pcapng stream 6 (no ALPN)",
        "t13d151400_8daaf6152771_de4a06bb82e3",
        dict(
            ciphers=CHROME_CIPHERS,
            extensions="0033,002b,001b,0000,0012,002d,000d,000a,0005,0023,0017,ff01,000b,0015",
            signature_algorithms=CHROME_SIGALGS,
        ),
    ),
    (
        "latest.pcapng stream 5 (pre_shared_key)",
        "t13d1516h2_8daaf6152771_9b887d9acb53",
        dict(
            ciphers=CHROME_CIPHERS,
            extensions="000d,0010,0000,000b,0023,4469,ff01,0033,000a,002d,002b,0005,0017,0012,001b,0029",
            signature_algorithms=CHROME_SIGALGS,
        ),
    ),
    (
        "latest.pcapng stream 3 (TLS 1.2, no supported_versions, no ALPN)",
        "t12d190800_d83cc789557e_7af1ed941c26",
        dict(
            ciphers="c02c,c02b,c030,c02f,c024,c023,c028,c027,c00a,c009,c014,c013,009d,009c,003d,003c,0035,002f,000a",
            extensions="0000,0005,000a,000b,000d,0023,0017,ff01",
            signature_algorithms="0804,0805,0806,0401,0501,0201,0403,0503,0203,0202,0601,0603",
        ),
    ),
    (
        "https3-301-get.pcap (TLS 1.0, SNI only: empty part c)",
        "t10d230100_6a57a6f57151_000000000000",
        dict(
            ciphers="0039,0038,0035,0016,0013,000a,0033,0032,002f,009a,0099,0096,0005,0004,0015,0012,0009,0014,0011,0008,0006,0003,00ff",
            extensions="0000",
            legacy_version=0x0301,
        ),
    ),
    (
        "sigalg-grease.pcapng (ECH, ML-DSA signature algorithms; GREASE sigalg inserted)",
        "t13d1517h2_8daaf6152771_cb7bf5808d99",
        dict(
            ciphers=CHROME_CIPHERS,
            extensions="fe0d,0010,0017,0033,44cd,ff01,000a,000d,0023,002b,000b,ca34,002d,0000,0005,001b,0012",
            signature_algorithms="0a0a,0904,0905,0906," + CHROME_SIGALGS,
        ),
    ),
    (
        # Expected value: FoxIO rust/ja4/src/snapshots/ja4__insta@tls-alpn-h2.pcap.snap;
        # the lists are a third-party transcription of that packet, confirmed by the hash.
        "tls-alpn-h2.pcap (TLS 1.2, 46 ciphers)",
        "t12d4605h2_85626a9a5f7f_aaf95bb78ec9",
        dict(
            ciphers="c030,c02c,c028,c024,c014,c00a,009f,006b,0039,cca9,cca8,ccaa,ff85,00c4,0088,0081,"
            "009d,003d,0035,00c0,0084,c02f,c02b,c027,c023,c013,c009,009e,0067,0033,00be,0045,"
            "009c,003c,002f,00ba,0041,c011,c007,0005,0004,c012,c008,0016,000a,00ff",
            extensions="0000,000b,000a,000d,0010",
            signature_algorithms="0601,0603,efef,0501,0503,0401,0403,eeee,eded,0301,0303,0201,0203",
        ),
    ),
    (
        # Derived by the rules: no SNI -> "i" and one extension fewer; hashes unchanged
        # because JA4 leaves SNI out of part c.
        "tls-sni.pcapng stream 0 without SNI",
        "t13i1515h2_8daaf6152771_e5627efa2ab1",
        dict(
            ciphers=CHROME_CIPHERS,
            extensions="ff01,0033,002d,0005,4469,000d,0010,0023,001b,002b,0012,000a,0017,000b,0015",
            signature_algorithms=CHROME_SIGALGS,
        ),
    ),
]


@pytest.mark.parametrize(("name", "expected", "options"), VECTORS, ids=[v[0] for v in VECTORS])
def test_published_vectors(name, expected, options):
    hello = parse_client_hello(build_hello(**options))
    assert ja4_fingerprint(hello) == expected


def test_raw_form_of_the_spec_example():
    hello = parse_client_hello(build_hello(**VECTORS[0][2]))
    assert ja4_raw(hello) == (
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_"
        "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_"
        "0403,0804,0401,0503,0805,0501,0806,0601"
    )


def test_spec_example_without_signature_algorithms():
    # JA4.md "Extension hash": the example list hashed with no "_" when there are no
    # signature algorithms -> 6d807ffa2a79. The list keeps 000d while the algorithms
    # are absent, which no parseable hello can carry, so the record is built directly.
    hello = ClientHello(
        legacy_version=0x0303,
        cipher_suites=hexes(CHROME_CIPHERS),
        extensions=hexes(
            "001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,0015"
        ),
        server_name="example.com",
        alpn=("h2",),
        supported_versions=(0x0304,),
    )
    assert ja4_fingerprint(hello) == "t13d1516h2_8daaf6152771_6d807ffa2a79"


@pytest.mark.parametrize(
    ("value", "chars"),
    [
        (b"h2", "h2"),
        (b"http/1.1", "h1"),
        (b"h3", "h3"),
        (b"x", "xx"),  # JA4.md: one character is both first and last
        (b"", "00"),
        (None, "00"),
        # JA4.md's examples of the hex rule
        (b"\xab", "ab"),
        (b"\xab\xcd", "ad"),
        (b"\x30\xab", "3b"),
        (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
        (b"/x", "28"),  # "/" is not alphanumeric: hex 2f78
    ],
)
def test_alpn_chars(value, chars):
    assert alpn_chars(value) == chars


def test_non_alphanumeric_alpn_from_a_parsed_hello():
    data = hello_bytes(extensions=alpn_ext(b"\xab\xcd", b"h2") + sni_ext(b"x.example"))
    assert ja4_fingerprint(parse_client_hello(data)).startswith("t12d0202ad_")


def test_counts_stop_at_99():
    data = hello_bytes(ciphers=tuple(range(1, 121)), extensions=b"")
    assert ja4_fingerprint(parse_client_hello(data)).startswith("t12i9900")


def test_no_ciphers_after_grease_hash_to_zeros():
    data = hello_bytes(ciphers=(0x0A0A,), extensions=b"")
    assert ja4_fingerprint(parse_client_hello(data)) == "t12i000000_000000000000_000000000000"


def test_unknown_versions_give_00():
    data = hello_bytes(extensions=versions_ext(0x7F1C))  # a TLS 1.3 draft
    assert ja4_fingerprint(parse_client_hello(data)).startswith("t00i")


def test_transport():
    hello = parse_client_hello(build_hello(**VECTORS[0][2]))
    assert ja4_fingerprint(hello, "q").startswith("q13d")
    with pytest.raises(ValueError):
        ja4_fingerprint(hello, "x")


# Captured hellos: the format, the parts we know from how each client was run, and the
# full value, pinned so a change in the parser or in JA4 shows up here.
CAPTURED_JA4 = {
    "python_tls13_sni_alpn": "t13d1812h2_85036bcba153_d41ae481755e",
    "python_tls12_sni": "t12d150700_d68b136fe8d9_e7e480e5a997",
    "python_no_sni": "t13i1811h1_85036bcba153_d41ae481755e",
    "python_large_alpn": "t13d1811tx_85036bcba153_1f22a2ca17c4",
    "openssl_tls12_sni_alpn": "t12d2808h2_d943125447b4_e7e480e5a997",
    "openssl_tls13_sni_alpn": "t13d0411h2_16476d049b0b_78f1d400d464",
    "openssl_large_multirecord": "t13d0411tx_16476d049b0b_78f1d400d464",
}


@pytest.mark.parametrize("name", CAPTURES)
def test_captured_hellos(name):
    hello = parse_client_hello(load_capture(name))
    fingerprint = ja4_fingerprint(hello)
    assert JA4_FORMAT.fullmatch(fingerprint)
    version = "13" if hello.highest_version == "1.3" else "12"
    sni = "d" if hello.server_name else "i"
    alpn = alpn_chars(hello.alpn[0].encode()) if hello.alpn else "00"
    assert fingerprint[:4] == f"t{version}{sni}"
    assert fingerprint[8:10] == alpn
    assert int(fingerprint[4:6]) == len(hello.cipher_suites)  # no GREASE from these clients
    assert int(fingerprint[6:8]) == len(hello.extensions)
    assert fingerprint == CAPTURED_JA4[name]


def test_same_client_same_fingerprint_apart_from_sni_and_alpn():
    # Python's hellos differ only in SNI, ALPN and padding: parts b and c follow.
    tls13 = ja4_fingerprint(parse_client_hello(load_capture("python_tls13_sni_alpn")))
    no_sni = ja4_fingerprint(parse_client_hello(load_capture("python_no_sni")))
    assert tls13.split("_")[1:] == no_sni.split("_")[1:]
    openssl = ja4_fingerprint(parse_client_hello(load_capture("openssl_tls13_sni_alpn")))
    split = ja4_fingerprint(parse_client_hello(load_capture("openssl_large_multirecord")))
    assert openssl.split("_")[1:] == split.split("_")[1:]
