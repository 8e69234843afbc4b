"""Property tests of the config loader, from the text side: what users write, not dataclasses.

Three properties (test_config_dump.py covers parse(dump(c)) == c for generated `Config`s):

1. A valid config written in any of the accepted forms (durations as "1m30s", "250ms"
   or numbers; sizes as "64KB", "1MiB" or integers; listen addresses as ":PORT",
   "localhost:PORT", "[V6]:PORT"; endpoint URLs in any case with a trailing dot and
   wildcards; pools; proxy_protocol as 0/1/2 or "", "1", "2") loads to the values
   meant, and its `dump_config` output loads back to an equal config.
2. Any one invalid value in an otherwise valid config gives a `ConfigError` with a
   problem at that value's key path, and every problem has a key path.
3. TOML-ish garbage (mutated good configs, token soup, non-UTF-8 bytes) gives a
   config or a `ConfigError`, never any other exception.
"""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlsgate.config.dump import dump_config
from tlsgate.config.load import _parse_text, load_config, parse_config
from tlsgate.config.model import Config, HostPort
from tlsgate.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
BASE_DIR = "/srv/tlsgate"
SOURCE = "<props>"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GOOD_TEXTS = [
    p.read_text() for p in sorted((REPO / "tests" / "data" / "config" / "good").glob("*.toml"))
]


def load(data: dict) -> Config:
    config, _ = parse_config(data, SOURCE, BASE_DIR)
    return config


def reload_dump(config: Config) -> Config:
    again, _ = parse_config(tomllib.loads(dump_config(config)), config.source, BASE_DIR)
    return again


# -- value forms: (what is written, what it means) -------------------------------------------


@st.composite
def durations(draw) -> tuple[object, float]:
    form = draw(st.sampled_from(["units", "int", "float"]))
    if form == "int":
        seconds = draw(st.integers(1, 365 * 24 * 3600))
        return seconds, float(seconds)
    if form == "float":
        seconds = draw(st.floats(1e-3, 365 * 24 * 3600.0))
        return seconds, seconds
    hours, minutes, secs, millis = (draw(st.integers(0, n)) for n in (23, 59, 59, 999))
    if not (hours or minutes or secs or millis):
        secs = 1
    text = "".join(
        f"{n}{unit}"
        for n, unit in zip((hours, minutes, secs, millis), "h m s ms".split(), strict=True)
        if n
    )
    return text, (hours * 3600_000 + minutes * 60_000 + secs * 1000 + millis) / 1000


@st.composite
def sizes(draw) -> tuple[object, int]:
    unit, factor = draw(
        st.sampled_from(
            [("", 1), ("B", 1), ("KB", 1024), ("kib", 1024), ("MB", 1 << 20), ("MiB", 1 << 20)]
        )
    )
    count = draw(st.integers(1, (2**24 - 1) // factor))
    if not unit and draw(st.booleans()):
        return count, count  # a TOML integer
    space = draw(st.sampled_from(["", " "]))
    return f"{count}{space}{unit}", count * factor


@st.composite
def listen_addresses(draw, port: int) -> tuple[str, HostPort]:
    form = draw(st.sampled_from(["v4", "v6", "any", "localhost"]))
    if form == "v4":
        ip = str(draw(st.ip_addresses(v=4)))
        return f"{ip}:{port}", HostPort(ip, port)
    if form == "v6":
        ip = str(draw(st.ip_addresses(v=6)))
        return f"[{ip}]:{port}", HostPort(ip, port)
    if form == "any":
        return f":{port}", HostPort("0.0.0.0", port)
    return f"localhost:{port}", HostPort("127.0.0.1", port)


# A letter first, so that no host is an IPv4 literal; never "internal", which would make
# a public endpoint's host end in .internal.
labels = st.builds(
    str.__add__,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", max_size=15),
).filter(lambda s: s != "internal")
hosts = st.lists(labels, min_size=2, max_size=3).map(".".join)


@st.composite
def endpoint_urls(
    draw, index: int, listen_ports: list[int], internal: bool
) -> tuple[str, str, int | None]:
    # The index keeps URLs apart: endpoints sharing one must all enable pooling.
    host = f"e{index}.{draw(hosts)}"
    if draw(st.booleans()):
        host = "*." + host
    if internal:
        host += ".internal"
    port = draw(st.one_of(st.none(), st.sampled_from(listen_ports)))
    # Written in any case, maybe with the trailing dot of a fully qualified name.
    upper = draw(st.integers(0, 2 ** len(host) - 1))
    written = "".join(c.upper() if upper >> i & 1 else c for i, c in enumerate(host))
    written += "." if draw(st.booleans()) else ""
    url = f"tls://{written}" if port is None else f"tls://{written}:{port}"
    return url, host, port


@st.composite
def upstream_urls(draw) -> tuple[object, HostPort]:
    port = draw(st.integers(1, 65535))
    form = draw(st.sampled_from(["int", "str", "host", "tcp", "v6"]))
    if form == "int":
        return port, HostPort("127.0.0.1", port)
    if form == "str":
        return str(port), HostPort("127.0.0.1", port)
    if form == "v6":
        ip = str(draw(st.ip_addresses(v=6)))
        return f"[{ip}]:{port}", HostPort(ip, port)
    host = draw(hosts)
    return (f"tcp://{host}:{port}" if form == "tcp" else f"{host}:{port}"), HostPort(host, port)


PROXY_PROTOCOL_FORMS = [(0, 0), (1, 1), (2, 2), ("", 0), ("1", 1), ("2", 2)]
POLICIES = [
    {"on_tcp_connect": [{"actions": [{"type": "deny"}]}]},
    {
        "on_tcp_connect": [
            {
                "name": "office",
                "expressions": ["inCidrRange(conn.client_ip, '10.0.0.0/8')"],
                "actions": [{"type": "log", "config": {"metadata": {"who": "office"}}}],
            },
            {"actions": [{"type": "restrict-ips", "config": {"allow": ["192.0.2.0/24"]}}]},
        ]
    },
]


@st.composite
def valid_configs(draw) -> tuple[dict, dict]:
    """A config dict in varied forms, and the values it means (for spot checks)."""
    ports = draw(st.lists(st.integers(1, 65535), min_size=1, max_size=3, unique=True))
    listen = [draw(listen_addresses(port)) for port in ports]
    drain_text, drain = draw(durations())
    hello_text, hello_timeout = draw(durations())
    size_text, size = draw(sizes())
    endpoints, expected_endpoints = [], []
    for index in range(draw(st.integers(1, 4))):
        internal = draw(st.booleans())
        url, host, port = draw(endpoint_urls(index, ports, internal))
        upstream_text, upstream = draw(upstream_urls())
        proxy_text, proxy_protocol = draw(st.sampled_from(PROXY_PROTOCOL_FORMS))
        endpoint = {
            "name": f"ep{index}-{draw(labels)}",
            "url": url,
            "upstream": {"url": upstream_text, "proxy_protocol": proxy_text},
        }
        if internal and draw(st.booleans()):
            endpoint["bindings"] = ["internal"]
        if not internal and draw(st.booleans()):
            endpoint["traffic_policy"] = draw(st.sampled_from(POLICIES))
        endpoints.append(endpoint)
        expected_endpoints.append((host, port, upstream, proxy_protocol))
    if draw(st.booleans()):
        # A pool: a second endpoint with the first one's URL; both must opt in.
        endpoints[0]["pooling_enabled"] = True
        twin = copy.deepcopy(endpoints[0])
        twin["name"] = "pool-member"
        endpoints.append(twin)
        expected_endpoints.append(expected_endpoints[0])
    data = {
        "gateway": {
            "listen": [text for text, _ in listen],
            "workers": draw(st.integers(1, 256)),
            "drain_timeout": drain_text,
        },
        "limits": {"client_hello_timeout": hello_text, "max_handshake_message": size_text},
        "endpoints": endpoints,
    }
    expected = {
        "listen": tuple(address for _, address in listen),
        "drain_timeout": drain,
        "client_hello_timeout": hello_timeout,
        "max_handshake_message": size,
        "endpoints": expected_endpoints,
    }
    return data, expected


@SETTINGS
@given(valid_configs(), st.booleans())
def test_valid_configs_load_to_their_meaning_and_round_trip(case, as_text):
    data, expected = case
    if as_text:
        config, _ = _parse_text(tomli_w.dumps(data), SOURCE, Path(BASE_DIR))
    else:
        config = load(data)
    assert config.gateway.listen == expected["listen"]
    assert math.isclose(config.gateway.drain_timeout, expected["drain_timeout"], rel_tol=1e-12)
    assert math.isclose(
        config.limits.client_hello_timeout, expected["client_hello_timeout"], rel_tol=1e-12
    )
    assert config.limits.max_handshake_message == expected["max_handshake_message"]
    got = [
        (e.host, e.port, e.upstream.address, e.upstream.proxy_protocol) for e in config.endpoints
    ]
    assert got == expected["endpoints"]
    assert reload_dump(config) == config


# -- one invalid value: a ConfigError at its key path ------------------------------------------

bad_durations = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=365 * 24 * 3600 + 1, max_value=2**63 - 1),
    st.sampled_from(["5", "1x", "", "ms", "1h-1s", "8761h", "-3s", "1.2.3s", "nan", "inf"]),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.5, True, False, [], {}]),
)
bad_sizes = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=2**24, max_value=2**63 - 1),
    st.sampled_from(["1GB", "64 KBs", "", "KB", "-1KB", "1.5KB", 1.5, True, [], "16MB"]),
)
bad_listen = st.one_of(
    st.sampled_from(
        [
            "1.2.3.4",
            "host.example:8443",
            ":0",
            ":65536",
            "::1:8443",
            "[zz]:1",
            "[::1]",
            "1.2.3.4:port",
            "",
            8443,
            True,
            1.5,
            [],
            {},
        ]
    ),
)
bad_urls = st.sampled_from(
    [
        "http://x.example",
        "tls://1.2.3.4",
        "tls://a..b",
        "tls://*.*.x",
        "tls://a/b",
        "tls://*",
        "",
        "x.example",
        "tls://[::1]",
        7,
        [],
        {},
    ]
)
bad_upstreams = st.sampled_from(
    ["udp://x:1", "x", 0, 70000, "tls://x.example:1", "[::1]", "a:b:c", "", True, 1.5, [], {}]
)
BAD_FIELDS = [
    (
        "gateway.workers",
        ("gateway", "workers"),
        st.one_of(
            st.integers(max_value=0),
            st.integers(min_value=257),
            st.sampled_from(["2", 2.0, True, []]),
        ),
    ),
    ("gateway.drain_timeout", ("gateway", "drain_timeout"), bad_durations),
    (
        "gateway.on_unknown_sni",
        ("gateway", "on_unknown_sni"),
        st.text(max_size=10).filter(lambda s: s not in ("alert", "close")),
    ),
    ("limits.handshake_timeout", ("limits", "handshake_timeout"), bad_durations),
    ("limits.max_handshake_message", ("limits", "max_handshake_message"), bad_sizes),
    ("gateway.listen[0]", ("gateway", "listen", 0), bad_listen),
    ("endpoints[0].url", ("endpoints", 0, "url"), bad_urls),
    (
        "endpoints[0].name",
        ("endpoints", 0, "name"),
        st.sampled_from(["", "a" * 65, "a b", "é", 1, True, []]),
    ),
    ("endpoints[0].upstream.url", ("endpoints", 0, "upstream", "url"), bad_upstreams),
    (
        "endpoints[0].upstream.proxy_protocol",
        ("endpoints", 0, "upstream", "proxy_protocol"),
        st.sampled_from([3, -1, "v2", "3", True, 1.0, [], {}]),
    ),
    (
        "endpoints[0].bindings",
        ("endpoints", 0, "bindings"),
        st.sampled_from([[], ["x"], "public", ["public", "internal"], [1]]),
    ),
    ("gateway.lisen", ("gateway", "lisen"), st.just([":8443"])),
    (
        "endpoints[0].traffic_policy.on_tcp_connect[0].name",
        ("endpoints", 0, "traffic_policy"),
        st.just(
            {
                "on_tcp_connect": [
                    {"name": tomllib.loads("d = 1979-05-27")["d"], "actions": [{"type": "deny"}]}
                ]
            }
        ),
    ),
]


def put(data: dict, path: tuple, value: object) -> None:
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@st.composite
def invalid_configs(draw) -> tuple[dict, str]:
    data, _ = draw(valid_configs())
    data["endpoints"][0].pop("traffic_policy", None)
    data["endpoints"][0].pop("bindings", None)
    key_path, path, values = draw(st.sampled_from(BAD_FIELDS))
    if key_path == "endpoints[0].bindings" and data["endpoints"][0]["url"].count(".internal"):
        data["endpoints"][0]["url"] = "tls://app.example.com"
    put(data, path, draw(values))
    return data, key_path


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(invalid_configs())
def test_one_invalid_value_is_a_config_error_at_its_key_path(case):
    data, key_path = case
    with pytest.raises(ConfigError) as info:
        load(data)
    problems = info.value.problems
    assert all(p.key_path and p.source == SOURCE for p in problems), problems
    assert key_path in [p.key_path for p in problems if not p.warning], problems


# -- garbage in: a config or a ConfigError, nothing else --------------------------------------

TOKENS = [
    "[gateway]",
    "[limits]",
    "[[endpoints]]",
    "[endpoints.upstream]",
    "listen",
    "workers",
    "name",
    "url",
    "upstream",
    "proxy_protocol",
    "traffic_policy",
    "on_tcp_connect",
    "actions",
    "type",
    " = ",
    "\n",
    '"',
    "'",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "=",
    '"tls://a.example.com"',
    '":8443"',
    "9443",
    "1979-05-27",
    "07:32:00",
    "nan",
    "-inf",
    "true",
    '"deny"',
    '"30s"',
    '"64KB"',
    "#",
    "\\u0000",
    '"""',
    "0x1F",
    "1e400",
]


@st.composite
def mutated_good_configs(draw) -> str:
    text = draw(st.sampled_from(GOOD_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 8))
        insert = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)))
        text = text[:at] + insert + text[at + cut :]
    return text


garbage = st.one_of(
    mutated_good_configs(),
    st.lists(st.sampled_from(TOKENS), max_size=40).map("".join),
    st.text(max_size=200),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage)
def test_garbage_text_gives_a_config_or_a_config_error(text):
    try:
        config, _ = _parse_text(text, SOURCE, Path(BASE_DIR))
    except ConfigError as error:
        assert error.problems and all(p.key_path for p in error.problems), error.problems
        return
    assert reload_dump(config) == config


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=64))
def test_bytes_that_are_not_utf8_are_a_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "tlsgate.toml"
    path.write_bytes(b"[gateway]\nworkers = 2\n# \xff" + data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [p.key_path for p in info.value.problems] == ["<toml>"]
