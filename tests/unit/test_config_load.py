"""The config loader: every problem at once as ``FILE: key.path: message``, defaults, paths.

Bad configs live in tests/data/config/bad/, one per error class; each lists the
problems it must produce, in order, as ``# expect: key.path: message`` comments.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tlsgate.config.endpoints import check_endpoints, parse_endpoint
from tlsgate.config.load import load_config, parse_config
from tlsgate.config.model import (
    Config,
    EndpointConfig,
    EventsConfig,
    HostPort,
    LimitsConfig,
    UpstreamConfig,
    default_workers,
)
from tlsgate.errors import ConfigError, Problems

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "config"
BAD = sorted((DATA / "bad").glob("*.toml"))
GOOD = sorted((DATA / "good").glob("*.toml"))
SHIPPED = [REPO / "conf" / "tlsgate.example.toml", REPO / "conf" / "minimal.toml"]


def problems_of(path: str | os.PathLike | None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def write(tmp_path: Path, text: str, name: str = "tlsgate.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- bad fixtures ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_reports_exactly_the_expected_problems(path):
    expected = [
        f"{path}: {line.removeprefix('# expect: ')}"
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]
    assert expected, f"{path} lists no expected problems"
    assert problems_of(path) == expected


def test_there_is_a_bad_fixture_per_error_class():
    assert {p.stem for p in BAD} >= {
        "syntax", "unknown_keys", "wrong_types", "listen", "durations", "sizes",
        "endpoint_urls", "endpoint_names", "upstreams", "bindings", "pools", "control_socket",
    }  # fmt: skip


def test_all_problems_come_out_at_once_in_file_order():
    path = DATA / "bad" / "many.toml"
    keys = [line.split(": ")[1] for line in problems_of(path)]
    assert keys == [
        "gateway.listen[1]",
        "gateway.workers",
        "limits.client_hello_timeout",
        "events.fille",
        "endpoints[0].upstream.url",
        "endpoints[0].url",
        "endpoints[1].url",
    ]


def test_config_error_text_is_one_problem_per_line():
    path = DATA / "bad" / "many.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).splitlines() == problems_of(path)


# -- good configs ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOOD + SHIPPED, ids=[p.name for p in GOOD + SHIPPED])
def test_good_config_loads(path):
    config, warnings = load_config(path)
    assert config.source == str(path)
    if path.name != "empty.toml":
        assert warnings == []
        assert config.endpoints


def test_embedded_default_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, warnings = load_config(None)
    assert warnings == []
    assert config.source == "<default>"
    assert config.gateway.listen == (HostPort("127.0.0.1", 8443),)
    assert config.gateway.state_dir == tmp_path / ".tlsgate"
    assert config.gateway.control_socket == tmp_path / ".tlsgate" / "control.sock"
    assert config.events.file == str(tmp_path / ".tlsgate" / "events.jsonl")
    assert [(e.name, e.url, str(e.upstream.address)) for e in config.endpoints] == [
        ("example", "tls://localhost", "127.0.0.1:9443"),
        ("example-wildcard", "tls://*.localhost", "127.0.0.1:9443"),
    ]


def test_full_config_values(tmp_path):
    config, _ = load_config(DATA / "good" / "full.toml")
    base = DATA / "good"
    gateway = config.gateway
    assert gateway.listen == (
        HostPort("127.0.0.1", 8443),
        HostPort("::1", 8443),
        HostPort("0.0.0.0", 9443),
    )
    assert gateway.listen_ports == {8443, 9443}
    assert gateway.workers == 3
    assert gateway.state_dir == base / "run"
    assert gateway.control_socket == base / "run" / "ctl.sock"
    assert gateway.on_unknown_sni == "close"
    assert gateway.drain_timeout == 90.0
    assert config.limits == LimitsConfig(
        client_hello_timeout=0.5,
        handshake_timeout=45.0,
        client_idle_timeout=3600.0,
        server_idle_timeout=150.0,
        upstream_connect_timeout=1.5,
        max_handshake_message=32768,
        max_certificate_message=1048576,
    )
    assert config.events == EventsConfig(file=str(base / "logs" / "events.jsonl"))
    app, wild, internal = config.endpoints
    assert app == EndpointConfig(
        name="app",
        url="tls://app.example.com",
        host="app.example.com",
        port=None,
        upstream=UpstreamConfig(HostPort("backend.example.net", 443), proxy_protocol=2),
        description="the app",
        metadata='{"team": "web"}',
        bindings=("public",),
        pooling_enabled=False,
    )
    assert (wild.host, wild.port, wild.is_wildcard) == ("*.example.com", 9443, True)
    assert wild.upstream == UpstreamConfig(HostPort("::1", 9443), proxy_protocol=1)
    assert (internal.bindings, internal.is_internal, internal.port) == (("internal",), True, 5432)
    assert internal.upstream.address == HostPort("127.0.0.1", 5432)


def test_defaults_for_an_empty_file(tmp_path):
    path = write(tmp_path, "")
    config, warnings = load_config(path)
    assert config == Config(
        gateway=config.gateway,
        limits=LimitsConfig(),
        events=EventsConfig(file=None),
        endpoints=(),
        source=str(path),
    )
    assert config.gateway.listen == (HostPort("127.0.0.1", 8443),)
    assert config.gateway.workers == default_workers()
    assert config.gateway.on_unknown_sni == "alert"
    assert config.gateway.drain_timeout == 30.0
    assert config.limits.max_handshake_message == 65536
    assert config.limits.max_certificate_message == 262144
    assert [str(w) for w in warnings] == [
        f"{path}: endpoints: warning: no endpoints are configured; every connection will be refused"
    ]


# -- relative paths ----------------------------------------------------------------------------


def test_relative_paths_are_relative_to_the_config_file_not_the_cwd(tmp_path, monkeypatch):
    conf_dir = tmp_path / "etc" / "tlsgate"
    conf_dir.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(conf_dir, '[gateway]\nstate_dir = "state"\n[events]\nfile = "../log/ev.jsonl"\n')
    monkeypatch.chdir(elsewhere)
    config, _ = load_config(Path("..") / "etc" / "tlsgate" / "tlsgate.toml")
    assert config.gateway.state_dir == conf_dir / "state"
    assert config.gateway.control_socket == conf_dir / "state" / "control.sock"
    assert config.events.file == str(tmp_path / "etc" / "log" / "ev.jsonl")


def test_absolute_home_and_stdout_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(
        tmp_path,
        f'[gateway]\nstate_dir = "~/st"\ncontrol_socket = "{tmp_path}/c.sock"\n[events]\nfile = "-"\n',
    )
    config, _ = load_config(path)
    assert config.gateway.state_dir == tmp_path / "home" / "st"
    assert config.gateway.control_socket == tmp_path / "c.sock"
    assert config.events.file == "-"


def test_parse_config_uses_the_given_base_dir(tmp_path):
    data = {
        "gateway": {"state_dir": "s"},
        "endpoints": [{"name": "a", "url": "tls://a.x", "upstream": {"url": 1}}],
    }
    config, warnings = parse_config(data, "<cli>", tmp_path)
    assert warnings == []
    assert config.source == "<cli>"
    assert config.gateway.state_dir == tmp_path / "s"
    assert config.endpoints[0].upstream.address == HostPort("127.0.0.1", 1)


def test_parse_config_reports_like_load_config(tmp_path):
    with pytest.raises(ConfigError) as info:
        parse_config({"gateway": {"workers": 0}, "extra": 1}, "<cli>", tmp_path)
    assert [str(p) for p in info.value.problems] == [
        "<cli>: gateway.workers: must be between 1 and 256, got 0",
        "<cli>: extra: unknown key (known keys here: gateway, limits, events, metrics, tls, certificates, endpoints)",
    ]


# -- files that cannot be read -----------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    assert problems_of(path) == [
        f"{path}: <file>: cannot read the config file: No such file or directory"
    ]


def test_directory_instead_of_file(tmp_path):
    assert problems_of(tmp_path) == [
        f"{tmp_path}: <file>: cannot read the config file: Is a directory"
    ]


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[gateway]\nstate_dir = "caf\xe9"\n')
    assert problems_of(path) == [
        f"{path}: <toml>: the file is not UTF-8 text (line 2: invalid continuation byte)"
    ]


def test_syntax_error_is_one_problem_with_line_and_column(tmp_path):
    path = write(tmp_path, '[gateway]\nworkers = 2\nlisten = ["127.0.0.1:8443"\n\n[limits]\n')
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: <toml>: ")
    assert problem.endswith("(at line 5, column 1)")


# -- specific rules ----------------------------------------------------------------------------


ENDPOINT = (
    '[[endpoints]]\nname = "{name}"\nurl = "{url}"\npooling_enabled = {pool}\nupstream.url = 9443\n'
)


def endpoints_toml(*entries: tuple[str, str, str]) -> str:
    return "".join(ENDPOINT.format(name=n, url=u, pool=p) for n, u, p in entries)


def test_pool_of_all_pooled_endpoints_is_accepted(tmp_path):
    path = write(
        tmp_path,
        endpoints_toml(("a", "tls://x.example", "true"), ("b", "tls://X.example.", "true")),
    )
    config, _ = load_config(path)
    assert [e.url for e in config.endpoints] == ["tls://x.example", "tls://x.example"]


def test_pool_conflict_names_the_other_endpoint_on_each(tmp_path):
    path = write(
        tmp_path,
        endpoints_toml(("a", "tls://x.example", "true"), ("b", "tls://x.example", "false")),
    )
    assert problems_of(path) == [
        f"{path}: endpoints[0].url: tls://x.example is also the URL of endpoint 'b' (endpoints[1]); "
        "to pool them, start both with pooling_enabled = true",
        f"{path}: endpoints[1].url: tls://x.example is also the URL of endpoint 'a' (endpoints[0]); "
        "to pool them, start both with pooling_enabled = true",
    ]


def test_same_host_with_and_without_port_is_not_a_pool(tmp_path):
    path = write(
        tmp_path,
        endpoints_toml(("a", "tls://x.example", "false"), ("b", "tls://x.example:8443", "false")),
    )
    config, _ = load_config(path)
    assert [(e.host, e.port) for e in config.endpoints] == [
        ("x.example", None),
        ("x.example", 8443),
    ]


def test_url_port_must_have_a_listener(tmp_path):
    text = '[gateway]\nlisten = ["127.0.0.1:8443", "127.0.0.1:9443"]\n' + endpoints_toml(
        ("ok", "tls://a.example:9443", "false"), ("bad", "tls://b.example:443", "false")
    )
    path = write(tmp_path, text)
    assert problems_of(path) == [
        f"{path}: endpoints[1].url: no listener on port 443 (gateway.listen ports: 8443, 9443); "
        "add a listener on that port, or drop the port to serve the endpoint on every listener"
    ]


def test_internal_endpoint_port_needs_no_listener(tmp_path):
    config, _ = load_config(
        write(tmp_path, endpoints_toml(("db", "tls://db.internal:5432", "false")))
    )
    assert config.endpoints[0].bindings == ("internal",)


def test_no_port_check_when_listen_addresses_are_unreadable(tmp_path):
    text = '[gateway]\nlisten = ["nope"]\n' + endpoints_toml(("a", "tls://a.example:9999", "false"))
    path = write(tmp_path, text)
    assert problems_of(path) == [
        f'{path}: gateway.listen[0]: expected "HOST:PORT", "[IPV6]:PORT" or ":PORT", got string "nope"'
    ]


def test_did_you_mean_at_every_level(tmp_path):
    text = "[gatway]\n[limits]\nclient_idle_timeot = 5\n" + endpoints_toml(
        ("a", "tls://a.x", "false")
    )
    text += "descripton = 'x'\n"  # still in [[endpoints]]: upstream.url above is a dotted key
    path = write(tmp_path, text)
    assert problems_of(path) == [
        f"{path}: limits.client_idle_timeot: unknown key; did you mean 'client_idle_timeout'?",
        f"{path}: endpoints[0].descripton: unknown key; did you mean 'description'?",
        f"{path}: gatway: unknown key; did you mean 'gateway'?",
    ]


def test_control_socket_length_limit_is_107_bytes(tmp_path):
    directory = "/tmp/" + "d" * (107 - len("/tmp/") - len("/control.sock"))
    path = write(tmp_path, f'[gateway]\nstate_dir = "{directory}"\n')
    config, _ = load_config(path)
    assert len(str(config.gateway.control_socket)) == 107
    path = write(tmp_path, f'[gateway]\nstate_dir = "{directory}x"\n')
    (problem,) = problems_of(path)
    assert "(derived from gateway.state_dir) is 108 bytes long" in problem


def test_missing_required_endpoint_keys(tmp_path):
    with pytest.raises(ConfigError) as info:
        parse_config({"endpoints": [{"name": "a"}]}, "<api>", tmp_path)
    assert [str(p) for p in info.value.problems] == [
        "<api>: endpoints[0].url: missing required key",
        "<api>: endpoints[0].upstream: missing required table",
    ]


# -- the endpoint API entry points -------------------------------------------------------------


def test_parse_endpoint_for_the_api():
    problems = Problems()
    data = {
        "name": "api",
        "url": "tls://API.example.com:443",
        "upstream": {"url": "tcp://h:1", "proxy_protocol": "1"},
    }
    endpoint = parse_endpoint(data, "<api>", "endpoint", problems, {443})
    assert problems.items == []
    assert endpoint == EndpointConfig(
        name="api",
        url="tls://api.example.com:443",
        host="api.example.com",
        port=443,
        upstream=UpstreamConfig(HostPort("h", 1), proxy_protocol=1),
    )


def test_parse_endpoint_errors_use_the_given_key_path():
    problems = Problems()
    data = {"name": "api", "url": "tls://a.example:443", "upstream": {"url": "tls://h:1"}, "x": 1}
    assert parse_endpoint(data, "<api>", "endpoint", problems, {8443}) is None
    assert [f"{p.key_path}" for p in problems.items] == [
        "endpoint.x",
        "endpoint.upstream.url",
        "endpoint.url",
    ]
    assert parse_endpoint("nope", "<api>", "endpoint", problems, None) is None
    assert str(problems.items[-1]) == '<api>: endpoint: expected a table, got string "nope"'


def test_check_endpoints_against_existing_ones():
    problems = Problems()
    upstream = UpstreamConfig(HostPort("127.0.0.1", 1))
    old = EndpointConfig("a", "tls://x.example", "x.example", None, upstream)
    new = EndpointConfig("a", "tls://x.example", "x.example", None, upstream, pooling_enabled=True)
    check_endpoints([("endpoints[0]", old), ("request", new)], "<api>", problems)
    assert [str(p) for p in problems.items] == [
        "<api>: request.name: endpoint name 'a' is already used by endpoints[0]",
        "<api>: endpoints[0].url: tls://x.example is also the URL of endpoint 'a' (request); "
        "to pool them, start both with pooling_enabled = true",
        "<api>: request.url: tls://x.example is also the URL of endpoint 'a' (endpoints[0]); "
        "to pool them, start both with pooling_enabled = true",
    ]
