"""The master's event log: closed-event rows from workers, expanded only when read."""

from __future__ import annotations

import json

from tlsgate.control.protocol import FrameDecoder, encode_message
from tlsgate.events import ConnectionRecord, build_closed_event, closed_event_row
from tlsgate.master.eventlog import EventLog, gateway_event


def _record(n: int) -> ConnectionRecord:
    record = ConnectionRecord(f"c.{n}", 1_700_000_000.5 + n, "192.0.2.1", 5000 + n, "127.0.0.1", 443)
    record.end_ts = record.start_ts + 0.25
    record.server_name = "app.example.test"
    record.endpoint_name, record.endpoint_url = "app", "tls://app.example.test"
    record.upstream_addr = "127.0.0.1:8080"
    record.close_reason = "eof"
    record.extra["tls"] = {"version": "1.3"}
    return record


def _over_the_channel(row: list) -> list:
    """What the master decodes of a row a worker sent in a ``closed`` message."""
    [message] = FrameDecoder().feed(encode_message({"type": "closed", "rows": [row]}))
    return message["rows"][0]


def test_a_row_read_back_is_the_event_the_worker_would_have_built():
    record = _record(1)
    row = closed_event_row(record)
    log = EventLog()
    log.append_row(_over_the_channel(row))
    [event] = log.backlog(10)
    expected = build_closed_event(record)
    expected["event_id"] = row[0]
    assert event == expected
    assert json.loads(json.dumps(event)) == event
    assert log.backlog(10) == [event]  # the same event (and event id) on every read


def test_backlog_keeps_arrival_order_and_the_newest_entries():
    log = EventLog(capacity=3)
    log.append_row(closed_event_row(_record(1)))
    log.append(gateway_event("reloaded", "info", "reloaded", 1_700_000_001.0))
    log.append_row(closed_event_row(_record(2)))
    log.append_row(closed_event_row(_record(3)))
    backlog = log.backlog(10)
    assert [e["event_type"] for e in backlog] == [
        "gateway_log.v0", "tcp_connection_closed.v0", "tcp_connection_closed.v0",
    ]  # fmt: skip
    assert [e["object"].get("id") for e in backlog[1:]] == ["c.2", "c.3"]
    assert [e["object"]["id"] for e in log.backlog(1)] == ["c.3"]


def test_a_follower_gets_expanded_events_as_rows_arrive():
    log = EventLog()
    seen: list[dict] = []
    log.subscribe(seen.append)
    log.append_row(closed_event_row(_record(1)))
    assert [e["object"]["id"] for e in seen] == ["c.1"]
    assert log.backlog(1) == seen


def test_a_malformed_row_is_dropped_not_kept():
    log = EventLog()
    log.append_row(["ev_x", "not a time"])
    bad = closed_event_row(_record(1))
    bad[-1] = "not a dict"
    log.append_row(bad)
    log.append_row({"not": "a row"})
    assert log.backlog(10) == []
