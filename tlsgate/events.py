"""Connection records and the `tcp_connection_closed.v0` event built from them.

Pure: the worker fills a `ConnectionRecord` while it serves a connection and
turns it into a `closed_event_row` once when the connection ends; the event itself
(`closed_event_from_row`, or `build_closed_event` in one step) is built where it is
written or read: the worker's event sink (tlsgate/worker/eventsink.py), the master's
event log (tlsgate/master/eventlog.py). Field names follow ngrok's
event (ngrok-tls-facts.md §5.1) plus tlsgate's own `endpoint`, `upstream`,
`termination` and `close_reason`.
"""

from __future__ import annotations

import json
import math
import random
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
    return rfc3339_micros(micros(ts))


def micros(ts: float) -> int:
    """``ts`` as whole microseconds, rounded as `rfc3339` rounds them."""
    fraction, whole = math.modf(ts)
    return int(whole) * 1_000_000 + round(fraction * 1e6)


def rfc3339_micros(us: int) -> str:
    """`rfc3339` of a time given in whole microseconds (`micros`)."""
    second, fraction = divmod(us, 1_000_000)
    prefix = _SECOND_PREFIXES.get(second)
    if prefix is None:
        if len(_SECOND_PREFIXES) >= 64:
            _SECOND_PREFIXES.clear()
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _SECOND_PREFIXES[second] = prefix
    return f"{prefix}.{fraction:06d}Z"


def new_event_id() -> str:
    """``ev_`` and 26 random hex digits, as ``"ev_" + secrets.token_hex(13)`` would give.

    From `random`, not the OS: a worker draws one per connection, and an id only has to be
    unique, not secret. The module's generator is reseeded in every forked worker.
    """
    return f"ev_{random.getrandbits(104):026x}"


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
    return closed_event_from_row(closed_event_row(rec))


def closed_event_row(rec: ConnectionRecord) -> list:
    """The closed event as a flat list: what a worker sends the master.

    Building the nested event (two RFC 3339 timestamps, five dicts) and encoding it costs
    a worker several times what this list does, per connection; the master expands rows
    with `closed_event_from_row` only when someone reads its backlog or follows events.
    The event id is drawn here, so every expansion of a row is the same event. Times
    travel as whole microseconds: JSON writes an int for a fraction of what a float costs.
    """
    return [
        new_event_id(),
        micros(rec.start_ts),
        micros(rec.end_ts if rec.end_ts is not None else rec.start_ts),
        rec.conn_id,
        rec.client_ip,
        rec.client_port,
        rec.server_ip,
        rec.server_port,
        rec.server_name,
        rec.ja4_fingerprint,
        rec.endpoint_name,
        rec.endpoint_url,
        rec.upstream_addr,
        rec.termination,
        rec.bytes_in,
        rec.bytes_out,
        rec.close_reason,
        rec.upstream_error,
        rec.extra,
    ]


CLOSED_ROW_LENGTH = 19


def closed_event_from_row(row: list) -> dict:
    """The ``tcp_connection_closed.v0`` event of a `closed_event_row`."""
    (
        event_id, start_us, end_us, conn_id, client_ip, client_port, server_ip, server_port,
        server_name, ja4, endpoint_name, endpoint_url, upstream_addr, termination,
        bytes_in, bytes_out, close_reason, upstream_error, extra,
    ) = row  # fmt: skip
    end = rfc3339_micros(end_us)
    obj = {
        "conn": {
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "client_ip": client_ip,
            "client_port": client_port,
            "server_ip": server_ip,
            "server_port": server_port,
            "server_name": server_name,
            "start_ts": rfc3339_micros(start_us),
            "end_ts": end,
        },
        "ja4_fingerprint": ja4,
        "endpoint": (
            {"name": endpoint_name, "url": endpoint_url} if endpoint_name is not None else None
        ),
        "upstream": {"addr": upstream_addr} if upstream_addr else None,
        "termination": termination,
        "close_reason": close_reason,
        "id": conn_id,
    }
    if upstream_error:
        obj["upstream_error"] = upstream_error
    obj.update(extra)
    return {
        "event_id": event_id,
        "event_type": EVENT_TYPE_CLOSED,
        "event_timestamp": end,
        "object": obj,
    }


def encode_event(event: dict) -> bytes:
    """One JSON line; compact separators keep the events file small."""
    return _ENCODER.encode(event).encode() + b"\n"  # = json.dumps(event, separators=...)
