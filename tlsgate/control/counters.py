"""Per-worker connection counters and how reports from many workers add up.

Pure. A worker's reporter (tlsgate/worker/reporter.py) feeds every finished
`ConnectionRecord` to `ConnectionCounters.count_closed` and sends
`ConnectionCounters.snapshot()` to the master, which adds the snapshots of all
workers (living and exited) with `add_counters` (tlsgate/master/stats.py). Every
number is cumulative since the worker started, so a sum over workers is again a
valid Prometheus counter as long as an exited worker's last snapshot is kept.

Snapshot shape (JSON-ready; ``""`` is the endpoint of connections that were
never routed)::

    accepted            int
    accept_errors       int                      accept() out of descriptors/buffers
    closed              {endpoint: {close_reason: int}}
    bytes_in/bytes_out  {endpoint: int}          closed connections (live ones are added by the reporter)
    handshake_failures  {"alert|reason": int}
    policy              {endpoint: {decision: int}}
    latency, duration   {"buckets": [int], "sum": float, "count": int}   histograms, `BUCKETS` bounds
    last_error          {endpoint: {"ts": float, "reason": str, "detail": str}}
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from tlsgate.events import ConnectionRecord
from tlsgate.proto.alerts import ALERT_NAMES

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the ClientHello-to-upstream latency histogram."""
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Upper bounds (seconds) of the connection-duration histogram."""

NORMAL_CLOSE_REASONS = frozenset({"eof", "client_reset", "idle_timeout", "shutdown", "killed"})
"""Close reasons that are not an endpoint's error (anything else is shown as its last error)."""

POLICY_CLOSE_REASONS = frozenset(
    {"ip_restricted", "policy_denied", "rate_limited", "policy_error", "forward_internal_failed"}
)

LIMIT_HIT_REASONS: dict[str, str] = {
    "client_hello_timeout": "client_hello_timeout",
    "handshake_timeout": "handshake_timeout",
    "idle_timeout": "idle_timeout",
    "upstream_connect_timeout": "upstream_connect_timeout",
    "handshake_too_large": "max_handshake_message",
    "certificate_too_large": "max_certificate_message",
    "shutdown": "drain_timeout",
    "max_connections": "max_connections",
    "max_connections_per_ip": "max_connections_per_ip",
}
"""close_reason -> the limit that ended the connection (see `limit_hits`)."""

_PRE_HANDSHAKE_ALERTS = {
    "handshake_too_large": "illegal_parameter",
    "not_tls": "none",
}
_HANDSHAKE_FAILURE_REASONS = frozenset(
    {"handshake_failed", "handshake_timeout", "no_sni", "unknown_sni", "bad_client_hello"}
    | _PRE_HANDSHAKE_ALERTS.keys()
)
"""The close reasons `_handshake_failure` can count; `count_closed` asks only for these."""


def new_histogram(bounds: tuple[float, ...]) -> dict[str, Any]:
    return {"buckets": [0] * (len(bounds) + 1), "sum": 0.0, "count": 0}


def observe(histogram: dict[str, Any], bounds: tuple[float, ...], value: float) -> None:
    """Count ``value`` in the first bucket whose bound is >= value (the last one is +Inf)."""
    histogram["buckets"][bisect_left(bounds, value)] += 1
    histogram["sum"] += value
    histogram["count"] += 1


class ConnectionCounters:
    """Cumulative counters of one worker; the worker's only mutable statistics."""

    def __init__(self, alert_on_unknown_sni: bool = True):
        self.alert_on_unknown_sni = alert_on_unknown_sni
        self.accepted = 0
        self.accept_errors = 0
        self.closed: dict[str, dict[str, int]] = {}
        self.bytes_in: dict[str, int] = {}
        self.bytes_out: dict[str, int] = {}
        self.handshake_failures: dict[str, int] = {}
        self.policy: dict[str, dict[str, int]] = {}
        self.latency = new_histogram(LATENCY_BUCKETS)
        self.duration = new_histogram(DURATION_BUCKETS)
        self.last_error: dict[str, dict[str, Any]] = {}

    def count_closed(self, record: ConnectionRecord, latency: float | None = None) -> None:
        """Account one finished connection; ``latency`` is its ClientHello-to-upstream time, if it got that far."""
        endpoint = record.endpoint_name or ""
        reason = record.close_reason or "unknown"
        by_reason = self.closed.get(endpoint)
        if by_reason is None:
            by_reason = self.closed[endpoint] = {}
        by_reason[reason] = by_reason.get(reason, 0) + 1
        bytes_in, bytes_out = self.bytes_in, self.bytes_out
        bytes_in[endpoint] = bytes_in.get(endpoint, 0) + record.bytes_in
        bytes_out[endpoint] = bytes_out.get(endpoint, 0) + record.bytes_out
        if record.end_ts is not None:
            observe(self.duration, DURATION_BUCKETS, max(0.0, record.end_ts - record.start_ts))
        if latency is not None:
            observe(self.latency, LATENCY_BUCKETS, latency)
        if reason in _HANDSHAKE_FAILURE_REASONS:
            failure = self._handshake_failure(record, reason)
            if failure is not None:
                self.handshake_failures[failure] = self.handshake_failures.get(failure, 0) + 1
        # Most connections ran no policy: their record has no extras and no termination.
        if record.extra or record.termination == "gateway" or reason in POLICY_CLOSE_REASONS:
            decision = _policy_decision(record, reason)
            if decision is not None:
                by_decision = self.policy.setdefault(endpoint, {})
                by_decision[decision] = by_decision.get(decision, 0) + 1
        if reason not in NORMAL_CLOSE_REASONS:
            detail = record.upstream_error or ""
            self.last_error[endpoint] = {
                "ts": record.end_ts or record.start_ts,
                "reason": reason,
                "detail": detail,
            }

    def _handshake_failure(self, record: ConnectionRecord, reason: str) -> str | None:
        """``"alert|reason"`` for a connection whose TLS handshake failed, else None."""
        tls = record.extra.get("tls")
        if isinstance(tls, dict) and reason in ("handshake_failed", "handshake_timeout"):
            # Terminated at the gateway: the worker records the alert it sent, if any.
            return f"{_alert_label(tls.get('alert_sent'))}|{reason}"
        if reason in ("no_sni", "unknown_sni"):
            return f"{'unrecognized_name' if self.alert_on_unknown_sni else 'none'}|{reason}"
        if reason in _PRE_HANDSHAKE_ALERTS:
            return f"{_PRE_HANDSHAKE_ALERTS[reason]}|{reason}"
        if reason == "bad_client_hello":
            # The parser picks decode_error, illegal_parameter or unexpected_message; the record does not say which.
            return f"unknown|{reason}"
        if reason == "handshake_timeout":
            return f"none|{reason}"
        if reason == "handshake_failed":
            return f"unknown|{reason}"
        return None

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of every counter (the reporter adds the live connections' bytes)."""
        return {
            "accepted": self.accepted,
            "accept_errors": self.accept_errors,
            "closed": {e: dict(r) for e, r in self.closed.items()},
            "bytes_in": dict(self.bytes_in),
            "bytes_out": dict(self.bytes_out),
            "handshake_failures": dict(self.handshake_failures),
            "policy": {e: dict(d) for e, d in self.policy.items()},
            "latency": _copy_histogram(self.latency),
            "duration": _copy_histogram(self.duration),
            "last_error": {e: dict(v) for e, v in self.last_error.items()},
        }


def _copy_histogram(h: dict[str, Any]) -> dict[str, Any]:
    return {"buckets": list(h["buckets"]), "sum": h["sum"], "count": h["count"]}


def _alert_label(alert: object) -> str:
    if isinstance(alert, int):
        return ALERT_NAMES.get(alert, str(alert))
    if isinstance(alert, str) and alert:
        return alert
    return "none"


def _policy_decision(record: ConnectionRecord, reason: str) -> str | None:
    """What the traffic policy did to a connection, as far as its record tells; None: no policy ran.

    A closing decision is its close reason; otherwise forward_internal, terminate_tls,
    or allowed (the policy ran: it logged or checked IPs, and let the connection through).
    """
    extra = record.extra
    if reason in POLICY_CLOSE_REASONS:
        return reason
    if extra.get("forwarded_to"):
        return "forward_internal"
    if record.termination == "gateway":
        return "terminate_tls"
    if "traffic_policy" in extra or "ip_policy" in extra:
        return "allowed"
    return None


def empty_counters() -> dict[str, Any]:
    return ConnectionCounters().snapshot()


def add_counters(total: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Add snapshot ``other`` into ``total`` (in place, and returned); unknown keys are ignored.

    ``last_error`` keeps the most recent error per endpoint.
    """
    for key in ("accepted", "accept_errors"):
        total[key] = total.get(key, 0) + int(other.get(key, 0))
    for key in ("bytes_in", "bytes_out", "handshake_failures"):
        _add_flat(total.setdefault(key, {}), other.get(key, {}))
    for key in ("closed", "policy"):
        into = total.setdefault(key, {})
        for outer, inner in other.get(key, {}).items():
            _add_flat(into.setdefault(outer, {}), inner)
    for key in ("latency", "duration"):
        if key in other:
            _add_histogram(total, key, other[key])
    errors = total.setdefault("last_error", {})
    for endpoint, error in other.get("last_error", {}).items():
        if endpoint not in errors or error.get("ts", 0) >= errors[endpoint].get("ts", 0):
            errors[endpoint] = dict(error)
    return total


def _add_flat(into: dict[str, int], other: dict[str, int]) -> None:
    for key, value in other.items():
        into[key] = into.get(key, 0) + int(value)


def _add_histogram(total: dict[str, Any], key: str, other: dict[str, Any]) -> None:
    mine = total.get(key)
    if mine is None:
        total[key] = _copy_histogram(other)
        return
    if len(mine["buckets"]) != len(other["buckets"]):
        return  # a worker of another version: its histogram cannot be added bucket by bucket
    mine["buckets"] = [a + b for a, b in zip(mine["buckets"], other["buckets"], strict=True)]
    mine["sum"] += other["sum"]
    mine["count"] += other["count"]


def limit_hits(counters: dict[str, Any]) -> dict[str, int]:
    """How often each limit ended a connection, from a (summed) snapshot."""
    hits = dict.fromkeys(LIMIT_HIT_REASONS.values(), 0)
    for by_reason in counters.get("closed", {}).values():
        for reason, count in by_reason.items():
            limit = LIMIT_HIT_REASONS.get(reason)
            if limit is not None:
                hits[limit] += count
    hits["max_open_files"] = counters.get("accept_errors", 0)
    return hits
