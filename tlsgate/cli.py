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

from tlsgate import __version__, cli_tools
from tlsgate.cli_tools import parse_bool_flag
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
    tls.add_argument(
        "upstream",
        help="upstream address: PORT, HOST:PORT, [V6]:PORT, or tls://HOST:PORT to re-encrypt "
        "after terminating at the gateway",
    )
    tls.add_argument("--url", required=True, help="endpoint URL, e.g. tls://app.example.com or tls://*.example.com")
    tls.add_argument("--listen", help="listening address (default: the embedded default's)")
    tls.add_argument("--name", default="tls", help="endpoint name (default: tls)")
    tls.add_argument("--upstream-proxy-protocol", type=int, choices=(1, 2), help="send a PROXY header")
    tls.add_argument("--pooling-enabled", action="store_true", help="allow pooling with other endpoints")
    tls.add_argument("--traffic-policy-file", help="traffic policy (YAML, JSON or TOML), as ngrok's")
    tls.add_argument(
        "--terminate-at",
        choices=("upstream", "gateway"),
        default="upstream",
        help="where TLS ends: at the upstream (passthrough, default) or at the gateway",
    )
    tls.add_argument("--crt", help="certificate chain (PEM file) for --terminate-at gateway")
    tls.add_argument("--key", help="private key (PEM file) for --terminate-at gateway")
    tls.add_argument("--mutual-tls-cas", help="CA file that client certificates must chain to")
    tls.add_argument(
        "--upstream-tls-verify",
        type=parse_bool_flag,
        default=True,
        metavar="true|false",
        help="verify a tls:// upstream's certificate (default true)",
    )
    tls.add_argument("--upstream-tls-verify-cas", help="CA file for a tls:// upstream")
    tls.add_argument("--events", help='events file ("-" for stdout)')
    tls.add_argument("--workers", type=int, help="worker processes (default: number of CPUs)")
    tls.set_defaults(func=cmd_tls)

    cli_tools.register(sub, _add_config_flag, _load, _report_config_error)

    from tlsgate.cli_control import register as register_control_commands

    register_control_commands(sub)

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
    if args.upstream.lower().startswith("tls://"):
        upstream["tls_verify"] = args.upstream_tls_verify
        if args.upstream_tls_verify_cas:
            upstream["tls_verify_cas"] = args.upstream_tls_verify_cas
    endpoint: dict = {
        "name": args.name,
        "url": args.url,
        "upstream": upstream,
        "pooling_enabled": args.pooling_enabled,
    }
    terminate = _quick_terminate_action(args)
    if terminate is not None and args.traffic_policy_file:
        print(
            "tlsgate: --terminate-at gateway and --traffic-policy-file: put the terminate-tls "
            "action in the policy file instead",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if terminate is not None:
        endpoint["traffic_policy"] = {"on_tcp_connect": [{"actions": [terminate]}]}
    elif args.traffic_policy_file:
        endpoint["traffic_policy_file"] = args.traffic_policy_file
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
    target = f"tls://{ep.upstream.address}" if ep.upstream.tls else str(ep.upstream.address)
    where = "gateway" if ep.traffic_policy is not None and args.terminate_at == "gateway" else "upstream"
    print(f"Forwarding {ep.url} -> {target} (listening on {listen}; TLS ends at the {where})", flush=True)
    return _run(config, None)


def _quick_terminate_action(args) -> dict | None:
    """ngrok's ``--terminate-at gateway [--crt --key] [--mutual-tls-cas]`` as a terminate-tls action."""
    if args.terminate_at != "gateway":
        for flag in ("crt", "key", "mutual_tls_cas"):
            if getattr(args, flag):
                print(f"tlsgate: --{flag.replace('_', '-')} needs --terminate-at gateway", file=sys.stderr)
                raise SystemExit(EXIT_CONFIG)
        return None
    config: dict = {}
    if args.crt or args.key:
        config["server_certificate"] = str(Path(args.crt or "").absolute()) if args.crt else ""
        config["server_private_key"] = str(Path(args.key or "").absolute()) if args.key else ""
    if args.mutual_tls_cas:
        config["mutual_tls_certificate_authorities"] = [str(Path(args.mutual_tls_cas).absolute())]
    action: dict = {"type": "terminate-tls"}
    if config:
        action["config"] = config
    return action


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
