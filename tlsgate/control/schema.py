"""What the control protocol's requests, results and events contain.

Pure data shared by the master (which answers), the worker reporter (which
builds connection rows), the CLI and the dashboard (which read them). The
prose description of every request is docs/control-protocol.md; this module is
the part code relies on: request names, the fields of a connection row, the
gateway log event type.
"""

from __future__ import annotations

from tlsgate.events import ConnectionRecord

REQUEST_TYPES: dict[str, str] = {
    "status": "version, uptime, config, generation, workers, totals",
    "endpoints.list": "every endpoint (file and API) with its live counters",
    "endpoints.add": "add an API endpoint (args: endpoint)",
    "endpoints.update": "replace an API endpoint (args: name, endpoint)",
    "endpoints.remove": "remove an API endpoint (args: name)",
    "connections.list": "every open connection of every worker",
    "connections.kill": "close one connection (args: id); its event says close_reason killed",
    "events.subscribe": "recent events, then (args: follow) a live stream",
    "limits": "configured limits and how often each was hit",
    "reload": "re-read the config file (+ API endpoints); returns the problems if invalid",
    "stop": "stop the gateway (args: fast)",
}
"""Every request type the gateway answers, with a one-line summary."""

GATEWAY_LOG_EVENT = "gateway_log.v0"
"""Event type of the gateway's own log events (worker exits and restarts, reloads, API changes)."""

CONNECTION_FIELDS = (
    "id",
    "endpoint",
    "url",
    "client",
    "sni",
    "termination",
    "upstream",
    "bytes_in",
    "bytes_out",
    "start_ts",
    "state",
    "worker",
)
"""The keys of one ``connections.list`` row, in display order."""


def connection_row(record: ConnectionRecord, state: str, worker: int) -> dict:
    """One ``connections.list`` row for a live connection (built in the worker)."""
    client = (
        f"[{record.client_ip}]:{record.client_port}"
        if ":" in record.client_ip
        else f"{record.client_ip}:{record.client_port}"
    )
    return {
        "id": record.conn_id,
        "endpoint": record.endpoint_name,
        "url": record.endpoint_url,
        "client": client,
        "sni": record.server_name,
        "termination": record.termination,
        "upstream": record.upstream_addr,
        "bytes_in": record.bytes_in,
        "bytes_out": record.bytes_out,
        "start_ts": record.start_ts,
        "state": state,
        "worker": worker,
    }


def worker_pid_of(conn_id: str) -> int | None:
    """The pid of the worker serving a connection: ids are ``<pid in hex>.<counter>``."""
    prefix, dot, counter = conn_id.partition(".")
    if not dot or not counter.isdigit():
        return None
    try:
        return int(prefix, 16)
    except ValueError:
        return None
