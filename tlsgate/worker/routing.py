"""What one worker generation needs to serve connections, built once from the config.

`Routing` bundles the route table (pure data, tlsgate/routing.py), the limits, one
upstream dialer per endpoint, the TLS terminator and the shared rate limiter. A reload
builds a new one in a new generation of workers; nothing here changes at run time.
Both connection handlers (tlsgate/worker/fastpath.py, tlsgate/worker/connection.py) ask
it the same questions: which endpoints serve a ClientHello (`Routing.route`), which pool
members a failed dial may fall over to, and what PROXY header goes first (`proxy_header`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tlsgate.config.model import Config, EndpointConfig, LimitsConfig
from tlsgate.events import ConnectionRecord
from tlsgate.proto import alerts
from tlsgate.proto.clienthello import ClientHello
from tlsgate.proto.ja4 import ja4_fingerprint
from tlsgate.proto.proxy_protocol import build_header
from tlsgate.proto.sni import normalise_sni
from tlsgate.routing import RouteTable
from tlsgate.worker.upstream import Dialer, TcpDialer


class ConnectionClosed(Exception):
    """Ends a connection before the relay; carries the close reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class RouteRefused(ConnectionClosed):
    """The ClientHello names no endpoint; ``alert`` is the TLS alert to send first, if any."""

    def __init__(self, reason: str, alert: int | None):
        super().__init__(reason)
        self.alert = alert


@dataclass(frozen=True, slots=True)
class Routing:
    table: RouteTable
    limits: LimitsConfig
    on_unknown_sni: str
    dialers: dict[str, Dialer]
    """Dialer per endpoint name."""
    endpoint_vars: dict[str, dict]
    """``endpoint.*`` policy variables per endpoint name (static, so built once)."""
    terminator: Any = None
    """`tlsgate.worker.termination.Terminator` (built lazily: it imports pyOpenSSL)."""
    rate_limiter: Any = None
    plain_terminations: dict[str, Any] = field(default_factory=dict)
    """Endpoint name -> `TerminateTls`, for endpoints whose policy only terminates TLS
    (`tlsgate.policy.terminate.only_terminates`): no evaluation per connection."""

    @classmethod
    def build(cls, config: Config, rate_limiter: Any = None, terminator: Any = None) -> Routing:
        from tlsgate.policy.terminate import only_terminates
        from tlsgate.policy.vars import build_endpoint_vars

        endpoints = config.endpoints
        dialers: dict[str, Dialer] = {ep.name: TcpDialer(ep.upstream.address) for ep in endpoints}
        listen_ports = sorted({a.port for a in config.gateway.listen})
        endpoint_vars = {
            ep.name: build_endpoint_vars(
                id=f"ep_{ep.name}",
                name=ep.name,
                url=ep.url,
                host=ep.host,
                port=ep.port if ep.port is not None else (listen_ports[0] if listen_ports else 0),
            )
            for ep in endpoints
        }
        plain_terminations = {
            ep.name: decision
            for ep in endpoints
            if (decision := only_terminates(ep.traffic_policy)) is not None
        }
        return cls(
            RouteTable.build(endpoints),
            config.limits,
            config.gateway.on_unknown_sni,
            dialers,
            endpoint_vars,
            terminator,
            rate_limiter,
            plain_terminations,
        )

    def pool_of(self, endpoint: EndpointConfig) -> list[EndpointConfig]:
        """The members of the route `endpoint` belongs to, `endpoint` first."""
        for route in (*self.table.routes, *self.table.internal_routes):
            if endpoint in route.members:
                return [endpoint] + [m for m in route.members if m is not endpoint]
        return [endpoint]

    def route(self, record: ConnectionRecord, hello: ClientHello) -> list[EndpointConfig]:
        """The endpoints to try for ``hello``, chosen one first; fills the record's SNI,
        JA4 and endpoint. Raises `RouteRefused` when no endpoint serves the name."""
        record.ja4_fingerprint = ja4_fingerprint(hello)
        sni = normalise_sni(hello.server_name)
        alert = alerts.UNRECOGNIZED_NAME if self.on_unknown_sni == "alert" else None
        if sni is None:
            raise RouteRefused("no_sni", alert)
        record.server_name = sni
        route = self.table.lookup(sni, record.server_port)
        if route is None:
            raise RouteRefused("unknown_sni", alert)
        record.endpoint_url = route.url
        members = route.pick_order(random)
        record.endpoint_name = members[0].name
        return members

    def failover_order(
        self, members: list[EndpointConfig], chosen: EndpointConfig
    ) -> list[EndpointConfig]:
        """``chosen``, then the pool members a failed dial may fall over to: those with the
        same policy (the buffered ClientHello is replayed, so retrying is safe)."""
        if len(members) == 1:  # the usual endpoint: no pool
            return [chosen]
        return [chosen] + [m for m in members if m is not chosen and self.same_policy(m, chosen)]

    @staticmethod
    def same_policy(a: EndpointConfig, b: EndpointConfig) -> bool:
        """Whether failing over from a to b keeps the policy decision valid."""
        return (a.traffic_policy_json, a.traffic_policy_file) == (
            b.traffic_policy_json,
            b.traffic_policy_file,
        )


def proxy_header(version: int, record: ConnectionRecord, alpn: bytes | None = None) -> bytes:
    """The PROXY protocol header telling the upstream who the client is (and, v2, the SNI)."""
    return build_header(
        version,
        (record.client_ip, record.client_port),
        (record.server_ip, record.server_port),
        authority=record.server_name,
        alpn=alpn,
    )


def build_routing(config: Config) -> Routing:
    """The worker's `Routing` for ``config``: the terminator only if some endpoint terminates
    (it loads pyOpenSSL), and the rate limiter shared by every worker of the gateway."""
    from tlsgate.config.termination import terminate_actions

    terminator = None
    if any(terminate_actions(ep.traffic_policy) for ep in config.endpoints):
        from tlsgate.worker.termination import Terminator

        terminator = Terminator(config)
    limiter = None
    if any(_has_rate_limit(ep.traffic_policy) for ep in config.endpoints):
        from tlsgate.worker.sharedlimit import TABLE_NAME, SharedRateLimiter

        # A file-backed table every worker (of every generation) maps: the limits hold for
        # the whole gateway, not once per worker. See docs/rate-limit.md.
        limiter = SharedRateLimiter(config.gateway.state_dir / TABLE_NAME)
    return Routing.build(config, limiter, terminator)


def _has_rate_limit(policy) -> bool:
    if policy is None:
        return False
    return any(a.type_name == "rate-limit" for rule in policy.rules for a in rule.actions)
