"""Command line for a running gateway: status, endpoints, conns, limits, events, reload, stop, dashboard.

Registered into the main parser by tlsgate/cli.py (`register`). Every command
finds the control socket from ``--socket PATH``, else from the config's
``gateway.control_socket`` (``-c FILE``, else the embedded default config),
talks to it with the blocking client (tlsgate/control/client.py) and prints a
table, or with ``--json`` one JSON document on stdout and nothing else
(``events -f --json``: one JSON document per line). No gateway at the socket:
one line on stderr and exit status 1. A request the gateway refuses because a
config or endpoint is invalid: its problems, one per line, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tlsgate.control.client import ControlClient, ControlError, GatewayNotRunning
from tlsgate.control.display import describe_event, human_age, human_bytes, table
from tlsgate.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("gateway")
    where.add_argument(
        "-c",
        "--config",
        help="config file whose control_socket to use (default: the embedded default's)",
    )
    where.add_argument("--socket", help="control socket path (overrides -c)")
    common.add_argument(
        "--json", action="store_true", help="print one JSON document instead of a table"
    )

    p = sub.add_parser(
        "status", parents=[common], help="gateway status: workers, generation, totals"
    )
    p.set_defaults(func=cmd_status)

    endpoints = sub.add_parser(
        "endpoints", help="list and change endpoints (API endpoints are persisted)"
    )
    ep_sub = endpoints.add_subparsers(dest="endpoints_command", metavar="SUBCOMMAND", required=True)
    p = ep_sub.add_parser("list", parents=[common], help="every endpoint with live counters")
    p.set_defaults(func=cmd_endpoints_list)
    p = ep_sub.add_parser("add", parents=[common], help="add an endpoint through the API")
    p.add_argument("--name", required=True)
    _endpoint_flags(p, required=True)
    p.set_defaults(func=cmd_endpoints_add)
    p = ep_sub.add_parser(
        "update", parents=[common], help="change an API endpoint (only the flags given)"
    )
    p.add_argument("name")
    _endpoint_flags(p, required=False)
    p.set_defaults(func=cmd_endpoints_update)
    p = ep_sub.add_parser("remove", parents=[common], help="remove an API endpoint")
    p.add_argument("name")
    p.set_defaults(func=cmd_endpoints_remove)

    conns = sub.add_parser("conns", help="open connections")
    conns_sub = conns.add_subparsers(dest="conns_command", metavar="SUBCOMMAND", required=True)
    p = conns_sub.add_parser("list", parents=[common], help="every open connection of every worker")
    p.set_defaults(func=cmd_conns_list)
    p = conns_sub.add_parser(
        "kill", parents=[common], help="close one connection (close_reason killed)"
    )
    p.add_argument("id", help="connection id, as `conns list` shows it")
    p.set_defaults(func=cmd_conns_kill)

    p = sub.add_parser(
        "limits", parents=[common], help="configured limits and how often each was hit"
    )
    p.set_defaults(func=cmd_limits)

    p = sub.add_parser(
        "events", parents=[common], help="recent events (connection closes, gateway log)"
    )
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new events until interrupted"
    )
    p.add_argument(
        "-n", "--lines", type=int, default=100, help="how many recent events (default 100)"
    )
    p.set_defaults(func=cmd_events)

    p = sub.add_parser(
        "reload", parents=[common], help="re-read the config file; prints its problems if invalid"
    )
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("stop", parents=[common], help="stop the gateway (graceful unless --fast)")
    p.add_argument(
        "--fast", action="store_true", help="close open connections now instead of draining"
    )
    p.add_argument("--wait", action="store_true", help="return only once the gateway has exited")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("dashboard", help="live terminal dashboard (Textual)")
    p.add_argument("-c", "--config", help="config file whose control_socket to use")
    p.add_argument("--socket", help="control socket path (overrides -c)")
    p.set_defaults(func=cmd_dashboard)


def _endpoint_flags(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--url", required=required, help="tls://HOST[:PORT] or tls://*.DOMAIN")
    p.add_argument(
        "--upstream", required=required, help="upstream address: PORT, HOST:PORT or [V6]:PORT"
    )
    p.add_argument(
        "--proxy-protocol", type=int, choices=(0, 1, 2), help="PROXY header version (0 = none)"
    )
    p.add_argument("--pooling-enabled", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--traffic-policy-file", help="traffic policy (YAML, JSON or TOML), sent inline")
    p.add_argument("--description")
    p.add_argument("--metadata")


# -- plumbing ----------------------------------------------------------------------------


class _Exit(Exception):
    def __init__(self, code: int):
        self.code = code


def socket_path(args) -> str:
    if getattr(args, "socket", None):
        return args.socket
    from tlsgate.config.load import load_config

    try:
        config, _ = load_config(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        print(
            "tlsgate: cannot find the control socket: the config has errors (or use --socket)",
            file=sys.stderr,
        )
        raise _Exit(EXIT_CONFIG) from e
    return str(config.gateway.control_socket)


def _run(args, body) -> int:
    try:
        path = socket_path(args)
        with ControlClient(path) as client:
            return body(client)
    except _Exit as e:
        return e.code
    except GatewayNotRunning as e:
        print(f"tlsgate: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except ControlError as e:
        print(f"tlsgate: {e.message}", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem.get('text') or problem}", file=sys.stderr)
        return EXIT_CONFIG if e.code == "invalid" else EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # `tlsgate events -f | head`: the reader is gone; leave quietly (as Python's docs advise).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _emit(args, data: Any, human) -> int:
    if args.json:
        json.dump(data, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        human(data)
    return EXIT_OK


# -- commands ----------------------------------------------------------------------------


def cmd_status(args) -> int:
    def human(s: dict) -> None:
        t = s["totals"]
        print(f"tlsgate {s['version']}  pid {s['pid']}  {s['state']}  up {human_age(s['uptime'])}")
        print(
            f"config {s['config_file']}  generation {s['generation']}  endpoints {s['endpoints']}"
        )
        print(f"listen {', '.join(s['listen'])}  metrics {s['metrics'] or 'off'}")
        print(
            f"connections {t['connections_active']} open, {t['connections_total']} total  "
            f"bytes in {human_bytes(t['bytes_in'])} out {human_bytes(t['bytes_out'])}  "
            f"worker restarts {t['worker_restarts']}"
        )
        print()
        rows = [
            [
                w["pid"],
                w["slot"],
                w["generation"],
                w["state"],
                human_age(w["age"]),
                w["connections"],
                w["restarts"],
            ]
            for w in s["workers"]
        ]
        print(table(["pid", "slot", "gen", "state", "age", "conns", "restarts"], rows))

    return _run(args, lambda c: _emit(args, c.request("status"), human))


def cmd_endpoints_list(args) -> int:
    def human(result: dict) -> None:
        rows = []
        for e in result["endpoints"]:
            error = e.get("last_error")
            rows.append([
                e["name"], e["url"], e["upstream"]["url"], e["termination"], e["pool_size"],
                e["active"], e["total"], e["source"], error["reason"] if error else "",
            ])  # fmt: skip
        print(
            table(
                [
                    "name",
                    "url",
                    "upstream",
                    "termination",
                    "pool",
                    "active",
                    "total",
                    "source",
                    "last error",
                ],
                rows,
            )
        )

    return _run(args, lambda c: _emit(args, c.request("endpoints.list"), human))


def _endpoint_entry(args) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if getattr(args, "name", None) and args.func is cmd_endpoints_add:
        entry["name"] = args.name
    if args.url is not None:
        entry["url"] = args.url
    upstream: dict[str, Any] = {}
    if args.upstream is not None:
        upstream["url"] = args.upstream
    if args.proxy_protocol is not None:
        upstream["proxy_protocol"] = args.proxy_protocol
    if upstream:
        entry["upstream"] = upstream
    if args.pooling_enabled is not None:
        entry["pooling_enabled"] = args.pooling_enabled
    for key in ("description", "metadata"):
        if getattr(args, key) is not None:
            entry[key] = getattr(args, key)
    if args.traffic_policy_file:
        entry["traffic_policy"] = read_policy_document(args.traffic_policy_file)
    return entry


def read_policy_document(path: str) -> dict:
    """The policy file's document, sent inline: the gateway validates it like a config file's."""
    import tomllib

    import yaml

    suffix = Path(path).suffix.lower()
    try:
        text = Path(path).read_text("utf-8")
        if suffix in (".yml", ".yaml"):
            doc = yaml.safe_load(text)
        elif suffix == ".json":
            doc = json.loads(text)
        elif suffix == ".toml":
            doc = tomllib.loads(text)
        else:
            raise ValueError("a policy file must end in .yml, .yaml, .json or .toml")
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"tlsgate: {path}: {e}", file=sys.stderr)
        raise _Exit(EXIT_CONFIG) from e
    return doc if doc is not None else {}


def _changed(args, what: str):
    def human(result: dict) -> None:
        ready = "" if result.get("ready") else " (new workers not ready yet)"
        print(
            f"endpoint {result['endpoint']} {result['action']}; generation {result['generation']}{ready}"
        )

    return human


def cmd_endpoints_add(args) -> int:
    return _run(
        args,
        lambda c: _emit(
            args,
            c.request("endpoints.add", endpoint=_endpoint_entry(args)),
            _changed(args, "added"),
        ),
    )


def cmd_endpoints_update(args) -> int:
    def body(c: ControlClient) -> int:
        changes = _endpoint_entry(args)
        return _emit(
            args,
            c.request("endpoints.update", name=args.name, endpoint=changes),
            _changed(args, "updated"),
        )

    return _run(args, body)


def cmd_endpoints_remove(args) -> int:
    return _run(
        args,
        lambda c: _emit(
            args, c.request("endpoints.remove", name=args.name), _changed(args, "removed")
        ),
    )


def cmd_conns_list(args) -> int:
    def human(result: dict) -> None:
        now = time.time()
        rows = [
            [
                r["id"], r["endpoint"], r["client"], r["sni"], r["termination"], r["upstream"],
                human_bytes(r["bytes_in"]), human_bytes(r["bytes_out"]), human_age(now - r["start_ts"]),
                r["state"], r["worker"],
            ]
            for r in result["connections"]
        ]  # fmt: skip
        headers = [
            "id",
            "endpoint",
            "client",
            "sni",
            "termination",
            "upstream",
            "in",
            "out",
            "age",
            "state",
            "worker",
        ]
        print(table(headers, rows))
        if result.get("missing_workers"):
            print(f"(no answer from workers {result['missing_workers']})", file=sys.stderr)

    return _run(args, lambda c: _emit(args, c.request("connections.list"), human))


def cmd_conns_kill(args) -> int:
    def human(result: dict) -> None:
        print(f"killed {result['killed']}")

    return _run(args, lambda c: _emit(args, c.request("connections.kill", id=args.id), human))


def cmd_limits(args) -> int:
    def human(result: dict) -> None:
        rows = [[r["name"], r["value"], r["hits"], r["description"]] for r in result["limits"]]
        print(table(["limit", "value", "hits", "hit when"], rows))

    return _run(args, lambda c: _emit(args, c.request("limits"), human))


def cmd_events(args) -> int:
    def body(c: ControlClient) -> int:
        events = c.subscribe(backlog=args.lines, follow=args.follow)
        if args.json and not args.follow:
            return _emit(args, list(events), None)
        for event in events:
            print(
                json.dumps(event, sort_keys=True) if args.json else describe_event(event),
                flush=True,
            )
        return EXIT_OK

    return _run(args, body)


def cmd_reload(args) -> int:
    def human(result: dict) -> None:
        for warning in result.get("warnings", ()):
            print(warning.get("text"), file=sys.stderr)
        ready = "" if result.get("ready") else " (new workers not ready yet)"
        print(f"reloaded: generation {result['generation']}{ready}")

    return _run(args, lambda c: _emit(args, c.request("reload"), human))


def cmd_stop(args) -> int:
    def body(c: ControlClient) -> int:
        result = c.request("stop", fast=args.fast)
        if args.wait:
            c.close()
            while True:
                try:
                    with ControlClient(c.path, timeout=2.0):
                        pass
                except GatewayNotRunning:
                    break
                time.sleep(0.1)
        return _emit(
            args,
            result,
            lambda r: print(f"stopping ({r['stopping']})" + (": stopped" if args.wait else "")),
        )

    return _run(args, body)


def cmd_dashboard(args) -> int:
    try:
        path = socket_path(args)
    except _Exit as e:
        return e.code
    from tui.app import run_dashboard

    return run_dashboard(path)
