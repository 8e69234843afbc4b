"""TLS alert records the gateway writes before it closes a connection it will not serve.

Pure. The ClientHello parser (tlsgate/proto/clienthello.py) names the alert to
send in `ClientHelloError.alert`, the routing step sends `UNRECOGNIZED_NAME` for
an unknown SNI, and the worker writes the bytes from `build_alert()` (or the
precomputed `FATAL_ALERTS`) to the client socket, then closes it.

Every alert here is written in the clear, before any key exchange, so the record
is a plain TLSPlaintext record (RFC 8446 §5.1, RFC 5246 §6.2.1)::

    content_type=21 (alert) | legacy_record_version=0x0303 | length=2 | level | description

0x0303 is what TLS 1.2 and TLS 1.3 stacks both accept in a record header (TLS 1.3
freezes the record version at 0x0303 for everything but the first ClientHello).
"""

from __future__ import annotations

from types import MappingProxyType

CONTENT_TYPE_ALERT = 21
RECORD_VERSION = 0x0303

LEVEL_WARNING = 1
LEVEL_FATAL = 2

# Alert descriptions (RFC 8446 §6 and the IANA "TLS Alerts" registry).
CLOSE_NOTIFY = 0
UNEXPECTED_MESSAGE = 10
RECORD_OVERFLOW = 22
HANDSHAKE_FAILURE = 40
ILLEGAL_PARAMETER = 47
DECODE_ERROR = 50
PROTOCOL_VERSION = 70
INTERNAL_ERROR = 80
UNRECOGNIZED_NAME = 112

#: Description number -> the name RFC 8446 gives it (for logs and events).
ALERT_NAMES: MappingProxyType[int, str] = MappingProxyType(
    {
        CLOSE_NOTIFY: "close_notify",
        UNEXPECTED_MESSAGE: "unexpected_message",
        RECORD_OVERFLOW: "record_overflow",
        HANDSHAKE_FAILURE: "handshake_failure",
        ILLEGAL_PARAMETER: "illegal_parameter",
        DECODE_ERROR: "decode_error",
        PROTOCOL_VERSION: "protocol_version",
        INTERNAL_ERROR: "internal_error",
        UNRECOGNIZED_NAME: "unrecognized_name",
    }
)


def build_alert(description: int, level: int = LEVEL_FATAL) -> bytes:
    """Return the 7-byte alert record for ``description`` (fatal unless told otherwise)."""
    if not 0 <= description <= 255:
        raise ValueError(f"alert description out of range: {description}")
    if level not in (LEVEL_WARNING, LEVEL_FATAL):
        raise ValueError(f"alert level must be 1 (warning) or 2 (fatal), not {level}")
    return bytes(
        (
            CONTENT_TYPE_ALERT,
            RECORD_VERSION >> 8,
            RECORD_VERSION & 0xFF,
            0,
            2,
            level,
            description,
        )
    )


#: Fatal alert records for every named description, built once at import so the
#: worker's error path does no work: ``sock.sendall(FATAL_ALERTS[exc.alert])``.
FATAL_ALERTS: MappingProxyType[int, bytes] = MappingProxyType(
    {description: build_alert(description) for description in ALERT_NAMES if description}
)


def alert_name(description: int) -> str:
    """The RFC name of an alert description, or ``alert_<n>`` for one not listed here."""
    return ALERT_NAMES.get(description, f"alert_{description}")
