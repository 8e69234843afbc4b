"""Config and traffic-policy documents built from fuzzer bytes, guided by their schemas.

Random bytes almost never make a TOML file with a valid ``[[endpoints]]`` entry, so
the config and policy targets also build dicts from a `ByteSource`: known keys with
values that are mostly plausible for the key (taken from a list of valid and
edge-case values) and now and then of any type, plus the odd unknown key. Dicts are
what the CLI quick mode and the endpoint API hand to ``parse_config`` (from flags
and JSON), so ``None`` and very large integers are in the mix too.
"""

from __future__ import annotations

import datetime
import math

from .bytesource import ByteSource

DURATIONS = (
    "30s",
    "1m30s",
    "250ms",
    "1.5h",
    ".5s",
    "1.s",
    "8760h",
    "8761h",
    "0s",
    "5",
    " 1 s ",
    "1e3s",
    3,
    0.001,
    1e-9,
    0,
    -1,
    31536000,
    31536001,
    math.inf,
    math.nan,
    2**70,
)
SIZES = (
    "64KB",
    "1MB",
    "512B",
    "16MiB",
    " 1 kb ",
    "1GB",
    "0KB",
    "16777215",
    1,
    0,
    -5,
    2**24,
    2**24 - 1,
    2**64,
)
ADDRESSES = (
    ":8443",
    "127.0.0.1:8443",
    "[::1]:8443",
    "localhost:9443",
    "0.0.0.0:8443",
    "[::]:8443",
    "1.2.3.4:0",
    "[fe80::1%eth0]:1",
    "::1:8443",
    "[::ffff:1.2.3.4]:8443",
    "127.0.0.1:65536",
    "example.com:443",
    8443,
    "",
)
PATHS = (
    "run",
    "/tmp/tlsgate-fuzz/state",
    "~/x",
    "",
    "a\0b",
    "x" * 120,
    "../up",
    ".",
    "cert.pem",
    "key.pem",
    "policy.yml",
    "missing.pem",
)
URLS = (
    "tls://app.example.com",
    "tls://*.example.com:8443",
    "tls://db.internal",
    "tls://[::1]",
    "tls://1.2.3.4",
    "https://x.example",
    "tls://Ex.COM.",
    "tls://bücher.de",
    "tls://*.*.com",
    "tls://*",
    "tls://a..b",
    "tls://a.example.com:0",
    "tls://a/b",
    "TLS://A.EXAMPLE.COM:9443",
    "tls://" + "a" * 64 + ".com",
    "tls://app.internal:5432",
    "tls://xn--bcher-kva.de",
)
UPSTREAMS = (
    "127.0.0.1:9443",
    9443,
    "9443",
    "tcp://backend.example.net:443",
    "tls://h.example:1",
    "[::1]:1",
    "h",
    "udp://h:1",
    "tcp://[::1]:2/",
    "host.example:99999",
    0,
    "tls://[::1]:3",
)
NAMES = ("app", "wild", "db.internal", "a" * 64, "a" * 65, "", "sp ace", "x.y-z_1")
HOSTS = ("app.example.com", "*.example.com", "1.2.3.4", "", "UPPER.example.", "a..b")
EXPRESSIONS = (
    "true",
    "1",
    "conn.client_ip == '1.2.3.4'",
    "conn.tls.sni.endsWith('.com')",
    "inCidrRange(conn.client_ip, '10.0.0.0/8')",
    "conn.nope",
    "(",
    "size(vars) > 0",
    "conn.geo.country_code in ['US']",
    "'a' + 1",
    "${x}",
    "",
)
TEMPLATES = (
    "${conn.client_ip}",
    "plain",
    "${",
    "${conn.nope}",
    "${1 + }",
    "cert.pem",
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
)
ACTION_TYPES = (
    "deny",
    "close-connection",
    "log",
    "restrict-ips",
    "set-vars",
    "forward-internal",
    "rate-limit",
    "terminate-tls",
    "custom-response",
    "",
)
CIDRS = ("10.0.0.0/8", "192.0.2.1", "::/0", "300.1.1.1/8", "10.0.0.0/33", "fe80::%eth0/64", "")
EXTRA_KEYS = ("protocol", "agent_tls_termination", "lisen", "unknown", "on_http_request", "x y")

SCALARS: tuple[object, ...] = (
    "",
    "x",
    "true",
    0,
    1,
    -1,
    2**63 - 1,
    2**63,
    1.5,
    math.nan,
    math.inf,
    True,
    False,
    None,
    datetime.date(1979, 5, 27),
    datetime.datetime(1979, 5, 27, 7, 32),
    datetime.time(7, 32),
)


def any_value(source: ByteSource, depth: int = 0) -> object:
    """A value of any JSON or TOML type; containers only a few levels deep."""
    kind = source.int_in(0, 4 if depth < 3 else 2)
    if kind == 0:
        return source.pick(SCALARS)
    if kind == 1:
        return source.text(40)
    if kind == 2:
        return source.int_in(-(2**16), 2**16)
    if kind == 3:
        return [any_value(source, depth + 1) for _ in range(source.int_in(0, 3))]
    return {
        source.pick(EXTRA_KEYS + NAMES): any_value(source, depth + 1)
        for _ in range(source.int_in(0, 3))
    }


def plausible(source: ByteSource, options: tuple[object, ...]) -> object:
    """Mostly one of ``options``; one time in eight, random text or any value."""
    roll = source.int_in(0, 7)
    if roll == 0:
        return any_value(source)
    if roll == 1:
        return source.text(30)
    return source.pick(options)


def table(source: ByteSource, schema: dict[str, object]) -> dict[str, object]:
    """Some of ``schema``'s keys (values from their generators), maybe one unknown key."""
    result: dict[str, object] = {}
    for key, make in schema.items():
        if source.boolean():
            result[key] = make(source) if callable(make) else plausible(source, make)
    if source.int_in(0, 15) == 0:
        result[source.pick(EXTRA_KEYS)] = any_value(source)
    return result


def array(source: ByteSource, make, max_items: int) -> list[object]:
    return [make(source) for _ in range(source.int_in(0, max_items))]


# -- traffic policy ------------------------------------------------------------------------

_ACTION_CONFIGS: dict[str, dict[str, object]] = {
    "restrict-ips": {
        "enforce": (True, False, "yes"),
        "allow": lambda s: array(s, _cidr, 3),
        "deny": lambda s: array(s, _cidr, 3),
        "ip_policies": ("ipp_1", ["ipp_1"]),
    },
    "log": {"metadata": lambda s: any_value(s, 1)},
    "set-vars": {"vars": lambda s: array(s, lambda t: {t.pick(NAMES): t.pick(TEMPLATES)}, 3)},
    "forward-internal": {
        "url": (
            "tls://db.internal",
            "tls://${conn.tls.sni}.internal",
            "https://x",
            "tls://missing.internal",
        ),
        "on_error": ("halt", "continue", "retry"),
    },
    "rate-limit": {
        "name": NAMES,
        "algorithm": ("sliding_window", "token_bucket"),
        "capacity": (1, 10, 0, -1, 2**40),
        "rate": DURATIONS,
        "bucket_key": lambda s: array(s, lambda t: t.pick(TEMPLATES), 2),
    },
    "terminate-tls": {
        "min_version": ("1.2", "1.3", "1.1"),
        "max_version": ("1.2", "1.3", "1.1"),
        "server_certificate": TEMPLATES,
        "server_private_key": TEMPLATES + ("key.pem",),
        "mutual_tls_certificate_authorities": lambda s: array(s, _template, 2),
        "mutual_tls_verification_strategy": ("require-and-verify", "request", "x"),
        "alpn": lambda s: array(s, lambda t: t.pick(("h2", "http/1.1", "")), 2),
    },
}


def _cidr(source: ByteSource) -> object:
    return plausible(source, CIDRS)


def _template(source: ByteSource) -> object:
    return plausible(source, TEMPLATES)


def _action(source: ByteSource) -> dict[str, object]:
    action_type = plausible(source, ACTION_TYPES)
    schema = _ACTION_CONFIGS.get(action_type, {}) if isinstance(action_type, str) else {}
    action: dict[str, object] = {"type": action_type}
    if source.int_in(0, 3):
        action["config"] = table(source, schema)
    return action


def _rule(source: ByteSource) -> dict[str, object]:
    return table(
        source,
        {
            "name": NAMES,
            "expressions": lambda s: array(s, lambda t: plausible(t, EXPRESSIONS), 3),
            "actions": lambda s: array(s, _action, 3),
        },
    )


def policy_document(source: ByteSource) -> dict[str, object]:
    """A traffic-policy map: mostly ``on_tcp_connect`` rules, sometimes an HTTP phase."""
    doc: dict[str, object] = {"on_tcp_connect": array(source, _rule, 3)}
    if source.int_in(0, 7) == 0:
        doc[source.pick(("on_http_request", "inbound", "on_tcp_close"))] = array(source, _rule, 1)
    return doc


# -- config --------------------------------------------------------------------------------

_DURATION_KEYS = (
    "client_hello_timeout",
    "handshake_timeout",
    "client_idle_timeout",
    "server_idle_timeout",
    "upstream_connect_timeout",
)
_UPSTREAM = {
    "url": UPSTREAMS,
    "proxy_protocol": (0, 1, 2, "", "1", "2", 3, True, "3"),
    "tls_verify": (True, False, "no"),
    "tls_verify_cas": PATHS,
    "server_name": HOSTS,
}


def _endpoint(source: ByteSource) -> dict[str, object]:
    return table(
        source,
        {
            "name": NAMES,
            "url": URLS,
            "description": ("", "the app", "d" * 256),
            "metadata": ("", '{"team": "web"}'),
            "bindings": (["public"], ["internal"], [], ["public", "internal"], ["other"], "public"),
            "pooling_enabled": (True, False),
            "upstream": lambda s: table(s, _UPSTREAM) if s.int_in(0, 7) else any_value(s),
            "traffic_policy": lambda s: policy_document(s) if s.int_in(0, 7) else any_value(s),
            "traffic_policy_file": PATHS,
        },
    )


def config_document(source: ByteSource) -> dict[str, object]:
    """A config dict in the shape tomllib gives for a tlsgate.toml."""
    return table(
        source,
        {
            "gateway": lambda s: table(
                s,
                {
                    "listen": lambda t: array(t, lambda u: plausible(u, ADDRESSES), 3),
                    "workers": (1, 2, 256, 257, 0, "2"),
                    "state_dir": PATHS,
                    "control_socket": PATHS,
                    "on_unknown_sni": ("alert", "close", "drop"),
                    "drain_timeout": DURATIONS,
                },
            ),
            "limits": lambda s: table(
                s,
                {
                    **{key: DURATIONS for key in _DURATION_KEYS},
                    "max_handshake_message": SIZES,
                    "max_certificate_message": SIZES,
                },
            ),
            "events": lambda s: table(s, {"file": PATHS + ("-",)}),
            "metrics": lambda s: table(s, {"listen": ADDRESSES}),
            "tls": lambda s: table(
                s,
                {
                    "auto_certificates": ("local-ca", "off", "on"),
                    "session_resumption": (True, False),
                },
            ),
            "certificates": lambda s: array(
                s, lambda t: table(t, {"cert": PATHS, "key": PATHS}), 2
            ),
            "endpoints": lambda s: array(s, _endpoint, 4),
        },
    )
