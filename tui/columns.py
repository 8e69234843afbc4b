"""The columns of the dashboard's tables: width, and which go first on a narrow screen."""

from __future__ import annotations

from tui.widgets.table import Column

CONNECTION_COLUMNS = [
    Column("id", "ID", 9),
    Column("endpoint", "ENDPOINT", 10, priority=1),
    Column("client", "CLIENT", 18, priority=2),
    Column("sni", "SNI", 12, flex=True),
    Column("bytes_in", "IN", 7, priority=1, right=True),
    Column("bytes_out", "OUT", 7, priority=1, right=True),
    Column("age", "AGE", 6, priority=1, right=True),
    Column("state", "STATE", 8, priority=3),
    Column("termination", "TERM", 11, priority=5),
    Column("upstream", "UPSTREAM", 21, priority=4),
    Column("worker", "WORKER", 7, priority=4, right=True),
]
SORTABLE = ["age", "endpoint", "client", "sni", "bytes_in", "bytes_out", "state", "id", "worker"]
ENDPOINT_COLUMNS = [
    Column("name", "NAME", 12),
    Column("url", "URL", 26),
    Column("termination", "TERM", 11, priority=4),
    Column("upstream", "UPSTREAM", 21, priority=2),
    Column("pool", "POOL", 4, priority=3, right=True),
    Column("active", "ACTIVE", 6, right=True),
    Column("total", "TOTAL", 8, priority=1, right=True),
    Column("source", "SRC", 4, priority=5),
    Column("error", "LAST ERROR", 24, priority=2, flex=True),
]
WORKER_COLUMNS = [
    Column("pid", "PID", 8),
    Column("generation", "GEN", 4, right=True),
    Column("state", "STATE", 10),
    Column("connections", "CONNS", 7, right=True),
    Column("cpu", "CPU%", 6, right=True),
    Column("rss", "RSS", 8, right=True),
    Column("age", "AGE", 7, priority=1, right=True),
    Column("restarts", "RESTARTS", 8, right=True),
    Column("slot", "SLOT", 4, priority=2, right=True),
]
LIMIT_COLUMNS = [
    Column("name", "LIMIT", 24),
    Column("value", "VALUE", 22),
    Column("hits", "HITS", 8, right=True),
    Column("description", "HIT WHEN", 20, priority=1, flex=True),
]
EVENT_COLUMNS = [
    Column("time", "UTC", 8),
    Column("type", "TYPE", 7),
    Column("endpoint", "ENDPOINT", 12, priority=1),
    Column("summary", "WHAT", 30, flex=True),
]
TABS = ["connections", "endpoints", "workers", "limits", "events"]
