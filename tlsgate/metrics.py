"""Prometheus text exposition (format 0.0.4) of the gateway's counters.

Pure: `render_metrics` turns a `MetricsInput` (the master's sum over its
workers, tlsgate/master/stats.py) into the text the master serves at
``/metrics`` (tlsgate/master/metrics_server.py). Written by hand rather than
with prometheus-client because the numbers already exist as plain dicts summed
from worker reports, and the master must stay a single thread with no HTTP
server thread; the test suite checks the output with prometheus-client's parser.

Unrouted connections (no SNI, unknown SNI, ...) have ``endpoint=""``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tlsgate.control.counters import DURATION_BUCKETS, LATENCY_BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class MetricsInput:
    counters: dict[str, Any]
    """Summed worker counters (`tlsgate.control.counters` snapshot shape)."""
    active_by_endpoint: dict[str, int]
    endpoints: list[str]
    """Every configured endpoint name, so idle endpoints show a 0."""
    limit_hits: dict[str, int]
    workers: int
    worker_restarts: int
    generation: int
    reloads: dict[str, int] = field(default_factory=dict)
    """``{"ok": n, "failed": n}``"""
    start_time: float = 0.0
    dropped_events: int = 0


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{escape_label(str(value))}"' for name, value in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    if isinstance(value, float):
        if value == float("inf"):
            return "+Inf"
        return repr(value)
    return str(value)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_number(value)}")

    def histogram(self, name: str, bounds: Iterable[float], data: dict[str, Any]) -> None:
        cumulative = 0
        buckets = data.get("buckets", [])
        for bound, count in zip([*bounds, float("inf")], buckets, strict=False):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(float(bound))
            self.sample(f"{name}_bucket", cumulative, le=le)
        self.sample(f"{name}_sum", float(data.get("sum", 0.0)))
        self.sample(f"{name}_count", int(data.get("count", 0)))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(data: MetricsInput) -> str:
    c = data.counters
    w = _Writer()

    w.family(
        "tlsgate_connections_total", "counter", "Closed connections by endpoint and close reason."
    )
    for endpoint, by_reason in sorted(c.get("closed", {}).items()):
        for reason, count in sorted(by_reason.items()):
            w.sample("tlsgate_connections_total", count, endpoint=endpoint, close_reason=reason)

    w.family(
        "tlsgate_connections_accepted_total", "counter", "Connections accepted on the listeners."
    )
    w.sample("tlsgate_connections_accepted_total", int(c.get("accepted", 0)))

    w.family("tlsgate_connections_active", "gauge", "Open connections by endpoint.")
    active = {name: 0 for name in data.endpoints}
    active.update(data.active_by_endpoint)
    for endpoint, count in sorted(active.items()):
        w.sample("tlsgate_connections_active", count, endpoint=endpoint)

    for direction, text in (("in", "received from clients"), ("out", "sent to clients")):
        name = f"tlsgate_bytes_{direction}_total"
        w.family(name, "counter", f"Bytes {text}, by endpoint (open connections included).")
        for endpoint, count in sorted(c.get(f"bytes_{direction}", {}).items()):
            w.sample(name, count, endpoint=endpoint)

    w.family(
        "tlsgate_handshake_failures_total",
        "counter",
        "Failed TLS handshakes by the alert sent and the close reason.",
    )
    for key, count in sorted(c.get("handshake_failures", {}).items()):
        alert, _, reason = key.partition("|")
        w.sample("tlsgate_handshake_failures_total", count, alert=alert, reason=reason)

    w.family("tlsgate_policy_decisions_total", "counter", "Traffic policy decisions by endpoint.")
    for endpoint, by_decision in sorted(c.get("policy", {}).items()):
        for decision, count in sorted(by_decision.items()):
            w.sample("tlsgate_policy_decisions_total", count, endpoint=endpoint, decision=decision)

    w.family(
        "tlsgate_limit_hits_total",
        "counter",
        "Connections ended by a limit (timeouts, sizes, descriptor cap).",
    )
    for limit, count in sorted(data.limit_hits.items()):
        w.sample("tlsgate_limit_hits_total", count, limit=limit)

    name = "tlsgate_clienthello_to_upstream_seconds"
    w.family(name, "histogram", "From the routed ClientHello to the connected upstream.")
    w.histogram(name, LATENCY_BUCKETS, c.get("latency", {}))

    name = "tlsgate_connection_duration_seconds"
    w.family(name, "histogram", "Duration of closed connections.")
    w.histogram(name, DURATION_BUCKETS, c.get("duration", {}))

    w.family(
        "tlsgate_worker_restarts_total",
        "counter",
        "Workers that died unexpectedly and were replaced.",
    )
    w.sample("tlsgate_worker_restarts_total", data.worker_restarts)
    w.family(
        "tlsgate_workers", "gauge", "Worker processes of the current generation that are running."
    )
    w.sample("tlsgate_workers", data.workers)
    w.family(
        "tlsgate_config_generation",
        "gauge",
        "Config generation being served (1 at start, +1 per reload).",
    )
    w.sample("tlsgate_config_generation", data.generation)
    w.family("tlsgate_reloads_total", "counter", "Reloads by result.")
    for result in ("ok", "failed"):
        w.sample("tlsgate_reloads_total", data.reloads.get(result, 0), result=result)
    w.family(
        "tlsgate_events_dropped_total",
        "counter",
        "Connection events a worker could not hand to the master.",
    )
    w.sample("tlsgate_events_dropped_total", data.dropped_events)
    w.family("tlsgate_start_time_seconds", "gauge", "When the master started (Unix time).")
    w.sample("tlsgate_start_time_seconds", float(data.start_time))
    return w.text()
