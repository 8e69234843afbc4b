"""The events file holds one correct `tcp_connection_closed.v0` per connection."""

from __future__ import annotations

import datetime
import re

import pytest

from tests.support.gateway import greeting

pytestmark = pytest.mark.integration

RFC3339_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_one_event_per_connection_with_ngrok_fields(gateway, upstreams, pki):
    app = upstreams("app")
    gw = gateway({"endpoints": [{"name": "app", "url": "tls://app.example.test", "upstream": {"url": app.address}}]})
    count = 40
    for _ in range(count):
        assert greeting(gw.port, "app.example.test", pki.files.cert) == "hello from app"
    events = gw.wait_events(count)
    assert len(events) == count
    assert len({e["event_id"] for e in events}) == count
    for event in events:
        assert event["event_type"] == "tcp_connection_closed.v0"
        assert re.fullmatch(r"ev_[0-9a-f]{26}", event["event_id"])
        assert RFC3339_US.match(event["event_timestamp"])
        obj = event["object"]
        conn = obj["conn"]
        assert conn["client_ip"] == "127.0.0.1" and conn["server_ip"] == "127.0.0.1"
        assert conn["server_port"] == gw.port and conn["client_port"] > 0
        assert conn["server_name"] == "app.example.test"
        assert conn["bytes_in"] > 200 and conn["bytes_out"] > 200
        start = datetime.datetime.fromisoformat(conn["start_ts"])
        end = datetime.datetime.fromisoformat(conn["end_ts"])
        assert start <= end
        assert obj["endpoint"] == {"name": "app", "url": "tls://app.example.test"}
        assert obj["upstream"] == {"addr": app.address}
        assert obj["termination"] == "upstream"
        assert obj["close_reason"] == "eof"
        assert re.fullmatch(r"t1[23]d\d{4}[a-z0-9]{2}_[0-9a-f]{12}_[0-9a-f]{12}", obj["ja4_fingerprint"])
    stopped = gw.stop()
    assert stopped == 0
    assert len(gw.events()) == count
