"""The effective config as TOML, for `tlsgate config show`.

Every key is written, defaults included, in the same forms the loader reads:
durations as ``"3s"``/``"5m"``, sizes as ``"64KB"``, addresses as ``"host:port"``,
paths absolute (as resolved at load time). Parsing the output gives back an
equal `Config`: ``parse_config(tomllib.loads(dump_config(c)), c.source, ...) == c``.
"""

from __future__ import annotations

import json

import tomli_w

from tlsgate.config.fields import format_duration, format_size
from tlsgate.config.model import Config, EndpointConfig


def config_to_dict(cfg: Config) -> dict[str, object]:
    """The config as plain TOML-ready data (strings, ints, bools, lists, dicts)."""
    gateway = cfg.gateway
    limits = cfg.limits
    events: dict[str, object] = {}
    if cfg.events.file is not None:
        events["file"] = cfg.events.file
    data: dict[str, object] = {
        "gateway": {
            "listen": [str(address) for address in gateway.listen],
            "workers": gateway.workers,
            "state_dir": str(gateway.state_dir),
            "control_socket": str(gateway.control_socket),
            "on_unknown_sni": gateway.on_unknown_sni,
            "drain_timeout": format_duration(gateway.drain_timeout),
            **({"user": gateway.user} if gateway.user is not None else {}),
            **({"group": gateway.group} if gateway.group is not None else {}),
        },
        "limits": {
            "client_hello_timeout": format_duration(limits.client_hello_timeout),
            "handshake_timeout": format_duration(limits.handshake_timeout),
            "client_idle_timeout": format_duration(limits.client_idle_timeout),
            "server_idle_timeout": format_duration(limits.server_idle_timeout),
            "upstream_connect_timeout": format_duration(limits.upstream_connect_timeout),
            "max_handshake_message": format_size(limits.max_handshake_message),
            "max_certificate_message": format_size(limits.max_certificate_message),
            **({"max_connections": limits.max_connections} if limits.max_connections else {}),
            "max_connections_per_ip": limits.max_connections_per_ip,
        },
        "events": events,
    }
    if cfg.metrics.listen is not None:
        data["metrics"] = {"listen": str(cfg.metrics.listen)}
    data["tls"] = {
        "auto_certificates": cfg.tls.auto_certificates,
        "session_resumption": cfg.tls.session_resumption,
        "ticket_key_rotation": format_duration(cfg.tls.ticket_key_rotation),
    }
    if cfg.certificates:
        data["certificates"] = [{"cert": str(c.cert), "key": str(c.key)} for c in cfg.certificates]
    if cfg.endpoints:  # tomli_w would write an empty array as "endpoints = []" above [gateway]
        data["endpoints"] = [endpoint_to_dict(endpoint) for endpoint in cfg.endpoints]
    return data


def endpoint_to_dict(endpoint: EndpointConfig) -> dict[str, object]:
    """One ``[[endpoints]]`` entry; also the shape the endpoint API will return."""
    upstream = endpoint.upstream
    upstream_data: dict[str, object] = {
        "url": f"tls://{upstream.address}" if upstream.tls else str(upstream.address),
        "proxy_protocol": upstream.proxy_protocol,
    }
    if upstream.tls:
        upstream_data["tls_verify"] = upstream.tls_verify
        if upstream.tls_verify_cas is not None:
            upstream_data["tls_verify_cas"] = str(upstream.tls_verify_cas)
        if upstream.server_name is not None:
            upstream_data["server_name"] = upstream.server_name
    data: dict[str, object] = {
        "name": endpoint.name,
        "url": endpoint.url,
        "description": endpoint.description,
        "metadata": endpoint.metadata,
        "bindings": list(endpoint.bindings),
        "pooling_enabled": endpoint.pooling_enabled,
    }
    if endpoint.traffic_policy_file is not None:
        data["traffic_policy_file"] = str(endpoint.traffic_policy_file)
    # Tables last: tomli_w writes [endpoints.x] sub-tables after the plain keys anyway.
    data["upstream"] = upstream_data
    if endpoint.traffic_policy_json is not None:
        data["traffic_policy"] = redact_keys(json.loads(endpoint.traffic_policy_json))
    return data


REDACTED = "[private key redacted]"


def redact_keys(value):
    """A policy document without private key text (a key given as a file path stays)."""
    if isinstance(value, dict):
        return {
            k: REDACTED if k == "server_private_key" and _is_key_text(v) else redact_keys(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_keys(v) for v in value]
    return value


def _is_key_text(value) -> bool:
    return isinstance(value, str) and "PRIVATE KEY" in value


def dump_config(cfg: Config) -> str:
    """TOML text of the effective config, headed by a comment naming its source."""
    header = f"# tlsgate effective configuration, loaded from {cfg.source}\n"
    header += "# (defaults filled in; relative paths resolved)\n\n"
    return header + tomli_w.dumps(config_to_dict(cfg))
