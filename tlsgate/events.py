"""Connection records and the `tcp_connection_closed.v0` event built from them.

Pure: the worker fills a `ConnectionRecord` while it serves a connection and
calls `build_closed_event()` once when the connection ends; the worker's event
sink (tlsgate/worker/eventsink.py) does the writing. Field names follow ngrok's
event (ngrok-tls-facts.md §5.1) plus tlsgate's own `endpoint`, `upstream`,
`termination` and `close_reason`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

EVENT_TYPE_CLOSED = "tcp_connection_closed.v0"

#: Every close reason the gateway reports, in the order of a connection's life.
CLOSE_REASONS = (
    "eof",
    "client_reset",
    "upstream_reset",
    "idle_timeout",
    "client_hello_timeout",
    "not_tls",
    "bad_client_hello",
    "handshake_too_large",
    "no_sni",
    "unknown_sni",
    "upstream_connect_failed",
    "upstream_connect_timeout",
    "shutdown",
    "killed",
    # gateway-wide limits ([limits] max_connections, max_connections_per_ip)
    "max_connections",
    "max_connections_per_ip",
    # TLS termination at the gateway
    "handshake_failed",
    "handshake_timeout",
    "upstream_tls_failed",
    # traffic policy
    "ip_restricted",
    "policy_denied",
    "rate_limited",
    "policy_error",
    "forward_internal_failed",
)


_SECOND_PREFIXES: dict[int, str] = {}
"""``%Y-%m-%dT%H:%M:%S`` per whole second: a connection's timestamps share a few seconds."""
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def rfc3339(ts: float) -> str:
    """RFC 3339 UTC with microseconds, as ngrok's events carry them.

    The same text as ``datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")``
    (microseconds rounded half to even, as ``fromtimestamp`` rounds them), with the
    formatted second cached instead of building a datetime and calling strftime.
    """
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        micros -= 1_000_000
        whole += 1.0
    elif micros < 0:
        micros += 1_000_000
        whole -= 1.0
    second = int(whole)
    prefix = _SECOND_PREFIXES.get(second)
    if prefix is None:
        if len(_SECOND_PREFIXES) >= 64:
            _SECOND_PREFIXES.clear()
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _SECOND_PREFIXES[second] = prefix
    return f"{prefix}.{micros:06d}Z"


def new_event_id() -> str:
    return "ev_" + os.urandom(13).hex()  # what secrets.token_hex(13) returns


@dataclass(slots=True)
class ConnectionRecord:
    """What the worker learns about one client connection, filled in as it goes."""

    conn_id: str
    start_ts: float
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    server_name: str = ""
    """The normalised SNI, or empty when the client sent none (or an invalid one)."""
    ja4_fingerprint: str = ""
    endpoint_name: str | None = None
    endpoint_url: str | None = None
    upstream_addr: str | None = None
    termination: str = "upstream"
    bytes_in: int = 0
    """Bytes received from the client (the ClientHello included)."""
    bytes_out: int = 0
    """Bytes sent to the client."""
    close_reason: str | None = None
    end_ts: float | None = None
    upstream_error: str | None = None
    """Why dialling the upstream failed (for the operator; never sent to the client)."""
    extra: dict = field(default_factory=dict)
    """Fields later features add under `object` (tls, traffic_policy, ...)."""


def build_closed_event(rec: ConnectionRecord) -> dict:
    end_ts = rfc3339(rec.end_ts if rec.end_ts is not None else rec.start_ts)
    endpoint = None
    if rec.endpoint_name is not None:
        endpoint = {"name": rec.endpoint_name, "url": rec.endpoint_url}
    obj = {
        "conn": {
            "bytes_in": rec.bytes_in,
            "bytes_out": rec.bytes_out,
            "client_ip": rec.client_ip,
            "client_port": rec.client_port,
            "server_ip": rec.server_ip,
            "server_port": rec.server_port,
            "server_name": rec.server_name,
            "start_ts": rfc3339(rec.start_ts),
            "end_ts": end_ts,
        },
        "ja4_fingerprint": rec.ja4_fingerprint,
        "endpoint": endpoint,
        "upstream": {"addr": rec.upstream_addr} if rec.upstream_addr else None,
        "termination": rec.termination,
        "close_reason": rec.close_reason,
        "id": rec.conn_id,
    }
    if rec.upstream_error:
        obj["upstream_error"] = rec.upstream_error
    obj.update(rec.extra)
    return {
        "event_id": new_event_id(),
        "event_type": EVENT_TYPE_CLOSED,
        "event_timestamp": end_ts,
        "object": obj,
    }


def encode_event(event: dict) -> bytes:
    """One JSON line; compact separators keep the events file small."""
    return _ENCODER.encode(event).encode() + b"\n"  # = json.dumps(event, separators=...)
