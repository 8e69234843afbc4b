"""Command line: `tlsgate start | check | config show | tls | version`.

Thin: parse flags, load the config once, hand it to the master. Exit status 0
after a graceful stop, 2 for a config error (every problem listed), 1 for any
other failure to start.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tlsgate import __version__
from tlsgate.config.model import Config
from tlsgate.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, ConfigError, Problem

log = logging.getLogger("tlsgate")


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    return args.func(args)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlsgate", description="Self-hosted TLS endpoint gateway: routes TLS connections by SNI."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    start = sub.add_parser("start", help="run the gateway (the embedded default config without -c)")
    _add_config_flag(start)
    start.set_defaults(func=cmd_start)

    check = sub.add_parser("check", help="validate a config and list every problem")
    _add_config_flag(check)
    check.set_defaults(func=cmd_check)

    config = sub.add_parser("config", help="config tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = config_sub.add_parser("show", help="print the effective config, defaults filled in")
    _add_config_flag(show)
    show.set_defaults(func=cmd_config_show)

    tls = sub.add_parser(
        "tls",
        help="run a gateway with one endpoint and no config file (like `ngrok tls`)",
        description="Example: tlsgate tls 9443 --url tls://app.localhost",
    )
    tls.add_argument("upstream", help="upstream address: PORT, HOST:PORT or [V6]:PORT")
    tls.add_argument("--url", required=True, help="endpoint URL, e.g. tls://app.example.com or tls://*.example.com")
    tls.add_argument("--listen", help="listening address (default: the embedded default's)")
    tls.add_argument("--name", default="tls", help="endpoint name (default: tls)")
    tls.add_argument("--upstream-proxy-protocol", type=int, choices=(1, 2), help="send a PROXY header")
    tls.add_argument("--pooling-enabled", action="store_true", help="allow pooling with other endpoints")
    tls.add_argument("--events", help='events file ("-" for stdout)')
    tls.add_argument("--workers", type=int, help="worker processes (default: number of CPUs)")
    tls.set_defaults(func=cmd_tls)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=lambda args: print(f"tlsgate {__version__}") or EXIT_OK)
    return parser


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="config file (TOML); default: the embedded default config")


def _load(path: str | None) -> Config:
    from tlsgate.config.load import load_config

    config, warnings = load_config(path)
    _print_problems(warnings)
    return config


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def _report_config_error(e: ConfigError) -> int:
    _print_problems(e.problems)
    errors = sum(1 for p in e.problems if not p.warning)
    print(f"tlsgate: {errors} config error{'s' if errors != 1 else ''}; nothing started", file=sys.stderr)
    return EXIT_CONFIG


def cmd_check(args) -> int:
    try:
        config = _load(args.config)
    except ConfigError as e:
        return _report_config_error(e)
    print(f"{config.source}: OK ({len(config.endpoints)} endpoints)")
    return EXIT_OK


def cmd_config_show(args) -> int:
    from tlsgate.config.dump import dump_config

    try:
        config = _load(args.config)
    except ConfigError as e:
        return _report_config_error(e)
    sys.stdout.write(dump_config(config))
    return EXIT_OK


def cmd_start(args) -> int:
    _setup_logging()
    path = args.config
    try:
        config = _load(path)
    except ConfigError as e:
        return _report_config_error(e)
    return _run(config, lambda: _load(path))


def cmd_tls(args) -> int:
    from tlsgate.config.load import load_config, parse_config

    _setup_logging()
    default, _ = load_config(None)
    upstream: dict = {"url": args.upstream}
    if args.upstream_proxy_protocol:
        upstream["proxy_protocol"] = args.upstream_proxy_protocol
    endpoint = {"name": args.name, "url": args.url, "upstream": upstream, "pooling_enabled": args.pooling_enabled}
    gateway = {
        "listen": [args.listen] if args.listen else [str(a) for a in default.gateway.listen],
        "state_dir": str(default.gateway.state_dir),
    }
    if args.workers:
        gateway["workers"] = args.workers
    data = {"gateway": gateway, "endpoints": [endpoint]}
    if args.events:
        data["events"] = {"file": args.events}
    try:
        config, warnings = parse_config(data, "<cli>", Path.cwd())
    except ConfigError as e:
        return _report_config_error(e)
    _print_problems(warnings)
    ep = config.endpoints[0]
    listen = ", ".join(str(a) for a in config.gateway.listen)
    print(f"Forwarding {ep.url} -> {ep.upstream.address} (listening on {listen})", flush=True)
    return _run(config, None)


def _run(config: Config, reload_config) -> int:
    from tlsgate.master.arbiter import Arbiter

    try:
        return Arbiter(config, reload_config).run()
    except OSError as e:
        log.error("cannot start: %s", e)
        return EXIT_FAILURE


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
