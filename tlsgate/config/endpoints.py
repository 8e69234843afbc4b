"""Parsing and cross-checking ``[[endpoints]]`` entries (ngrok agent config v3 field names).

`parse_endpoint` validates one endpoint table and is shared by the config file
loader (`load.py`) and, later, the endpoint API, so both give the same messages.
`check_endpoints` holds the rules that span several endpoints: unique names and
ngrok's pooling rule (endpoints sharing a URL must all set ``pooling_enabled``).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Collection, Sequence
from pathlib import Path

from tlsgate.config.fields import (
    TLS_UPSTREAM_MESSAGE,
    FieldError,
    describe,
    expect_bool,
    expect_str,
    format_endpoint_url,
    parse_endpoint_name,
    parse_endpoint_url,
    parse_proxy_protocol,
    parse_upstream_url,
)
from tlsgate.config.model import EndpointConfig, UpstreamConfig
from tlsgate.config.reader import Context, Table, join_key
from tlsgate.config.termination import absolute_paths, check_terminate_actions, terminate_actions
from tlsgate.errors import Problems

BINDINGS = ("public", "internal")
MAX_DESCRIPTION = 255

_NOT_YET = {
    "agent_tls_termination": (
        "TLS termination at an agent is not available; terminate at the gateway with a "
        'terminate-tls action: traffic_policy = { on_tcp_connect = [{ actions = [{ type = "terminate-tls" }] }] }'
    ),
}
"""ngrok endpoint keys that tlsgate knows but does not implement: say so, not 'unknown'."""



def _description(value: object) -> str:
    text = expect_str(value)
    if len(text) > MAX_DESCRIPTION:
        raise FieldError(f"must be at most {MAX_DESCRIPTION} characters, got {len(text)}")
    return text


def _bindings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise FieldError(f'expected an array such as ["public"], got {describe(value)}')
    if len(value) != 1:
        raise FieldError(f"an endpoint has exactly one binding, got {len(value)}")
    binding = expect_str(value[0])
    if binding not in BINDINGS:
        raise FieldError(
            f'unknown binding {json.dumps(binding)}; tlsgate supports "public" and "internal"'
        )
    return (binding,)


def is_internal_host(host: str) -> bool:
    return host == "internal" or host.endswith(".internal")


def parse_endpoint(
    data: object,
    source: str,
    key_path: str,
    problems: Problems,
    listen_ports: Collection[int] | None,
    base_dir: Path | None = None,
) -> EndpointConfig | None:
    """Validate one endpoint table; ``None`` if it has errors (all recorded in ``problems``).

    ``listen_ports`` are the ports of the gateway's listeners; a public endpoint URL
    with a port must name one of them. ``None`` skips that check (used when the
    listen addresses themselves are broken, to avoid follow-on noise).
    """
    if not isinstance(data, dict):
        problems.error(source, key_path, f"expected a table, got {describe(data)}")
        return None
    errors_before = len(problems.errors)
    base_dir = base_dir or Path.cwd()
    table = Table(data, key_path, Context(source, problems, base_dir))

    name = table.require("name", parse_endpoint_name)
    url = table.require("url", parse_endpoint_url)
    description = table.get("description", _description, "")
    metadata = table.get("metadata", expect_str, "")
    bindings = table.get("bindings", _bindings, None)
    pooling_enabled = table.get("pooling_enabled", expect_bool, False)
    upstream_table = table.table("upstream", required=True, hint=_upstream_hint(data))
    upstream = _parse_upstream(upstream_table) if upstream_table else None
    policy, policy_json, policy_file = _parse_traffic_policy(table, data)
    table.finish(_NOT_YET)
    if upstream is not None and upstream.tls and not terminate_actions(policy):
        # A policy with errors reported its own problems; don't pile this one on top.
        if policy is not None or not (table.has("traffic_policy") or table.has("traffic_policy_file")):
            problems.error(source, f"{key_path}.upstream.url", TLS_UPSTREAM_MESSAGE)

    if url is not None:
        host, port = url
        bindings = _check_binding(table, host, bindings)
        if bindings == ("public",) and port is not None and listen_ports is not None:
            if port not in listen_ports:
                ports = ", ".join(str(p) for p in sorted(set(listen_ports)))
                table.error(
                    "url",
                    f"no listener on port {port} (gateway.listen ports: {ports}); "
                    "add a listener on that port, or drop the port to serve the endpoint on every listener",
                )

    if len(problems.errors) > errors_before:
        return None
    assert name is not None and url is not None and upstream is not None and bindings is not None
    host, port = url
    return EndpointConfig(
        name=name,
        url=format_endpoint_url(host, port),
        host=host,
        port=port,
        upstream=upstream,
        description=description,
        metadata=metadata,
        bindings=bindings,
        pooling_enabled=pooling_enabled,
        traffic_policy_json=policy_json,
        traffic_policy_file=policy_file,
        traffic_policy=policy,
        policy_base_dir=policy_file.parent if policy_file is not None else base_dir,
    )


def _parse_traffic_policy(table: Table, data: dict[str, object]):
    """``traffic_policy`` (inline table) or ``traffic_policy_file`` (YAML, JSON or TOML)."""
    from tlsgate.policy.load import load_policy_file, parse_policy

    ctx = table.ctx
    inline = table.get("traffic_policy", _expect_table, None)
    policy_path = table.get("traffic_policy_file", ctx.to_path, None)
    if inline is not None and policy_path is not None:
        table.error("traffic_policy_file", "give traffic_policy or traffic_policy_file, not both")
        return None, None, None
    if inline is not None:
        not_json = _first_non_json_value(inline, table.key_path("traffic_policy"))
        if not_json is not None:
            # The inline policy is kept (and shown by `config show`) as JSON, the form of
            # every ngrok policy document; TOML's dates and times have no JSON form.
            path, value = not_json
            ctx.problems.error(
                ctx.source, path, f"a traffic policy holds JSON values only, got {describe(value)}"
            )
            return None, None, None
        policy = parse_policy(inline, ctx.source, table.key_path("traffic_policy"), ctx.problems)
        check_terminate_actions(policy, ctx.base_dir, ctx.problems)
        return policy, json.dumps(absolute_paths(inline, ctx.base_dir), sort_keys=True), None
    if policy_path is not None:
        policy, _ = load_policy_file(policy_path, ctx.problems)
        check_terminate_actions(policy, policy_path.parent, ctx.problems)
        return policy, None, policy_path
    return None, None, None


def _first_non_json_value(value: object, path: str) -> tuple[str, object] | None:
    """The key path and value of the first date, time or datetime inside ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = _first_non_json_value(item, join_key(path, str(key)))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_non_json_value(item, f"{path}[{index}]")
            if found is not None:
                return found
    elif isinstance(value, datetime.date | datetime.time):
        return path, value
    return None


def _expect_table(value: object) -> dict:
    if not isinstance(value, dict):
        raise FieldError(f"expected a table such as {{ on_tcp_connect = [...] }}, got {describe(value)}")
    return value


def _upstream_hint(data: dict[str, object]) -> str:
    """``upstream = "127.0.0.1:9443"`` is a likely slip; show the table it should be."""
    value = data.get("upstream")
    if isinstance(value, str | int) and not isinstance(value, bool):
        return f"; write upstream = {{ url = {json.dumps(value)} }}"
    return ""


def _check_binding(
    table: Table, host: str, bindings: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """ngrok infers ``internal`` from a ``.internal`` host, and allows it only there."""
    internal_host = is_internal_host(host)
    if bindings is None:
        if table.has("bindings"):
            return None  # already reported as malformed
        return ("internal",) if internal_host else ("public",)
    if bindings == ("internal",) and not internal_host:
        table.error("bindings", f"an internal endpoint's host must end in .internal, got {host}")
    elif bindings == ("public",) and internal_host:
        table.error(
            "bindings",
            f'{host} is an internal host name; set bindings = ["internal"] or use a public host',
        )
    return bindings


def _parse_upstream(table: Table) -> UpstreamConfig | None:
    url = table.require("url", parse_upstream_url)
    proxy_protocol = table.get("proxy_protocol", parse_proxy_protocol, 0)
    tls_verify = table.get("tls_verify", expect_bool, True)
    tls_verify_cas = table.get("tls_verify_cas", table.ctx.to_path, None)
    server_name = table.get("server_name", _server_name, None)
    table.finish({"protocol": "upstream.protocol (http1/http2) is for HTTP endpoints only"})
    if url is None:
        return None
    address, tls = url
    if not tls:
        for key in ("tls_verify", "tls_verify_cas", "server_name"):
            if table.has(key):
                table.error(key, "only applies to a tls:// upstream (re-encryption)")
    elif tls_verify_cas is not None and not tls_verify_cas.is_file():
        table.error("tls_verify_cas", f"{tls_verify_cas} is not a readable file")
    elif not tls_verify:
        table.warn(
            "tls_verify",
            "the upstream's certificate is not verified: anyone on the path to it can "
            "read and change this endpoint's traffic",
        )
    return UpstreamConfig(
        address=address,
        proxy_protocol=proxy_protocol,  # type: ignore[arg-type]
        tls=tls,
        tls_verify=tls_verify,
        tls_verify_cas=tls_verify_cas,
        server_name=server_name,
    )


def _server_name(value: object) -> str:
    text = expect_str(value).strip().lower().rstrip(".")
    from tlsgate.proto.sni import normalise_sni

    if normalise_sni(text) is None:
        raise FieldError(f"{json.dumps(value)} is not a valid host name")
    return text


def check_endpoints(
    endpoints: Sequence[tuple[str, EndpointConfig]], source: str, problems: Problems
) -> None:
    """Rules across endpoints, each given with its key path (``endpoints[2]``).

    Names must be unique. Endpoints with the same URL form a pool only if every one
    of them sets ``pooling_enabled = true``; otherwise each of them gets an error
    naming the others, as ngrok refuses the second agent (ERR_NGROK_334).
    """
    first_by_name: dict[str, str] = {}
    for path, endpoint in endpoints:
        if endpoint.name in first_by_name:
            problems.error(
                source,
                f"{path}.name",
                f"endpoint name '{endpoint.name}' is already used by {first_by_name[endpoint.name]}",
            )
        else:
            first_by_name[endpoint.name] = path

    by_url: dict[str, list[tuple[str, EndpointConfig]]] = {}
    for path, endpoint in endpoints:
        by_url.setdefault(endpoint.url, []).append((path, endpoint))
    for url, members in by_url.items():
        if len(members) < 2 or all(e.pooling_enabled for _, e in members):
            continue
        for path, _ in members:
            others = [f"'{e.name}' ({p})" for p, e in members if p != path]
            both = "both" if len(members) == 2 else "all of them"
            problems.error(
                source,
                f"{path}.url",
                f"{url} is also the URL of endpoint {', '.join(others)}; "
                f"to pool them, start {both} with pooling_enabled = true",
            )
