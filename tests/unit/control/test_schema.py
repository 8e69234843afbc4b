from __future__ import annotations

from tlsgate.control.schema import CONNECTION_FIELDS, REQUEST_TYPES, connection_row, worker_pid_of
from tlsgate.events import ConnectionRecord


def test_connection_ids_name_their_worker():
    assert worker_pid_of("1a2b.17") == 0x1A2B
    for bad in ("1a2b", "zz.1", ".1", "1a2b.x", ""):
        assert worker_pid_of(bad) is None


def test_connection_row_has_every_field_in_order():
    record = ConnectionRecord(
        "ff.1", 100.0, "::1", 5000, "::1", 8443, server_name="a.test", bytes_in=10
    )
    row = connection_row(record, "hello", 255)
    assert tuple(row) == CONNECTION_FIELDS
    assert row["client"] == "[::1]:5000" and row["worker"] == 255 and row["state"] == "hello"
    v4 = ConnectionRecord("ff.2", 1.0, "10.0.0.1", 1, "10.0.0.2", 2)
    assert connection_row(v4, "relaying", 1)["client"] == "10.0.0.1:1"


def test_request_types_are_documented():
    from pathlib import Path

    doc = (Path(__file__).parents[3] / "docs" / "control-protocol.md").read_text()
    for name in REQUEST_TYPES:
        assert f"`{name}`" in doc, name
