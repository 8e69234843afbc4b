"""Offline CLI tools: `tlsgate ca path|export` and `tlsgate policy test`.

Neither needs a running gateway: `ca` reads (creating on first use) the local CA under
the config's state_dir, `policy test` evaluates an endpoint's traffic policy for a
made-up connection and prints what each rule and action would do.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from tlsgate.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, ConfigError


def register(sub, add_config_flag, load, report_config_error) -> None:
    ca = sub.add_parser("ca", help="the local CA that issues certificates for terminated endpoints")
    ca_sub = ca.add_subparsers(dest="ca_command", metavar="SUBCOMMAND", required=True)
    for name, text in (("path", "print the CA certificate's path"), ("export", "print the CA certificate (PEM)")):
        cmd = ca_sub.add_parser(name, help=text)
        add_config_flag(cmd)
        cmd.set_defaults(func=lambda args: cmd_ca(args, load, report_config_error))

    policy = sub.add_parser("policy", help="traffic policy tools")
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    test = policy_sub.add_parser(
        "test",
        help="show which rules match and what the actions would do, without traffic",
        description="Example: tlsgate policy test -c tlsgate.toml --endpoint app --client-ip 1.2.3.4 --sni app.example.com",
    )
    add_config_flag(test)
    test.add_argument("--endpoint", required=True, help="endpoint name")
    test.add_argument("--client-ip", required=True, help="client IP address (IPv4 or IPv6)")
    test.add_argument("--client-port", type=int, default=50000)
    test.add_argument("--sni", help="server name the client sends (default: the endpoint's host)")
    test.add_argument("--tls-version", default="1.3", choices=("1.2", "1.3"))
    test.add_argument("--json", action="store_true", help="print the decision as JSON")
    test.set_defaults(func=lambda args: cmd_policy_test(args, load, report_config_error))


def cmd_ca(args, load, report_config_error) -> int:
    from tlsgate.tls.localca import LocalCA

    try:
        config = load(args.config)
    except ConfigError as e:
        return report_config_error(e)
    ca = LocalCA(config.gateway.state_dir)
    try:
        if args.ca_command == "path":
            print(ca.ca_cert_path())
        else:
            sys.stdout.write(ca.ca_cert_pem().decode("ascii"))
    except OSError as e:
        print(f"tlsgate: cannot use the local CA in {ca.directory}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_policy_test(args, load, report_config_error) -> int:
    import ipaddress

    from tlsgate.policy.engine import evaluate
    from tlsgate.policy.ratelimit import SlidingWindowLimiter
    from tlsgate.policy.vars import build_conn_vars, build_endpoint_vars

    try:
        config = load(args.config)
    except ConfigError as e:
        return report_config_error(e)
    endpoint = next((ep for ep in config.endpoints if ep.name == args.endpoint), None)
    if endpoint is None:
        names = ", ".join(ep.name for ep in config.endpoints) or "none"
        print(f"tlsgate: no endpoint named {args.endpoint!r} (endpoints: {names})", file=sys.stderr)
        return EXIT_CONFIG
    try:
        client_ip = str(ipaddress.ip_address(args.client_ip))
    except ValueError:
        print(f"tlsgate: --client-ip {args.client_ip!r} is not an IP address", file=sys.stderr)
        return EXIT_CONFIG
    listener = config.gateway.listen[0]
    port = endpoint.port or listener.port
    sni = (args.sni or endpoint.host.replace("*", "test")).lower()
    conn_vars = build_conn_vars(
        client_ip=client_ip,
        client_port=args.client_port,
        server_ip=listener.host,
        server_port=port,
        start=datetime.now(UTC),
        endpoint=build_endpoint_vars(id=f"ep_{endpoint.name}", name=endpoint.name, url=endpoint.url, host=endpoint.host, port=port),
        sni=sni,
        tls_version=args.tls_version,
    )
    if endpoint.traffic_policy is None:
        decision = None
    else:
        decision = evaluate(endpoint.traffic_policy, conn_vars, datetime.now(UTC), SlidingWindowLimiter())
    if args.json:
        print(json.dumps(_decision_dict(decision), indent=2, default=str))
        return EXIT_OK
    print(f"endpoint {endpoint.name} ({endpoint.url}), client {client_ip}, SNI {sni}")
    if decision is None:
        print("no traffic policy: the connection is passed through to", endpoint.upstream.address)
        return EXIT_OK
    print("matched rules:", ", ".join(decision.matched_rules) or "none")
    for line in decision.trace:
        print("  " + line)
    print("outcome:", _outcome(decision, endpoint))
    for entry in decision.logs:
        print("log:", json.dumps(entry, default=str))
    return EXIT_OK


def _outcome(decision, endpoint) -> str:
    if decision.outcome == "close":
        detail = f": {decision.error}" if decision.error else ""
        return f"closed ({decision.close_reason}){detail}"
    if decision.outcome == "forward":
        return f"forwarded to {decision.forward.url} (on_error {decision.forward.on_error})"
    if decision.outcome == "terminate_tls":
        t = decision.terminate_tls
        return (
            f"TLS terminated at the gateway (TLS {t.min_version}-{t.max_version}); "
            "rules after it run once the handshake is done"
        )
    return f"passed to the upstream {endpoint.upstream.address}"


def _decision_dict(decision) -> dict:
    if decision is None:
        return {"outcome": "continue", "matched_rules": [], "trace": []}
    return {
        "outcome": decision.outcome,
        "close_reason": decision.close_reason,
        "forward": decision.forward and {"url": decision.forward.url, "on_error": decision.forward.on_error},
        "matched_rules": list(decision.matched_rules),
        "trace": list(decision.trace),
        "logs": list(decision.logs),
        "ip_policy_decision": decision.ip_policy_decision,
        "vars": decision.vars,
        "error": decision.error,
    }


def parse_bool_flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
