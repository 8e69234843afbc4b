"""The fast paths of issue 6 give exactly what the plain implementations they replace gave.

Each fast path (the ClientHello body walk, JA4's cached hashes, rfc3339 without
strftime, the prebuilt JSON encoder) is compared with a straightforward reference on
captured hellos, built hellos, mutated hellos and many timestamps.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_clienthello import (
    CAPTURES,
    alpn_ext,
    ext,
    hello_bytes,
    load_capture,
    sni_ext,
    u16_list_ext,
    versions_ext,
)
from tlsgate.events import (
    ConnectionRecord,
    build_closed_event,
    encode_event,
    new_event_id,
    rfc3339,
)
from tlsgate.proto import hellobody
from tlsgate.proto import ja4 as ja4_module
from tlsgate.proto.clienthello import ClientHello, ClientHelloError, is_grease, parse_client_hello
from tlsgate.proto.hellobody import _parse_body_checked, parse_body
from tlsgate.proto.ja4 import ja4_fingerprint

CAPTURED = {name: load_capture(name) for name in CAPTURES}
GREASE = [0x0A0A + 0x1010 * i for i in range(16)]


# --- ClientHello body ---------------------------------------------------------------


def body_of(data: bytes) -> bytes:
    """The handshake body of a hello (records stripped, handshake header dropped)."""
    payload, pos = b"", 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        payload += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return payload[4 : 4 + int.from_bytes(payload[1:4], "big")]


def outcome(parse, body: bytes):
    try:
        return parse(memoryview(body), 1234)
    except ClientHelloError as e:
        return ("error", e.reason, e.alert, str(e))


@pytest.mark.parametrize("name", CAPTURES)
def test_fast_body_walk_gives_the_checked_parsers_hello(name):
    body = body_of(CAPTURED[name])
    assert outcome(parse_body, body) == outcome(_parse_body_checked, body)
    assert isinstance(outcome(parse_body, body), ClientHello)


@st.composite
def mutated_bodies(draw):
    body = bytearray(body_of(CAPTURED[draw(st.sampled_from(CAPTURES))]))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(len(body) - 1, 0)))
        if action == "flip" and body:
            body[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del body[at:]
        elif action == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif body:
            del body[at]
    return bytes(body)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bodies())
def test_mutated_bodies_give_the_same_outcome_either_way(body):
    assert outcome(parse_body, body) == outcome(_parse_body_checked, body)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bodies_give_the_same_outcome_either_way(body):
    assert outcome(parse_body, body) == outcome(_parse_body_checked, body)


@pytest.mark.parametrize(
    "extension",
    [
        sni_ext(b"a.example", b"b.example"),  # two names
        sni_ext(b"caf\xc3\xa9.example"),  # not ASCII
        sni_ext(b"x", name_type=1),
        sni_ext(b""),
        ext(0x0000, b""),
        alpn_ext(b"h2", b""),
        ext(0x0010, b"\x00\x00"),
        versions_ext(),
        ext(0x002B, b"\x03\x03\x04"),
        u16_list_ext(0x000D, []),
        ext(0x000D, b"\x00\x03\x04\x03\x05"),
        ext(0x000B, b"\x00"),
        ext(0x000B, b"\x02\x00"),
        ext(0x000A, b"\x00\x02\x00\x1d\x00"),
    ],
)
def test_odd_extensions_give_the_same_outcome_either_way(extension):
    body = body_of(hello_bytes(extensions=extension))
    assert outcome(parse_body, body) == outcome(_parse_body_checked, body)


def test_a_hello_without_extensions_gives_the_same_hello():
    body = body_of(hello_bytes(extensions=None))
    assert outcome(parse_body, body) == outcome(_parse_body_checked, body)


# --- JA4 ----------------------------------------------------------------------------


def reference_ja4(hello, transport: str = "t") -> str:
    """JA4 as the module computed it before the cache: hash the clear lists every time."""
    prefix, ciphers, extensions = ja4_module._ja4_parts(hello, transport)

    def hash12(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "000000000000"

    return f"{prefix}_{hash12(ciphers)}_{hash12(extensions)}"


def test_grease_set_is_is_grease():
    assert set(GREASE) == {v for v in range(65536) if is_grease(v)}
    assert ja4_module._GREASE == frozenset(GREASE)


@pytest.mark.parametrize("name", CAPTURES)
@pytest.mark.parametrize("transport", ["t", "q", "d"])
def test_ja4_of_captures_matches_the_reference(name, transport):
    hello = parse_client_hello(CAPTURED[name])
    ja4_module._HASH_CACHE.clear()
    ja4_module._FINGERPRINT_CACHE.clear()
    first = ja4_fingerprint(hello, transport)
    assert first == reference_ja4(hello, transport)
    assert ja4_fingerprint(hello, transport) == first  # from the cache


lists = st.lists(st.sampled_from([*GREASE, 0x1301, 0x1302, 0xC02B, 0x009C, 0x0005, 0xFFFF]))


@settings(max_examples=400)
@given(
    ciphers=lists.filter(bool),
    extensions=st.lists(
        st.sampled_from([*GREASE[:3], 0x0000, 0x0010, 0x000D, 0x002B, 0x0017, 0x0023, 0xFE0D]),
        unique=True,
    ),
    sigalgs=lists,
    seed=st.integers(0, 2**32),
)
def test_ja4_of_built_hellos_matches_the_reference(ciphers, extensions, sigalgs, seed):
    built = []
    for e in extensions:
        if e == 0x0000:
            built.append(sni_ext(b"app.example"))
        elif e == 0x0010:
            built.append(alpn_ext(b"h2"))
        elif e == 0x000D:
            built.append(u16_list_ext(0x000D, sigalgs))
        elif e == 0x002B:
            built.append(versions_ext(random.Random(seed).choice(GREASE), 0x0304, 0x0303))
        else:
            built.append(ext(e, b""))
    try:
        hello = parse_client_hello(hello_bytes(ciphers=tuple(ciphers), extensions=b"".join(built)))
    except ClientHelloError:
        return  # e.g. an empty signature_algorithms list: nothing to fingerprint
    assert ja4_fingerprint(hello) == reference_ja4(hello)


def test_ja4_rejects_an_unknown_transport_as_before():
    hello = parse_client_hello(CAPTURED[CAPTURES[0]])
    with pytest.raises(ValueError, match="transport must be one of"):
        ja4_fingerprint(hello, "x")


def test_ja4_caches_stay_bounded(monkeypatch):
    monkeypatch.setattr(ja4_module, "_CACHE_SIZE", 8)
    ja4_module._HASH_CACHE.clear()
    ja4_module._FINGERPRINT_CACHE.clear()
    for cipher in range(0x1000, 0x1040):
        hello = parse_client_hello(hello_bytes(ciphers=(cipher,)))
        assert ja4_fingerprint(hello) == reference_ja4(hello)
        assert len(ja4_module._HASH_CACHE) <= 8
        assert len(ja4_module._FINGERPRINT_CACHE) <= 8


def test_ja4_caches_do_not_keep_long_lists():
    # The client chooses how long its lists are: a key holding thousands of values
    # would let hellos fill the worker's memory.
    ja4_module._HASH_CACHE.clear()
    ja4_module._FINGERPRINT_CACHE.clear()
    hello = parse_client_hello(hello_bytes(ciphers=tuple(range(0x2000, 0x2000 + 2000))))
    assert ja4_fingerprint(hello) == reference_ja4(hello)
    assert not ja4_module._FINGERPRINT_CACHE
    assert all(len(key) <= ja4_module._MAX_CACHED_VALUES for key in ja4_module._HASH_CACHE)
    usual = parse_client_hello(CAPTURED[CAPTURES[0]])
    ja4_fingerprint(usual)
    assert len(ja4_module._FINGERPRINT_CACHE) == 1


def test_decoded_fields_are_remembered_only_when_short_and_up_to_a_bound(monkeypatch):
    hellobody._DECODED.clear()
    long_alpn = alpn_ext(*[b"x" * 200, b"y" * 200])
    hello = parse_client_hello(hello_bytes(extensions=sni_ext(b"a.example") + long_alpn))
    assert hello.alpn == ("x" * 200, "y" * 200)
    assert all(len(data) <= hellobody._DECODED_MAX_BYTES for _, data in hellobody._DECODED)
    monkeypatch.setattr(hellobody, "_DECODED_SIZE", 4)
    for n in range(1, 20):
        names = [f"p{i}".encode() for i in range(n)]
        parsed = parse_client_hello(hello_bytes(extensions=alpn_ext(*names)))
        assert parsed.alpn == tuple(name.decode() for name in names)
        assert len(hellobody._DECODED) <= 4


def test_ja4_cache_tells_apart_hellos_that_differ_in_one_field():
    # Each pair differs only in a field part a reads (version, first ALPN value) or in the
    # order of the signature algorithms (part c keeps it): a cached fingerprint must not
    # answer for the other one.
    ja4_module._FINGERPRINT_CACHE.clear()
    pairs = [
        (versions_ext(0x0304, 0x0303), versions_ext(0x0303)),
        (alpn_ext(b"h2"), alpn_ext(b"http/1.1")),
        (u16_list_ext(0x000D, [0x0403, 0x0804]), u16_list_ext(0x000D, [0x0804, 0x0403])),
    ]
    for first, second in pairs:
        fingerprints = []
        for extension in (first, second, first):
            hello = parse_client_hello(hello_bytes(extensions=sni_ext(b"app.example") + extension))
            fingerprints.append(ja4_fingerprint(hello))
            assert fingerprints[-1] == reference_ja4(hello)
        assert fingerprints[0] != fingerprints[1]
        assert fingerprints[0] == fingerprints[2]


# --- events -------------------------------------------------------------------------


def reference_rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_rfc3339_matches_datetime_around_second_boundaries_and_across_years():
    rng = random.Random(6)
    stamps = [0, 0.0, 1.0, 1e9, 1_700_000_000, 4_102_444_800, 253_402_300_799]
    for second in [0, 951_782_399, 1_709_251_199, 1_735_689_599, 1_999_999_999]:
        for delta in (-1e-6, -5e-7, -4.999e-7, 0, 4.999e-7, 5e-7, 5.0001e-7, 1e-6):
            stamps += [second + delta, second + 1 + delta, second + 0.5 + delta]
        stamps += [second + 0.9999995, second + 0.99999949, second + 0.99999951]
    stamps += [rng.uniform(0, 4_102_444_800) for _ in range(20000)]
    stamps += [
        rng.randrange(0, 4_102_444_800) + rng.randrange(1_000_000) / 1e6 for _ in range(5000)
    ]
    stamps += [-0.5, -1.25, -1e-7, -86_400.000_000_5]
    for ts in stamps:
        assert rfc3339(ts) == reference_rfc3339(ts), ts


@settings(max_examples=2000)
@given(st.floats(min_value=-1e9, max_value=4e9, allow_nan=False))
def test_rfc3339_matches_datetime_for_any_timestamp(ts):
    assert rfc3339(ts) == reference_rfc3339(ts)


def test_event_ids_look_as_before():
    ids = {new_event_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"ev_[0-9a-f]{26}", i) for i in ids)


def test_a_forked_worker_draws_other_event_ids_than_its_parent():
    # Workers are forked from the master: without a reseed they would repeat its ids.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, new_event_id().encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    assert re.fullmatch(r"ev_[0-9a-f]{26}", child_id)
    assert child_id != new_event_id()


def test_closed_event_and_its_encoding_are_unchanged():
    record = ConnectionRecord("conn_1", 1_700_000_000.9999996, "192.0.2.1", 5000, "127.0.0.1", 443)
    record.end_ts = 1_700_000_012.25
    record.endpoint_name, record.endpoint_url = "app", "tls://app.example"
    record.upstream_addr, record.upstream_error = "127.0.0.1:8080", "refused"
    record.extra["tls"] = {"version": "1.3", "cipher_suite": "TLS_AES_128_GCM_SHA256"}
    event = build_closed_event(record)
    assert event["event_timestamp"] == reference_rfc3339(record.end_ts)
    assert event["object"]["conn"]["start_ts"] == reference_rfc3339(record.start_ts)
    assert event["object"]["conn"]["end_ts"] == reference_rfc3339(record.end_ts)
    assert list(event) == ["event_id", "event_type", "event_timestamp", "object"]
    assert list(event["object"]) == [
        "conn", "ja4_fingerprint", "endpoint", "upstream", "termination", "close_reason",
        "id", "upstream_error", "tls",
    ]  # fmt: skip
    assert encode_event(event) == json.dumps(event, separators=(",", ":")).encode() + b"\n"
    event["object"]["note"] = "caf\u00e9 \u2603 \x00"
    assert encode_event(event) == json.dumps(event, separators=(",", ":")).encode() + b"\n"


def test_empty_name_is_the_same_map_as_built_from_the_field_list():
    from tlsgate.policy.vars import _NAME_LIST_FIELDS, empty_name

    expected = {"common_name": ""}
    for key in _NAME_LIST_FIELDS:
        expected[key] = []
    name = empty_name()
    assert list(name.items()) == list(expected.items())
    assert name["country"] is not empty_name()["country"]  # fresh lists every time
