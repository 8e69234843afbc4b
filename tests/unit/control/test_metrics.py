"""The Prometheus text is valid (checked with prometheus-client's parser) and complete."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tlsgate.control.counters import LATENCY_BUCKETS, ConnectionCounters, limit_hits
from tlsgate.events import ConnectionRecord
from tlsgate.metrics import MetricsInput, escape_label, render_metrics


def _input() -> MetricsInput:
    c = ConnectionCounters()
    rec = ConnectionRecord(
        "1.1", 1.0, "127.0.0.1", 1, "127.0.0.1", 2, endpoint_name='we"ird\\name', bytes_in=7
    )
    rec.close_reason, rec.end_ts = "eof", 3.0
    c.count_closed(rec, latency=0.004)
    c.accepted = 1
    counters = c.snapshot()
    return MetricsInput(
        counters=counters, active_by_endpoint={"app": 2}, endpoints=["app", "idle"], limit_hits=limit_hits(counters),
        workers=2, worker_restarts=1, generation=3, reloads={"ok": 2, "failed": 1}, start_time=1000.5,
    )  # fmt: skip


def test_output_parses_and_carries_every_family():
    families = {f.name: f for f in text_string_to_metric_families(render_metrics(_input()))}
    expected = {
        "tlsgate_connections": "counter", "tlsgate_connections_accepted": "counter",
        "tlsgate_connections_active": "gauge", "tlsgate_bytes_in": "counter", "tlsgate_bytes_out": "counter",
        "tlsgate_handshake_failures": "counter", "tlsgate_policy_decisions": "counter",
        "tlsgate_limit_hits": "counter", "tlsgate_clienthello_to_upstream_seconds": "histogram",
        "tlsgate_connection_duration_seconds": "histogram", "tlsgate_worker_restarts": "counter",
        "tlsgate_workers": "gauge", "tlsgate_config_generation": "gauge", "tlsgate_reloads": "counter",
        "tlsgate_events_dropped": "counter", "tlsgate_start_time_seconds": "gauge",
    }  # fmt: skip
    assert {name: f.type for name, f in families.items()} == expected
    [closed] = families["tlsgate_connections"].samples
    assert (
        closed.labels == {"endpoint": 'we"ird\\name', "close_reason": "eof"} and closed.value == 1
    )
    active = {s.labels["endpoint"]: s.value for s in families["tlsgate_connections_active"].samples}
    assert active == {"app": 2, "idle": 0}
    reloads = {s.labels["result"]: s.value for s in families["tlsgate_reloads"].samples}
    assert reloads == {"ok": 2, "failed": 1}


def test_histograms_are_cumulative_with_inf():
    families = {f.name: f for f in text_string_to_metric_families(render_metrics(_input()))}
    samples = families["tlsgate_clienthello_to_upstream_seconds"].samples
    buckets = [(s.labels["le"], s.value) for s in samples if s.name.endswith("_bucket")]
    assert len(buckets) == len(LATENCY_BUCKETS) + 1 and buckets[-1] == ("+Inf", 1)
    assert dict(buckets)["0.0025"] == 0 and dict(buckets)["0.005"] == 1
    values = [v for _, v in buckets]
    assert values == sorted(values)
    count = next(s.value for s in samples if s.name.endswith("_count"))
    assert count == 1


def test_label_escaping():
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
