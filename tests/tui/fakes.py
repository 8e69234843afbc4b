"""A gateway stand-in for the dashboard's tests: canned answers, recorded commands.

`FakeSource` implements the `tui.client.GatewaySource` interface the poller
uses; the data is fixed (times relative to `NOW`) so snapshots are stable.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

from tlsgate.control.client import ControlError, GatewayNotRunning
from tui.model import RateHistory

NOW = 1_800_000_000.0
"""The fixed clock of the tests (2027-01-15T08:00:00Z)."""


def fixed_clock() -> float:
    return NOW


def status(connections: int = 3) -> dict:
    return {
        "version": "0.1.0", "pid": 4242, "state": "running", "started_at": NOW - 3725, "uptime": 3725.0,
        "config_file": "/etc/tlsgate/tlsgate.toml", "generation": 3, "control_socket": "/run/tlsgate/control.sock",
        "listen": ["0.0.0.0:443"], "metrics": "127.0.0.1:9300", "endpoints": 3,
        "workers": [
            {"pid": 4301, "slot": 0, "generation": 3, "state": "serving", "age": 610.0, "connections": 2, "restarts": 0},
            {"pid": 4302, "slot": 1, "generation": 3, "state": "serving", "age": 610.0, "connections": 1, "restarts": 1},
            {"pid": 4250, "slot": 0, "generation": 2, "state": "draining", "age": 1900.0, "connections": 1, "restarts": 0},
        ],
        "totals": {"connections_active": connections, "connections_total": 18234, "connections_closed": 18230,
                   "bytes_in": 7_340_032, "bytes_out": 91_226_112, "worker_restarts": 1, "reloads": {"ok": 2, "failed": 1}},
    }  # fmt: skip


ENDPOINTS = [
    {"name": "app", "url": "tls://app.example.com", "upstream": {"url": "10.0.0.5:443", "proxy_protocol": 2},
     "termination": "passthrough", "pool_size": 1, "active": 2, "total": 15000, "source": "file", "last_error": None},
    {"name": "shop-a", "url": "tls://*.shop.example.com", "upstream": {"url": "10.0.0.6:443", "proxy_protocol": 0},
     "termination": "gateway", "pool_size": 2, "active": 1, "total": 3200, "source": "file",
     "last_error": {"ts": NOW - 75, "reason": "upstream_connect_timeout", "detail": "connect 10.0.0.6:443: timed out"}},
    {"name": "shop-b", "url": "tls://*.shop.example.com", "upstream": {"url": "10.0.0.7:443", "proxy_protocol": 0},
     "termination": "gateway", "pool_size": 2, "active": 0, "total": 34, "source": "api", "last_error": None},
]  # fmt: skip

CONNECTIONS = [
    {"id": "10cd.1", "endpoint": "app", "url": "tls://app.example.com", "client": "203.0.113.7:50412",
     "sni": "app.example.com", "termination": "upstream", "upstream": "10.0.0.5:443", "bytes_in": 517,
     "bytes_out": 1834, "start_ts": NOW - 42, "state": "relaying", "worker": 4301},
    {"id": "10cd.2", "endpoint": "shop-a", "url": "tls://*.shop.example.com", "client": "198.51.100.20:61000",
     "sni": "eu.shop.example.com", "termination": "gateway", "upstream": "10.0.0.6:443", "bytes_in": 1_048_576,
     "bytes_out": 52_428_800, "start_ts": NOW - 3600, "state": "relaying", "worker": 4301},
    {"id": "10ce.7", "endpoint": None, "url": None, "client": "192.0.2.99:40000", "sni": "", "termination": "upstream",
     "upstream": None, "bytes_in": 0, "bytes_out": 0, "start_ts": NOW - 1, "state": "hello", "worker": 4302},
]  # fmt: skip

LIMITS = [
    {"name": "client_hello_timeout", "value": "3s", "hits": 12, "description": "ClientHello not complete in time"},
    {"name": "handshake_timeout", "value": "1m", "hits": 0, "description": "TLS handshake (termination) not complete in time"},
    {"name": "idle_timeout", "value": "client 5m / server 5m", "hits": 40, "description": "both directions idle for their timeouts"},
    {"name": "upstream_connect_timeout", "value": "10s", "hits": 3, "description": "upstream did not accept in time"},
    {"name": "max_handshake_message", "value": "64KB", "hits": 1, "description": "ClientHello larger than the limit"},
    {"name": "drain_timeout", "value": "30s", "hits": 0, "description": "connections closed at a stop's or reload's deadline"},
]  # fmt: skip


def closed_event(
    n: int, endpoint: str | None = "app", reason: str = "eof", sni: str = "app.example.com"
) -> dict:
    return {
        "event_id": f"ev_{n:026x}", "event_type": "tcp_connection_closed.v0",
        "event_timestamp": f"2027-01-15T07:59:{n % 60:02d}.000000Z",
        "object": {
            "conn": {"bytes_in": 517 * n, "bytes_out": 1834 * n, "client_ip": "203.0.113.7", "client_port": 50000 + n,
                     "server_ip": "10.0.0.1", "server_port": 443, "server_name": sni,
                     "start_ts": "2027-01-15T07:58:00.000000Z", "end_ts": f"2027-01-15T07:59:{n % 60:02d}.000000Z"},
            "ja4_fingerprint": "t13d1516h2_8daaf6152771_e5627efa2ab1",
            "endpoint": {"name": endpoint, "url": f"tls://{sni}"} if endpoint else None,
            "upstream": {"addr": "10.0.0.5:443"}, "termination": "upstream", "close_reason": reason, "id": f"10cd.{n}",
        },
    }  # fmt: skip


def log_event(n: int, kind: str, message: str, level: str = "info") -> dict:
    return {
        "event_id": f"ev_log{n:023x}",
        "event_type": "gateway_log.v0",
        "event_timestamp": f"2027-01-15T07:59:{n % 60:02d}.500000Z",
        "object": {"kind": kind, "level": level, "message": message},
    }


EVENTS = [
    closed_event(1),
    closed_event(2, "shop-a", "upstream_connect_timeout", "eu.shop.example.com"),
    log_event(
        3,
        "worker_exited",
        "worker 4290 (generation 3, slot 1) was killed by signal 9 (SIGKILL) after 600.1s",
        "error",
    ),
    log_event(4, "worker_started", "worker 4302 started in slot 1 (generation 3)"),
    closed_event(5, None, "unknown_sni", "nope.example.net"),
    log_event(6, "reloaded", "reloaded /etc/tlsgate/tlsgate.toml: generation 3 started"),
    closed_event(7),
]


def rates() -> RateHistory:
    history = RateHistory()
    history.connections.extend(
        [12, 15, 14, 30, 28, 22, 18, 19, 25, 40, 33, 20, 16, 15, 14, 17, 21, 23, 19, 18]
    )
    history.bytes.extend(
        [v * 50_000 for v in [3, 4, 4, 9, 8, 6, 5, 5, 7, 12, 10, 6, 5, 4, 4, 5, 6, 7, 6, 5]]
    )
    return history


def usage(pids: list[int]) -> dict[int, tuple[float, int]]:
    return {pid: (12.5 if pid == 4301 else 3.0, 48_300_000) for pid in pids}


class FakeSource:
    """Answers like a gateway would; `fail_connect` makes it look stopped."""

    def __init__(self, connections: list[dict] | None = None, events: list[dict] | None = None):
        self.path = "/run/tlsgate/control.sock"
        self.connections = copy.deepcopy(CONNECTIONS if connections is None else connections)
        self.backlog = copy.deepcopy(EVENTS if events is None else events)
        self.requests: list[tuple[str, dict]] = []
        self.reload_error: ControlError | None = None
        self.fail_connect = False
        self.connects = 0
        self.on_event: Callable[[dict], None] | None = None

    async def connect(self) -> None:
        await asyncio.sleep(0)
        if self.fail_connect:
            raise GatewayNotRunning(self.path, "No such file or directory")
        self.connects += 1

    async def close(self) -> None:
        await asyncio.sleep(0)

    async def subscribe(self, backlog: int, on_event: Callable[[dict], None]) -> list[dict]:
        self.on_event = on_event
        return list(self.backlog)

    async def request(self, request_type: str, **args: Any) -> Any:
        await asyncio.sleep(0)
        if self.fail_connect:
            raise GatewayNotRunning(self.path, "the gateway closed the connection")
        self.requests.append((request_type, args))
        if request_type == "status":
            return status(len(self.connections))
        if request_type == "endpoints.list":
            return {"endpoints": copy.deepcopy(ENDPOINTS)}
        if request_type == "connections.list":
            return {"connections": copy.deepcopy(self.connections), "missing_workers": []}
        if request_type == "limits":
            return {"limits": copy.deepcopy(LIMITS)}
        if request_type == "connections.kill":
            before = len(self.connections)
            self.connections = [c for c in self.connections if c["id"] != args["id"]]
            if len(self.connections) == before:
                raise ControlError("not_found", f"no open connection {args['id']}")
            return {"killed": args["id"], "worker": 4301}
        if request_type == "reload":
            if self.reload_error is not None:
                raise self.reload_error
            return {"generation": 4, "ready": True, "warnings": []}
        raise ControlError("unknown_request", request_type)
