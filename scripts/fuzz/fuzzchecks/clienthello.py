"""Fuzz target: `parse_client_hello` on raw bytes, then JA4 and SNI normalisation on each hello.

Allowed outcomes are None (need more bytes), a ClientHello, or ClientHelloError with
one of its three documented reasons. Beyond "no other exception", the check holds
the parser to the two promises the worker relies on while it peeks at a connection:

* the outcome does not depend on where reads stop: a prefix of an input the parser
  calls incomplete, or of a complete hello, is itself incomplete (never an error,
  which would close a connection that was about to become valid);
* the outcome does not depend on how the hello is cut into records: the same
  handshake message re-cut into records of another size parses to the same hello.

It also holds hellobody's two body parsers to each other: the fast walk may give up
(None) on anything, but a hello it returns is the careful parser's hello, byte for
byte, for the input taken as a ClientHello body. And the worker's first-read shortcut,
`hello_in_one_record`, which takes a hello in one record straight to the fast walk, may
give up (None) on anything but must never return a hello `parse_client_hello` would not.
"""

from __future__ import annotations

import zlib

from tlsgate.proto.clienthello import (
    RECORD_HEADER_LENGTH,
    ClientHello,
    ClientHelloError,
    hello_in_one_record,
    parse_client_hello,
)
from tlsgate.proto.hellobody import _parse_body_checked, parse_well_formed
from tlsgate.proto.ja4 import ja4_fingerprint, ja4_raw
from tlsgate.proto.sni import normalise_sni

REASONS = frozenset({"not_tls", "bad_client_hello", "handshake_too_large"})
# A smaller limit than the default now and then, so that handshake_too_large is reached.
_LIMITS = (64 * 1024, 512)


def check(data: bytes) -> None:
    # Which limit and which record size to re-cut with are derived from the input,
    # so a stored crash replays exactly.
    digest = zlib.crc32(data)
    limit = _LIMITS[digest % len(_LIMITS)]
    _check_body_parsers_agree(data)
    hello = _parse(data, limit)
    _check_one_record_agrees(data, limit, hello)
    if hello is None:
        _check_prefix_incomplete(data, digest, limit)
        return
    if isinstance(hello, ClientHelloError):
        return
    assert 0 < hello.raw_length <= len(data), hello.raw_length
    _check_derived_values(hello)
    _check_body_parsers_agree(_handshake_message(data[: hello.raw_length])[4:])
    _check_prefix_incomplete(data[: hello.raw_length], digest, limit)
    _check_refragmented(data[: hello.raw_length], hello, digest % 97 + 1, limit)


def _parse(data: bytes, limit: int) -> ClientHello | ClientHelloError | None:
    try:
        return parse_client_hello(data, limit)
    except ClientHelloError as error:
        assert error.reason in REASONS, error.reason
        assert error.alert is None or 0 <= error.alert <= 255, error.alert
        assert (error.alert is None) == (error.reason == "not_tls"), (error.reason, error.alert)
        return error


def _check_one_record_agrees(data: bytes, limit: int, outcome) -> None:
    one = hello_in_one_record(data, limit)
    assert one is None or one == outcome, (one, outcome)


def _check_body_parsers_agree(body: bytes) -> None:
    fast = parse_well_formed(body, len(body))
    if fast is None:
        return
    try:
        careful = _parse_body_checked(memoryview(body), len(body))
    except ClientHelloError as error:
        raise AssertionError(f"the fast walk accepted a body the careful parser rejects: {error}") from error
    assert fast == careful, (fast, careful)


def _check_derived_values(hello: ClientHello) -> None:
    fingerprint = ja4_fingerprint(hello)
    assert len(fingerprint.split("_")) == 3, fingerprint
    assert fingerprint.isascii(), fingerprint
    ja4_raw(hello)
    assert hello.highest_version
    name = normalise_sni(hello.server_name)
    if name is not None:
        assert name == name.lower() and not name.endswith("."), name
        assert normalise_sni(name) == name, name


def _check_prefix_incomplete(data: bytes, digest: int, limit: int) -> None:
    if len(data) < 2:
        return
    cut = 1 + digest % (len(data) - 1)
    outcome = _parse(data[:cut], limit)
    assert outcome is None, (
        f"prefix of {cut} bytes gave {outcome!r}, the whole input None or a hello"
    )


def _check_refragmented(whole: bytes, hello: ClientHello, record_size: int, limit: int) -> None:
    message = _handshake_message(whole)
    recut = b"".join(
        b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
        for chunk in (message[i : i + record_size] for i in range(0, len(message), record_size))
    )
    again = _parse(recut, limit)
    assert isinstance(again, ClientHello), f"re-cut into {record_size}-byte records: {again!r}"
    assert again == hello._replace(raw_length=len(recut)), (again, hello)


def _handshake_message(whole: bytes) -> bytes:
    """The handshake message (header + body) carried by the hello's records."""
    payload = bytearray()
    pos = 0
    while pos < len(whole):
        length = int.from_bytes(whole[pos + 3 : pos + 5], "big")
        payload += whole[pos + RECORD_HEADER_LENGTH : pos + RECORD_HEADER_LENGTH + length]
        pos += RECORD_HEADER_LENGTH + length
    body_length = int.from_bytes(payload[1:4], "big")
    return bytes(payload[: 4 + body_length])
