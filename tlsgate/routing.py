"""The routing table: which endpoint(s) serve a TLS server name on a listener port.

`RouteTable.build` turns the config's endpoints into two indexes, built once per config
generation and shared read-only by a worker's connections:

- public endpoints (``"public"`` in ``bindings``), found by SNI with `RouteTable.lookup`;
- internal endpoints (``"internal"`` in ``bindings``), never reachable by SNI, found by the
  host and port of their URL with `RouteTable.lookup_internal` (the traffic policy's
  ``forward-internal`` action).

Endpoints with other bindings are in neither index.

The table maps names to `Route` data only: no sockets, no counters, nothing a worker owns.
A later feature (agent tunnels) registers endpoints whose upstream is a tunnel held by one
worker; it builds a new table from `RouteTable.endpoints` plus its own endpoints.

Matching, most specific first (the most specific online endpoint wins, as in ngrok):

1. The exact host, then wildcards from the longest suffix to the shortest:
   for ``a.b.example.com`` the order is ``a.b.example.com``, ``*.b.example.com``,
   ``*.example.com``, ``*.com``. A wildcard matches any depth below its suffix but never
   the suffix itself: ``*.example.com`` does not match ``example.com``.
2. For one host pattern, a URL with the listener's port beats a port-less URL of the same
   host, because it names the listener; a URL with another port never matches.
   Host specificity comes first: an exact port-less URL beats a wildcard with the port.

A lookup is a few dict probes per label of the server name, not a scan of the endpoints:
it runs for every accepted connection.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from tlsgate.config.model import EndpointConfig

PUBLIC_BINDING = "public"
INTERNAL_BINDING = "internal"

_HostKey = tuple[str, int | None]
"""(host, port): a concrete host for exact URLs, the suffix after ``*.`` for wildcards."""


@dataclass(frozen=True, slots=True)
class Route:
    """The endpoints behind one URL: one endpoint, or a pool of them."""

    url: str
    """The URL every member shares, e.g. ``tls://app.example.com``."""
    members: tuple[EndpointConfig, ...]
    """More than one only for a pool, where every member has ``pooling_enabled``."""

    def pick_order(self, rng: random.Random) -> list[EndpointConfig]:
        """The members in the order to try them: a random one first, then the rest at random.

        A connection tries the first and fails over to the next when its upstream cannot be
        reached. Every member appears exactly once. ``rng`` is a `random.Random` (seeded in
        tests) or the `random` module itself; only its ``sample`` is used.
        """
        if len(self.members) == 1:
            # The common case, on every connection: no shuffle, no rng call.
            return [self.members[0]]
        return rng.sample(self.members, len(self.members))


@dataclass(frozen=True, slots=True)
class _HostIndex:
    exact: dict[_HostKey, Route] = field(default_factory=dict)
    wildcard: dict[_HostKey, Route] = field(default_factory=dict)

    def add(self, route: Route, host: str, port: int | None) -> None:
        if host.startswith("*."):
            index, key = self.wildcard, (host[2:], port)
        else:
            index, key = self.exact, (host, port)
        other = index.get(key)
        if other is not None:
            raise ValueError(
                f"endpoints with URLs {other.url!r} and {route.url!r} claim the same host and port"
            )
        index[key] = route

    def find(self, name: str, port: int | None) -> Route | None:
        """The most specific route for ``name``; ``port`` None matches port-less URLs only."""
        exact = self.exact
        wildcard = self.wildcard
        route = exact.get((name, port))
        if route is None and port is not None:
            route = exact.get((name, None))
        if route is not None:
            return route
        dot = name.find(".")
        while dot >= 0:
            suffix = name[dot + 1 :]
            route = wildcard.get((suffix, port))
            if route is None and port is not None:
                route = wildcard.get((suffix, None))
            if route is not None:
                return route
            dot = name.find(".", dot + 1)
        return None

    @property
    def routes(self) -> tuple[Route, ...]:
        return (*self.exact.values(), *self.wildcard.values())


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Public routes by SNI and internal routes by URL host; build with `RouteTable.build`."""

    endpoints: tuple[EndpointConfig, ...]
    """The endpoints the table was built from, in the order given."""
    _public: _HostIndex
    _internal: _HostIndex

    @classmethod
    def build(cls, endpoints: Iterable[EndpointConfig]) -> RouteTable:
        """Index the endpoints; `ValueError` when two share a URL without all pooling.

        The config loader reports pooling conflicts to the user with the file and key; this
        check is the table's own defence against being handed an inconsistent config.
        """
        endpoints = tuple(endpoints)
        indexes = {PUBLIC_BINDING: _HostIndex(), INTERNAL_BINDING: _HostIndex()}
        for binding, index in indexes.items():
            pools: dict[str, list[EndpointConfig]] = {}
            for endpoint in endpoints:
                if binding in endpoint.bindings:
                    pools.setdefault(endpoint.url, []).append(endpoint)
            for url, members in pools.items():
                _check_pool(url, binding, members)
                first = members[0]
                _check_host_pattern(first)
                index.add(Route(url, tuple(members)), first.host, first.port)
        return cls(endpoints, indexes[PUBLIC_BINDING], indexes[INTERNAL_BINDING])

    def lookup(self, server_name: str, listener_port: int) -> Route | None:
        """The public route for a normalised SNI (lower case, no trailing dot), or None."""
        if not server_name:
            return None
        return self._public.find(server_name, listener_port)

    def lookup_internal(self, host: str, port: int | None) -> Route | None:
        """The internal route for a ``forward-internal`` URL's host and port, or None.

        Same precedence as `lookup`; a URL without a port only finds port-less endpoints.
        """
        if not host:
            return None
        return self._internal.find(host, port)

    def forward_target(self, url: str) -> Route | None:
        """The internal route a ``forward-internal`` URL (``tls://HOST[:PORT]``) names, or None.

        The port is optional on either side; when both URLs carry one they must match.
        """
        host, port = split_forward_url(url)
        if not host:
            return None
        route = self._internal.find(host, port)
        if route is None and port is None:
            same_host = [r for r in self._internal.routes if r.members[0].host == host]
            if len(same_host) == 1:
                route = same_host[0]
        return route

    @property
    def routes(self) -> tuple[Route, ...]:
        """Every public route (exact hosts, then wildcards), e.g. for ``config show``."""
        return self._public.routes

    @property
    def internal_routes(self) -> tuple[Route, ...]:
        return self._internal.routes


def split_forward_url(url: str) -> tuple[str, int | None]:
    """``tls://db.internal:5432`` -> ("db.internal", 5432); ("", None) when malformed."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() != "tls":
        return "", None
    rest = rest.rstrip("/")
    host, colon, port_text = rest.rpartition(":")
    if not colon:
        host, port = rest, None
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        return "", None
    return host.lower().rstrip("."), port


def _check_pool(url: str, binding: str, members: list[EndpointConfig]) -> None:
    if len(members) > 1 and not all(m.pooling_enabled for m in members):
        names = ", ".join(repr(m.name) for m in members)
        raise ValueError(
            f"endpoints {names} share {binding} URL {url!r} but not all have "
            f"pooling_enabled; enable pooling on every one or give them different URLs"
        )


def _check_host_pattern(endpoint: EndpointConfig) -> None:
    host = endpoint.host
    pattern_rest = host[2:] if host.startswith("*.") else host
    if not pattern_rest or "*" in pattern_rest or host != host.lower():
        raise ValueError(
            f"endpoint {endpoint.name!r}: host {host!r} is not a lower-case host or a '*.' wildcard"
        )
