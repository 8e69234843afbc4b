"""JA4 TLS client fingerprints (FoxIO's JA4, BSD-3-Clause) of a parsed ClientHello.

Pure. The worker computes ``ja4_fingerprint(hello)`` once per connection for the
``conn.tls.ja4_fingerprint`` policy variable and the connection event (ngrok
exposes the same field). Specification: FoxIO-LLC/ja4 technical_details/JA4.md;
checked against the vectors of FoxIO's own test data (tests/unit/test_ja4.py).

``t13d1516h2_8daaf6152771_e5627efa2ab1`` is three parts joined by "_":

a. transport ("t" TLS over TCP, "q" QUIC, "d" DTLS); version ("13", "12", ...,
   "00" if unknown) taken from the highest non-GREASE supported_versions value
   when that extension is present, else from legacy_version; "d" if the SNI
   extension is present, else "i"; the number of cipher suites and of extensions
   (GREASE not counted, at most 99), two digits each; two characters for the
   first ALPN value ("00" without one).
b. the first 12 hex digits of SHA-256 over the sorted, comma-separated 4-digit
   hex cipher suites (GREASE removed).
c. the same over the sorted extensions without GREASE, SNI (0000) and ALPN
   (0010), then "_" and the signature algorithms in the client's order (GREASE
   removed); without signature algorithms there is no "_".

An empty list in b or c gives "000000000000" rather than the hash of "".

ALPN characters follow JA4.md: the first and last characters of the first value
when both bytes are ASCII letters or digits (a one-character value gives that
character twice), otherwise the first and last characters of the value's hex
form (0xAB 0xCD -> "ad"). FoxIO's Python and Rust tools differ from JA4.md here
(they print "x0" for a one-character value and "9" for a non-ASCII character);
we follow the specification. No client we know sends such ALPN values.

Cost: a client library sends the same lists on every connection, so whole fingerprints
are cached by the hello fields they depend on (one dict lookup on the worker's hot
path). Chrome's random GREASE values and extension order defeat that key; for it the
hashes of parts b and c are cached by the (GREASE-free, sorted) lists they hash. Both
caches are small and bounded, in entries and in the length of the lists a key holds. `ja4_raw` keeps the plain computation the fast path is
tested against.
"""

from __future__ import annotations

import hashlib

from tlsgate.proto.clienthello import EXT_ALPN, EXT_SERVER_NAME, ClientHello, is_grease

TRANSPORTS = ("t", "q", "d")
EMPTY_HASH = "000000000000"

_VERSION_CODES = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
_EXT_SUPPORTED_VERSIONS = 0x002B
_GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))
"""The 16 GREASE values of `is_grease` (cipher suites and extension types are 16-bit)."""
_NOT_IN_PART_C = frozenset({EXT_SERVER_NAME, EXT_ALPN})
_HASH_CACHE: dict[tuple, str] = {}
_FINGERPRINT_CACHE: dict[tuple, str] = {}
_CACHE_SIZE = 1024
"""Entries kept per cache; beyond it a cache starts over (clients are few, lists repeat)."""
_MAX_CACHED_VALUES = 160
"""Longer lists are not cached: a client controls them, and a hello may carry thousands
of values. Real clients send under a hundred in all (Java, the longest, about 85)."""


def ja4_fingerprint(hello: ClientHello, transport: str = "t") -> str:
    """The JA4 fingerprint of ``hello``, e.g. ``t13d1516h2_8daaf6152771_e5627efa2ab1``."""
    # Everything the fingerprint depends on; the lists as sent (GREASE, order and all).
    key = (
        transport,
        hello.legacy_version,
        hello.supported_versions,
        hello.cipher_suites,
        hello.extensions,
        hello.signature_algorithms,
        hello.alpn[:1],
    )
    fingerprint = _FINGERPRINT_CACHE.get(key)
    if fingerprint is None:
        fingerprint = _compute(hello, transport)
        size = sum(len(values) for values in key[2:6])
        _remember(_FINGERPRINT_CACHE, key, fingerprint, size)
    return fingerprint


def _compute(hello: ClientHello, transport: str) -> str:
    if transport not in TRANSPORTS:
        raise ValueError(f"JA4 transport must be one of {TRANSPORTS}, not {transport!r}")
    grease = _GREASE
    ciphers = [c for c in hello.cipher_suites if c not in grease]
    extensions = [e for e in hello.extensions if e not in grease]
    ciphers.sort()
    part_c = [e for e in extensions if e not in _NOT_IN_PART_C]
    part_c.sort()
    signature_algorithms = [s for s in hello.signature_algorithms if s not in grease]
    key_b = tuple(ciphers)
    key_c = (tuple(part_c), tuple(signature_algorithms))
    cache = _HASH_CACHE
    hash_b = cache.get(key_b)
    if hash_b is None:
        hash_b = _hash12(_hex_list(ciphers))
        _remember(cache, key_b, hash_b, len(ciphers))
    hash_c = cache.get(key_c)
    if hash_c is None:
        text = _hex_list(part_c)
        if signature_algorithms:
            text = f"{text}_{_hex_list(signature_algorithms)}"
        hash_c = _hash12(text)
        _remember(cache, key_c, hash_c, len(part_c) + len(signature_algorithms))
    first_alpn = hello.alpn[0].encode("latin-1") if hello.alpn else None
    return (
        f"{transport}{_version_code(hello, extensions)}"
        f"{'d' if EXT_SERVER_NAME in extensions else 'i'}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{alpn_chars(first_alpn)}"
        f"_{hash_b}_{hash_c}"
    )


def _remember(cache: dict[tuple, str], key: tuple, value: str, size: int) -> None:
    """Keep ``value`` under ``key`` (holding ``size`` list values) unless the key is too long."""
    if size > _MAX_CACHED_VALUES:
        return
    if len(cache) >= _CACHE_SIZE:
        cache.clear()
    cache[key] = value


def _hex_list(values: list[int]) -> str:
    return ",".join([f"{v:04x}" for v in values])


def ja4_raw(hello: ClientHello, transport: str = "t") -> str:
    """JA4_r: the fingerprint with the lists in clear instead of hashed (for debugging)."""
    prefix, ciphers, extensions = _ja4_parts(hello, transport)
    return f"{prefix}_{ciphers}_{extensions}"


def alpn_chars(value: bytes | None) -> str:
    """The two ALPN characters of part a for the first ALPN value (see the module docstring)."""
    if not value:
        return "00"
    first, last = value[0], value[-1]
    if _is_alphanumeric(first) and _is_alphanumeric(last):
        return chr(first) + chr(last)
    hex_form = value.hex()
    return hex_form[0] + hex_form[-1]


def _ja4_parts(hello: ClientHello, transport: str) -> tuple[str, str, str]:
    if transport not in TRANSPORTS:
        raise ValueError(f"JA4 transport must be one of {TRANSPORTS}, not {transport!r}")
    ciphers = [c for c in hello.cipher_suites if not is_grease(c)]
    extensions = [e for e in hello.extensions if not is_grease(e)]
    first_alpn = hello.alpn[0].encode("latin-1") if hello.alpn else None
    prefix = (
        f"{transport}{_version_code(hello, extensions)}"
        f"{'d' if EXT_SERVER_NAME in extensions else 'i'}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{alpn_chars(first_alpn)}"
    )
    cipher_list = ",".join(f"{c:04x}" for c in sorted(ciphers))
    ext_list = ",".join(
        f"{e:04x}" for e in sorted(extensions) if e not in (EXT_SERVER_NAME, EXT_ALPN)
    )
    signature_algorithms = ",".join(
        f"{s:04x}" for s in hello.signature_algorithms if not is_grease(s)
    )
    if signature_algorithms:
        ext_list = f"{ext_list}_{signature_algorithms}"
    return prefix, cipher_list, ext_list


def _version_code(hello: ClientHello, extensions: list[int]) -> str:
    version = hello.legacy_version
    if _EXT_SUPPORTED_VERSIONS in extensions:
        offered = [v for v in hello.supported_versions if v not in _GREASE]
        if offered:
            version = max(offered)
    return _VERSION_CODES.get(version, "00")


def _hash12(text: str) -> str:
    # JA4.md: an empty list gives zeros, so that "no values" stands out. Part c
    # cannot be only signature algorithms: they come in an extension of the list.
    if not text:
        return EMPTY_HASH
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def _is_alphanumeric(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A
