"""Tests for tlsgate.routing: precedence, bindings, pools and failover order."""

from __future__ import annotations

import itertools
import random

import pytest

from tlsgate.config.model import EndpointConfig, HostPort, UpstreamConfig
from tlsgate.routing import Route, RouteTable


def endpoint(
    name: str,
    url: str,
    *,
    bindings: tuple[str, ...] = ("public",),
    pooling: bool = False,
    upstream_port: int = 9000,
) -> EndpointConfig:
    """An endpoint as the config loader would produce it from ``tls://host[:port]``."""
    host, _, port = url.removeprefix("tls://").partition(":")
    return EndpointConfig(
        name=name,
        url=url,
        host=host,
        port=int(port) if port else None,
        upstream=UpstreamConfig(HostPort("127.0.0.1", upstream_port)),
        bindings=bindings,
        pooling_enabled=pooling,
    )


ENDPOINTS = [
    endpoint("app", "tls://app.example.com"),
    endpoint("app-8443", "tls://app.example.com:8443"),
    endpoint("www", "tls://www.example.com"),
    endpoint("wild", "tls://*.example.com"),
    endpoint("wild-8443", "tls://*.example.com:8443"),
    endpoint("deep-wild", "tls://*.deep.example.com"),
    endpoint("org-443", "tls://example.org:443"),
    endpoint("svc", "tls://svc.internal:12345", bindings=("internal",)),
    endpoint("db", "tls://db.internal", bindings=("internal",)),
    endpoint("any-internal", "tls://*.internal:7000", bindings=("internal",)),
    endpoint("both", "tls://both.example.net", bindings=("public", "internal")),
    endpoint("k8s", "tls://k8s.example.net", bindings=("kubernetes",)),
]


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable.build(ENDPOINTS)


def names(route: Route | None) -> list[str] | None:
    return None if route is None else [m.name for m in route.members]


@pytest.mark.parametrize(
    "server_name,port,expected",
    [
        ("app.example.com", 443, "app"),  # exact host
        ("app.example.com", 8443, "app-8443"),  # same host, the listener's port wins
        ("www.example.com", 8443, "www"),  # exact port-less beats a wildcard with the port
        ("x.example.com", 443, "wild"),
        ("x.y.z.example.com", 443, "wild"),  # any depth
        ("x.example.com", 8443, "wild-8443"),
        ("x.deep.example.com", 443, "deep-wild"),  # longest suffix wins
        ("a.b.deep.example.com", 443, "deep-wild"),
        ("x.deep.example.com", 8443, "deep-wild"),  # deeper wildcard beats the port
        ("deep.example.com", 443, "wild"),  # apex of *.deep falls to *.example.com
        ("example.com", 443, None),  # a wildcard never matches its apex
        ("example.org", 443, "org-443"),
        ("example.org", 8443, None),  # a URL port only matches that listener
        ("www.example.org", 443, None),
        ("unknown.test", 443, None),
        ("com", 443, None),
        ("", 443, None),
        ("svc.internal", 12345, None),  # internal endpoints are not routable by SNI
        ("db.internal", 443, None),
        ("x.internal", 7000, None),
        ("both.example.net", 443, "both"),
        ("k8s.example.net", 443, None),  # bindings other than public/internal: unrouted
    ],
)
def test_lookup_precedence(table, server_name, port, expected):
    assert names(table.lookup(server_name, port)) == (None if expected is None else [expected])


@pytest.mark.parametrize(
    "host,port,expected",
    [
        ("svc.internal", 12345, "svc"),
        ("svc.internal", 12346, None),
        ("svc.internal", None, None),  # a port-less URL does not find a port-specific one
        ("db.internal", 5432, "db"),
        ("db.internal", None, "db"),
        ("x.internal", 7000, "any-internal"),
        ("x.y.internal", 7000, "any-internal"),
        ("svc.internal", 7000, "any-internal"),
        ("internal", 7000, None),
        ("both.example.net", 443, "both"),
        ("app.example.com", 443, None),  # public-only endpoints are not internal
        ("k8s.example.net", 443, None),
        ("", 443, None),
    ],
)
def test_lookup_internal(table, host, port, expected):
    assert names(table.lookup_internal(host, port)) == (None if expected is None else [expected])


def test_route_carries_the_url(table):
    route = table.lookup("x.example.com", 443)
    assert route.url == "tls://*.example.com"
    assert route.members == (ENDPOINTS[3],)


def test_routes_lists_each_public_route_once(table):
    public = [e for e in ENDPOINTS if "public" in e.bindings]
    assert sorted(r.url for r in table.routes) == sorted(e.url for e in public)
    internal = [e for e in ENDPOINTS if "internal" in e.bindings]
    assert sorted(r.url for r in table.internal_routes) == sorted(e.url for e in internal)


def test_a_new_table_can_extend_the_endpoints(table):
    tunnel = endpoint("tunnel", "tls://tunnel.example.com")
    extended = RouteTable.build((*table.endpoints, tunnel))
    assert names(extended.lookup("tunnel.example.com", 443)) == ["tunnel"]
    assert table.lookup("tunnel.example.com", 443).url == "tls://*.example.com"


def test_many_endpoints_still_find_the_right_one():
    many = [endpoint(f"e{i}", f"tls://h{i}.example.com") for i in range(5000)]
    many.append(endpoint("wild", "tls://*.sub.example.com"))
    table = RouteTable.build(many)
    assert names(table.lookup("h4321.example.com", 443)) == ["e4321"]
    assert names(table.lookup("h4321.sub.example.com", 443)) == ["wild"]
    assert table.lookup("h5000.example.com", 443) is None


# --- pools ---------------------------------------------------------------------------


def pool(size: int, url: str = "tls://pool.example.com", **kwargs) -> list[EndpointConfig]:
    return [
        endpoint(f"m{i}", url, pooling=True, upstream_port=9000 + i, **kwargs) for i in range(size)
    ]


def test_a_pool_is_one_route_with_every_member():
    members = pool(3)
    table = RouteTable.build(members)
    route = table.lookup("pool.example.com", 443)
    assert route.members == tuple(members)
    assert len(table.routes) == 1


def test_pick_order_covers_every_member_exactly_once():
    route = RouteTable.build(pool(5)).lookup("pool.example.com", 443)
    for seed in range(50):
        order = route.pick_order(random.Random(seed))
        assert sorted(m.name for m in order) == [f"m{i}" for i in range(5)]


def test_pick_order_is_random_and_reproducible_with_a_seed():
    route = RouteTable.build(pool(3)).lookup("pool.example.com", 443)
    orders = {tuple(m.name for m in route.pick_order(random.Random(seed))) for seed in range(200)}
    assert orders == set(itertools.permutations(["m0", "m1", "m2"]))
    first = [route.pick_order(random.Random(7)) for _ in range(2)]
    assert first[0] == first[1]


def test_pick_order_of_a_single_member_does_not_touch_the_rng():
    class NoRandom(random.Random):
        def random(self):  # every Random method ends up here or in getrandbits
            raise AssertionError("rng used")

        def getrandbits(self, k):
            raise AssertionError("rng used")

    route = RouteTable.build([endpoint("one", "tls://one.example.com")]).lookup(
        "one.example.com", 443
    )
    assert route.pick_order(NoRandom()) == [route.members[0]]
    with pytest.raises(AssertionError):
        RouteTable.build(pool(2)).lookup("pool.example.com", 443).pick_order(NoRandom())


def test_wildcard_and_internal_pools():
    table = RouteTable.build(
        pool(2, "tls://*.pool.example.com") + pool(2, "tls://p.internal:1", bindings=("internal",))
    )
    assert len(table.lookup("a.pool.example.com", 443).members) == 2
    assert len(table.lookup_internal("p.internal", 1).members) == 2


@pytest.mark.parametrize("pooled", [(True, False), (False, True), (False, False)])
def test_same_url_without_pooling_on_every_member_is_an_error(pooled):
    members = [
        endpoint("a", "tls://x.example.com", pooling=pooled[0]),
        endpoint("b", "tls://x.example.com", pooling=pooled[1]),
    ]
    with pytest.raises(ValueError, match=r"'a', 'b'.*pooling_enabled"):
        RouteTable.build(members)


def test_same_url_on_different_bindings_is_no_pool():
    table = RouteTable.build(
        [
            endpoint("pub", "tls://x.example.com"),
            endpoint("int", "tls://x.example.com", bindings=("internal",)),
        ]
    )
    assert names(table.lookup("x.example.com", 443)) == ["pub"]
    assert names(table.lookup_internal("x.example.com", 443)) == ["int"]


def test_two_urls_for_one_host_and_port_are_an_error():
    same = endpoint("b", "tls://x.example.com")
    spelled_differently = EndpointConfig(
        name="a",
        url="tls://X.example.com",
        host="x.example.com",
        port=None,
        upstream=same.upstream,
    )
    with pytest.raises(ValueError, match="same host and port"):
        RouteTable.build([spelled_differently, same])


@pytest.mark.parametrize(
    "host", ["app.*.example.com", "*example.com", "*.*.example.com", "*.", "App.example.com"]
)
def test_bad_host_patterns_are_an_error(host):
    bad = EndpointConfig(
        name="bad",
        url=f"tls://{host}",
        host=host,
        port=None,
        upstream=UpstreamConfig(HostPort("127.0.0.1", 9000)),
    )
    with pytest.raises(ValueError, match="'bad'"):
        RouteTable.build([bad])
