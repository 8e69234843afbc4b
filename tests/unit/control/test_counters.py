"""Worker counters from connection records, and how the master adds them up."""

from __future__ import annotations

import copy

from tlsgate.control.counters import (
    DURATION_BUCKETS,
    LATENCY_BUCKETS,
    ConnectionCounters,
    add_counters,
    empty_counters,
    limit_hits,
)
from tlsgate.events import ConnectionRecord


def record(reason: str, endpoint: str | None = "app", **fields) -> ConnectionRecord:
    rec = ConnectionRecord(
        "1.1", 100.0, "127.0.0.1", 1, "127.0.0.1", 8443, endpoint_name=endpoint, **fields
    )
    rec.close_reason = reason
    rec.end_ts = fields.pop("end_ts", 102.0)
    return rec


def test_closed_connections_by_endpoint_and_reason_with_bytes_and_histograms():
    c = ConnectionCounters()
    c.count_closed(record("eof", bytes_in=10, bytes_out=20), latency=0.003)
    c.count_closed(record("eof", bytes_in=1, bytes_out=2), latency=20.0)
    c.count_closed(record("unknown_sni", endpoint=None, bytes_in=300))
    snap = c.snapshot()
    assert snap["closed"] == {"app": {"eof": 2}, "": {"unknown_sni": 1}}
    assert snap["bytes_in"] == {"app": 11, "": 300} and snap["bytes_out"] == {"app": 22, "": 0}
    latency = snap["latency"]
    assert latency["count"] == 2 and latency["sum"] == 20.003
    assert (
        latency["buckets"][LATENCY_BUCKETS.index(0.005)] == 1 and latency["buckets"][-1] == 1
    )  # +Inf
    assert snap["duration"]["count"] == 3
    assert snap["duration"]["buckets"][DURATION_BUCKETS.index(5.0)] == 3
    assert snap["handshake_failures"] == {"unrecognized_name|unknown_sni": 1}


def test_last_error_ignores_normal_closes():
    c = ConnectionCounters()
    c.count_closed(
        record("upstream_connect_failed", upstream_error="connect 1.2.3.4:1: ECONNREFUSED")
    )
    c.count_closed(record("eof"))
    assert c.snapshot()["last_error"]["app"] == {
        "ts": 102.0, "reason": "upstream_connect_failed", "detail": "connect 1.2.3.4:1: ECONNREFUSED",
    }  # fmt: skip


def test_handshake_failures_and_policy_decisions_from_the_record():
    c = ConnectionCounters(alert_on_unknown_sni=False)
    c.count_closed(record("no_sni", endpoint=None))
    tls_failed = {"tls": {"alert_sent": "handshake_failure", "error": "no shared cipher"}}
    c.count_closed(record("handshake_failed", extra=tls_failed))
    c.count_closed(record("handshake_failed", extra={"tls": {"alert_sent": 40}}))
    c.count_closed(record("handshake_timeout", extra={"tls": {}}))
    c.count_closed(record("bad_client_hello", endpoint=None))
    c.count_closed(record("eof", termination="gateway", extra={"tls": {"version": "TLSv1.3"}}))
    c.count_closed(record("ip_restricted", extra={"ip_policy": {"decision": "block"}}))
    c.count_closed(
        record("eof", extra={"forwarded_to": {"name": "db", "url": "tls://db.internal"}})
    )
    c.count_closed(record("eof", extra={"traffic_policy": {"logs": [{"a": 1}]}}))
    c.count_closed(record("eof"))
    snap = c.snapshot()
    assert snap["handshake_failures"] == {
        "none|no_sni": 1,
        "handshake_failure|handshake_failed": 2,
        "none|handshake_timeout": 1,
        "unknown|bad_client_hello": 1,
    }
    assert snap["policy"] == {
        "app": {"terminate_tls": 1, "ip_restricted": 1, "forward_internal": 1, "allowed": 1}
    }


def test_adding_snapshots_is_a_sum_and_keeps_the_newest_error():
    a, b = ConnectionCounters(), ConnectionCounters()
    a.accepted, b.accepted = 3, 4
    a.count_closed(record("upstream_reset", end_ts=200.0), latency=0.01)
    b.count_closed(record("upstream_connect_timeout", end_ts=300.0), latency=0.02)
    b.count_closed(record("eof", endpoint="other", bytes_in=5))
    total = add_counters(empty_counters(), a.snapshot())
    before = copy.deepcopy(total)
    add_counters(total, b.snapshot())
    assert total["accepted"] == 7
    assert total["closed"] == {
        "app": {"upstream_reset": 1, "upstream_connect_timeout": 1},
        "other": {"eof": 1},
    }
    assert total["latency"]["count"] == 2 and sum(total["latency"]["buckets"]) == 2
    assert total["last_error"]["app"]["reason"] == "upstream_connect_timeout"
    assert before["accepted"] == 3  # the inputs are not shared with the sum


def test_limit_hits_map_close_reasons_to_limits():
    c = ConnectionCounters()
    for reason in (
        "client_hello_timeout",
        "client_hello_timeout",
        "idle_timeout",
        "handshake_too_large",
        "shutdown",
        "eof",
    ):
        c.count_closed(record(reason))
    c.accept_errors = 2
    hits = limit_hits(c.snapshot())
    assert hits["client_hello_timeout"] == 2 and hits["idle_timeout"] == 1
    assert hits["max_handshake_message"] == 1 and hits["drain_timeout"] == 1
    assert hits["max_open_files"] == 2 and hits["upstream_connect_timeout"] == 0
