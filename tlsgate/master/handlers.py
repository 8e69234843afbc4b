"""Answers to control requests, one method per request type.

Called by the control socket server (tlsgate/master/control.py) through
`RequestHandlers.dispatch`, in the master's thread. A handler answers through
the `ControlConnection` it is given, at once or, when it must wait for the
workers or for a new generation to start, from a callback later on. Raising
`RequestError` sends an error response. The shapes of the results are
documented in docs/control-protocol.md.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from tlsgate import __version__
from tlsgate.config.endpoints import parse_endpoint
from tlsgate.config.fields import format_duration, format_size
from tlsgate.control.counters import limit_hits
from tlsgate.control.endpoint_store import (
    API_SOURCE,
    merge_update,
    problems_to_json,
    read_only_message,
)
from tlsgate.control.protocol import RequestError
from tlsgate.control.schema import worker_pid_of
from tlsgate.errors import Problems
from tlsgate.master.eventlog import BACKLOG
from tlsgate.master.stats import totals_of

if TYPE_CHECKING:
    from tlsgate.master.control import ControlConnection
    from tlsgate.master.plane import ControlPlane

log = logging.getLogger("tlsgate.master.api")


class RequestHandlers:
    def __init__(self, plane: ControlPlane):
        self.plane = plane
        self._table = {
            "status": self.status,
            "endpoints.list": self.endpoints_list,
            "endpoints.add": self.endpoints_add,
            "endpoints.update": self.endpoints_update,
            "endpoints.remove": self.endpoints_remove,
            "connections.list": self.connections_list,
            "connections.kill": self.connections_kill,
            "events.subscribe": self.events_subscribe,
            "limits": self.limits,
            "reload": self.reload,
            "stop": self.stop,
        }

    def dispatch(self, conn: ControlConnection, req: int, request_type: str, args: dict) -> None:
        handler = self._table.get(request_type)
        if handler is None:
            known = ", ".join(sorted(self._table))
            raise RequestError(
                "unknown_request", f"unknown request type {request_type!r}; known: {known}"
            )
        handler(conn, req, args)

    @property
    def arbiter(self):
        return self.plane.arbiter

    # -- status ----------------------------------------------------------------------

    def status(self, conn: ControlConnection, req: int, args: dict) -> None:
        conn.respond(req, self.status_result())

    def status_result(self) -> dict[str, Any]:
        a, plane, stats = self.arbiter, self.plane, self.plane.stats
        now = time.monotonic()
        workers = []
        for slot in a.slots:
            if slot.pid:
                state = "serving" if plane.is_ready(slot.pid) else "starting"
            else:
                state = "respawning"
            workers.append(self._worker(slot, slot.pid, state, now))
        for pid, slot in a.retiring.items():
            workers.append(self._worker(slot, pid, "draining", now))
        totals = totals_of(stats.counters(), stats.active_total())
        totals["worker_restarts"] = a.worker_restarts
        totals["reloads"] = dict(a.reloads)
        gateway = a.config.gateway
        return {
            "version": __version__,
            "pid": a.pid,
            "state": a.stopping or "running",
            "started_at": a.started_at,
            "uptime": time.time() - a.started_at,
            "config_file": a.config.source,
            "generation": a.generation,
            "control_socket": str(gateway.control_socket),
            "listen": [str(address) for address in gateway.listen],
            "metrics": str(a.config.metrics.listen) if plane.metrics else None,
            "endpoints": len(a.config.endpoints),
            "workers": workers,
            "totals": totals,
        }

    def _worker(self, slot, pid: int, state: str, now: float) -> dict[str, Any]:
        return {
            "pid": pid or None,
            "slot": slot.index,
            "generation": slot.generation,
            "state": state,
            "age": round(now - slot.started_at, 3) if pid else None,
            "connections": self.plane.stats.active(pid) if pid else 0,
            "restarts": slot.restarts,
        }

    # -- endpoints -------------------------------------------------------------------

    def endpoints_list(self, conn: ControlConnection, req: int, args: dict) -> None:
        from tlsgate.config.dump import endpoint_to_dict

        a, stats = self.arbiter, self.plane.stats
        counters = stats.counters()
        active = stats.active_by_endpoint()
        api_names = set(a.store.names())
        pool_sizes: dict[str, int] = {}
        for endpoint in a.config.endpoints:
            pool_sizes[endpoint.url] = pool_sizes.get(endpoint.url, 0) + 1
        rows = []
        for endpoint in a.config.endpoints:
            row = endpoint_to_dict(endpoint)
            closed = sum(counters.get("closed", {}).get(endpoint.name, {}).values())
            row.update(
                source="api" if endpoint.name in api_names else "file",
                termination=_termination(endpoint),
                pool_size=pool_sizes[endpoint.url],
                active=active.get(endpoint.name, 0),
                total=closed + active.get(endpoint.name, 0),
                last_error=counters.get("last_error", {}).get(endpoint.name),
            )
            rows.append(row)
        conn.respond(req, {"endpoints": rows})

    def endpoints_add(self, conn: ControlConnection, req: int, args: dict) -> None:
        entry = _endpoint_arg(args)
        name = self._validate(entry)
        a = self.arbiter
        if any(e.name == name for e in a.file_config.endpoints):
            raise RequestError("read_only", read_only_message(name, a.file_config))
        if a.store.get(name) is not None:
            raise RequestError(
                "conflict", f"endpoint '{name}' already exists; use endpoints.update to change it"
            )
        self._apply(conn, req, a.store.with_added(entry), name, "added")

    def endpoints_update(self, conn: ControlConnection, req: int, args: dict) -> None:
        name = _name_arg(args)
        changes = _endpoint_arg(args)
        existing = self._api_entry(name)
        if "name" in changes and changes["name"] != name:
            raise RequestError(
                "bad_request",
                "an endpoint cannot be renamed; remove it and add it under the new name",
            )
        entry = merge_update(existing, changes)
        self._validate(entry)
        self._apply(conn, req, self.arbiter.store.with_replaced(name, entry), name, "updated")

    def endpoints_remove(self, conn: ControlConnection, req: int, args: dict) -> None:
        name = _name_arg(args)
        self._api_entry(name)
        self._apply(conn, req, self.arbiter.store.without(name), name, "removed")

    def _api_entry(self, name: str) -> dict:
        a = self.arbiter
        entry = a.store.get(name)
        if entry is not None:
            return entry
        if any(e.name == name for e in a.file_config.endpoints):
            raise RequestError("read_only", read_only_message(name, a.file_config))
        raise RequestError("not_found", f"no API endpoint named '{name}'")

    def _validate(self, entry: dict) -> str:
        """The endpoint's name; `RequestError` with the config loader's own messages if invalid."""
        a = self.arbiter
        problems = Problems()
        endpoint = parse_endpoint(
            entry,
            API_SOURCE,
            "endpoint",
            problems,
            a.file_config.gateway.listen_ports,
            base_dir=a.store.path.parent,
        )
        if endpoint is None:
            count = len(problems.errors)
            raise RequestError(
                "invalid",
                f"the endpoint has {count} error{'s' if count != 1 else ''}",
                problems_to_json(problems.items),
            )
        return endpoint.name

    def _apply(self, conn: ControlConnection, req: int, store, name: str, what: str) -> None:
        result = self.arbiter.reload(store=store, reread=False)
        if not result.ok:
            raise RequestError(
                "invalid",
                "the change was refused; nothing changed",
                problems_to_json(result.problems),
            )
        log.info(
            "endpoint %s %s through the control API (generation %d)",
            name,
            what,
            result.generation,
            extra={"event_kind": f"endpoint_{what}", "event_fields": {"endpoint": name}},
        )
        generation = result.generation

        def answer(ready: bool) -> None:
            conn.respond(
                req, {"endpoint": name, "action": what, "generation": generation, "ready": ready}
            )

        self.plane.when_ready(generation, answer)

    # -- connections -----------------------------------------------------------------

    def connections_list(self, conn: ControlConnection, req: int, args: dict) -> None:
        def done(results: dict[int, Any], missing: list[int]) -> None:
            rows = []
            for result in results.values():
                if isinstance(result, dict):
                    rows.extend(result.get("connections", ()))
            rows.sort(key=lambda row: row.get("start_ts", 0))
            conn.respond(req, {"connections": rows, "missing_workers": missing})

        self.plane.ask_workers(self.plane.live_pids(), {"type": "connections"}, done)

    def connections_kill(self, conn: ControlConnection, req: int, args: dict) -> None:
        conn_id = args.get("id")
        if not isinstance(conn_id, str) or not conn_id:
            raise RequestError(
                "bad_request", 'connections.kill needs "id", a connection id such as "1a2b.17"'
            )
        pid = worker_pid_of(conn_id)
        if pid is None or pid not in self.plane.live_pids():
            raise RequestError("not_found", f"no open connection {conn_id}")

        def done(results: dict[int, Any], missing: list[int]) -> None:
            result = results.get(pid)
            if isinstance(result, dict) and result.get("found"):
                conn.respond(req, {"killed": conn_id, "worker": pid})
            elif missing:
                conn.fail(req, "unavailable", f"worker {pid} did not answer")
            else:
                conn.fail(req, "not_found", f"no open connection {conn_id}")

        self.plane.ask_workers([pid], {"type": "kill", "id": conn_id}, done)

    # -- events ----------------------------------------------------------------------

    def events_subscribe(self, conn: ControlConnection, req: int, args: dict) -> None:
        backlog = args.get("backlog", 100)
        follow = args.get("follow", False)
        if not isinstance(backlog, int) or isinstance(backlog, bool) or backlog < 0:
            raise RequestError("bad_request", '"backlog" must be a non-negative integer')
        if not isinstance(follow, bool):
            raise RequestError("bad_request", '"follow" must be true or false')
        events = self.plane.events
        conn.respond(req, {"backlog": events.backlog(min(backlog, BACKLOG)), "follow": follow})
        if follow:

            def push(event: dict) -> None:
                conn.push(req, event)

            events.subscribe(push)
            conn.on_close.append(lambda: events.unsubscribe(push))

    # -- limits ----------------------------------------------------------------------

    def limits(self, conn: ControlConnection, req: int, args: dict) -> None:
        from tlsgate.master.plane import open_files_limit
        from tlsgate.worker.connlimits import default_max_connections

        a = self.arbiter
        limits = a.config.limits
        hits = limit_hits(self.plane.stats.counters())
        d = format_duration
        rows = [
            (
                "client_hello_timeout",
                d(limits.client_hello_timeout),
                "ClientHello not complete in time",
            ),
            (
                "handshake_timeout",
                d(limits.handshake_timeout),
                "TLS handshake (termination) not complete in time",
            ),
            (
                "idle_timeout",
                f"client {d(limits.client_idle_timeout)} / server {d(limits.server_idle_timeout)}",
                "both directions idle for their timeouts",
            ),
            (
                "upstream_connect_timeout",
                d(limits.upstream_connect_timeout),
                "upstream did not accept in time",
            ),
            (
                "max_handshake_message",
                format_size(limits.max_handshake_message),
                "ClientHello larger than the limit",
            ),
            (
                "max_certificate_message",
                format_size(limits.max_certificate_message),
                "client certificate message larger than the limit",
            ),
            (
                "drain_timeout",
                d(a.config.gateway.drain_timeout),
                "connections closed at a stop's or reload's deadline",
            ),
            (
                "max_connections",
                str(limits.max_connections or default_max_connections(a.config.gateway.workers)),
                "new connections refused: the gateway's open connections at the limit",
            ),
            (
                "max_connections_per_ip",
                str(limits.max_connections_per_ip or "off"),
                "new connections refused: that client IP's open connections at the limit",
            ),
            (
                "max_open_files",
                str(open_files_limit()),
                "accept() failed for lack of descriptors (connection cap)",
            ),
        ]
        conn.respond(
            req,
            {
                "limits": [
                    {"name": n, "value": v, "hits": hits.get(n, 0), "description": t}
                    for n, v, t in rows
                ]
            },
        )

    # -- reload / stop ---------------------------------------------------------------

    def reload(self, conn: ControlConnection, req: int, args: dict) -> None:
        result = self.arbiter.reload()
        if not result.ok:
            raise RequestError(
                "invalid",
                "reload refused; still serving the previous config",
                problems_to_json(result.problems),
            )
        generation = result.generation
        warnings = problems_to_json(result.problems)

        def answer(ready: bool) -> None:
            conn.respond(req, {"generation": generation, "ready": ready, "warnings": warnings})

        self.plane.when_ready(generation, answer)

    def stop(self, conn: ControlConnection, req: int, args: dict) -> None:
        fast = bool(args.get("fast", False))
        conn.respond(req, {"stopping": "fast" if fast else "graceful"})
        if fast:
            self.arbiter.handle_sigint()
        else:
            self.arbiter.handle_sigterm()


def _termination(endpoint) -> str:
    """``gateway`` when the endpoint's policy has a terminate-tls action, else ``passthrough``."""
    policy = getattr(endpoint, "traffic_policy", None)
    for rule in getattr(policy, "rules", ()):
        for action in getattr(rule, "actions", ()):
            if getattr(action, "type_name", None) == "terminate-tls":
                return "gateway"
    return "passthrough"


def _endpoint_arg(args: dict) -> dict:
    entry = args.get("endpoint")
    if not isinstance(entry, dict):
        raise RequestError(
            "bad_request", '"endpoint" must be an object with the [[endpoints]] fields'
        )
    return entry


def _name_arg(args: dict) -> str:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError("bad_request", '"name" must be the endpoint\'s name')
    return name
