"""`tlsgate config show`: the dump's exact shape, and parse(dump(cfg)) == cfg."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlsgate.config.dump import config_to_dict, dump_config
from tlsgate.config.load import load_config, parse_config
from tlsgate.config.model import (
    Config,
    EndpointConfig,
    EventsConfig,
    GatewayConfig,
    HostPort,
    LimitsConfig,
    UpstreamConfig,
)

REPO = Path(__file__).resolve().parents[2]
GOOD = sorted((REPO / "tests" / "data" / "config" / "good").glob("*.toml"))
SHIPPED = [REPO / "conf" / "tlsgate.example.toml", REPO / "conf" / "minimal.toml"]


def reparse(config: Config) -> Config:
    # The base dir must not matter: the dump has absolute paths only.
    parsed, _ = parse_config(tomllib.loads(dump_config(config)), config.source, "/nonexistent")
    return parsed


def test_dump_text(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(
        '[gateway]\nlisten = [":8443", "[::1]:8443"]\nworkers = 2\n'
        "[limits]\nhandshake_timeout = 90\nmax_certificate_message = 300000\n"
        '[[endpoints]]\nname = "app"\nurl = "tls://App.Example.com."\n'
        'upstream = { url = 9443, proxy_protocol = "2" }\n'
    )
    config, _ = load_config(path)
    assert (
        dump_config(config)
        == f"""\
# tlsgate effective configuration, loaded from {path}
# (defaults filled in; relative paths resolved)

[gateway]
listen = [
    "0.0.0.0:8443",
    "[::1]:8443",
]
workers = 2
state_dir = "{tmp_path}/.tlsgate"
control_socket = "{tmp_path}/.tlsgate/control.sock"
on_unknown_sni = "alert"
drain_timeout = "30s"

[limits]
client_hello_timeout = "3s"
handshake_timeout = "1m30s"
client_idle_timeout = "5m"
server_idle_timeout = "5m"
upstream_connect_timeout = "10s"
max_handshake_message = "64KB"
max_certificate_message = "300000B"
max_connections_per_ip = 0

[events]

[tls]
auto_certificates = "local-ca"
session_resumption = true
ticket_key_rotation = "12h"

[[endpoints]]
name = "app"
url = "tls://app.example.com"
description = ""
metadata = ""
bindings = [
    "public",
]
pooling_enabled = false

[endpoints.upstream]
url = "127.0.0.1:9443"
proxy_protocol = 2
"""
    )


def test_config_to_dict_writes_every_default():
    data = config_to_dict(Config(gateway=GatewayConfig(workers=4)))
    assert data["gateway"]["workers"] == 4
    assert data["limits"] == {
        "client_hello_timeout": "3s",
        "handshake_timeout": "1m",
        "client_idle_timeout": "5m",
        "server_idle_timeout": "5m",
        "upstream_connect_timeout": "10s",
        "max_handshake_message": "64KB",
        "max_certificate_message": "256KB",
        "max_connections_per_ip": 0,
    }
    assert data["events"] == {}
    assert "endpoints" not in data


@pytest.mark.parametrize("path", GOOD + SHIPPED, ids=[p.name for p in GOOD + SHIPPED])
def test_round_trip_of_good_configs(path):
    config, _ = load_config(path)
    assert reparse(config) == config


def test_round_trip_of_the_default_config():
    config, _ = load_config(None)
    assert reparse(config) == config


# -- property: any valid config survives dump -> parse -------------------------------------------

# Labels start with a letter so that no host is an IPv4 address, and never "internal"
# so that a public endpoint's host does not end in .internal.
labels = st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True).filter(lambda s: s != "internal")
hosts = st.lists(labels, min_size=2, max_size=4).map(".".join)
ports = st.integers(min_value=1, max_value=65535)
durations = st.one_of(
    st.integers(min_value=1, max_value=10**9).map(lambda ms: ms / 1000),
    st.floats(min_value=1e-6, max_value=365 * 24 * 3600.0),
)
sizes = st.integers(min_value=1, max_value=2**24 - 1)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
listen_addresses = st.builds(HostPort, st.one_of(ipv4, ipv6), ports)
upstreams = st.builds(
    UpstreamConfig,
    st.builds(HostPort, st.one_of(ipv4, ipv6, hosts), ports),
    st.sampled_from([0, 1, 2]),
)
paths = st.lists(labels, min_size=1, max_size=3).map(lambda parts: Path("/srv", *parts))


@st.composite
def endpoints(draw, listen_ports):
    name = draw(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True))
    internal = draw(st.booleans())
    host = draw(hosts)
    if draw(st.booleans()):
        host = "*." + host
    if internal:
        host += ".internal"
    port = draw(st.one_of(st.none(), ports if internal else st.sampled_from(sorted(listen_ports))))
    url = f"tls://{host}" if port is None else f"tls://{host}:{port}"
    return EndpointConfig(
        name=name,
        url=url,
        host=host,
        port=port,
        upstream=draw(upstreams),
        description=draw(st.text(max_size=255)),
        metadata=draw(st.text(max_size=100)),
        bindings=("internal",) if internal else ("public",),
        # Pooling everything keeps accidental URL clashes valid.
        pooling_enabled=True,
    )


@st.composite
def configs(draw):
    listen = tuple(draw(st.lists(listen_addresses, min_size=1, max_size=3, unique=True)))
    # Keep clear of the wildcard-overlap rule: specific addresses only.
    listen = tuple(a for a in listen if a.host not in ("0.0.0.0", "::")) or (
        HostPort("127.0.0.1", 8443),
    )
    state_dir = draw(paths)
    gateway = GatewayConfig(
        listen=listen,
        workers=draw(st.integers(min_value=1, max_value=256)),
        state_dir=state_dir,
        control_socket=draw(st.one_of(st.just(state_dir / "control.sock"), paths)),
        on_unknown_sni=draw(st.sampled_from(["alert", "close"])),
        drain_timeout=draw(durations),
    )
    limits = LimitsConfig(
        client_hello_timeout=draw(durations),
        handshake_timeout=draw(durations),
        client_idle_timeout=draw(durations),
        server_idle_timeout=draw(durations),
        upstream_connect_timeout=draw(durations),
        max_handshake_message=draw(sizes),
        max_certificate_message=draw(sizes),
    )
    events = EventsConfig(file=draw(st.one_of(st.none(), st.just("-"), paths.map(str))))
    endpoint_list = draw(
        st.lists(
            endpoints({a.port for a in listen}), min_size=1, max_size=4, unique_by=lambda e: e.name
        )
    )
    return Config(
        gateway=gateway,
        limits=limits,
        events=events,
        endpoints=tuple(endpoint_list),
        source="<prop>",
    )


@settings(max_examples=200, deadline=None)
@given(configs())
def test_round_trip_property(config):
    assert reparse(config) == config
