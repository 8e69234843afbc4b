"""What one worker generation needs to serve connections, built once from the config.

`Routing` bundles the route table (pure data, tlsgate/routing.py), the limits, one
upstream dialer per endpoint, the TLS terminator and the shared rate limiter. A reload
builds a new one in a new generation of workers; nothing here changes at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tlsgate.config.model import Config, EndpointConfig, LimitsConfig
from tlsgate.routing import RouteTable
from tlsgate.worker.upstream import Dialer, TcpDialer


class ConnectionClosed(Exception):
    """Ends a connection before the relay; carries the close reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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

    @classmethod
    def build(cls, config: Config, rate_limiter: Any = None, terminator: Any = None) -> Routing:
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
        return cls(
            RouteTable.build(endpoints),
            config.limits,
            config.gateway.on_unknown_sni,
            dialers,
            endpoint_vars,
            terminator,
            rate_limiter,
        )

    def pool_of(self, endpoint: EndpointConfig) -> list[EndpointConfig]:
        """The members of the route `endpoint` belongs to, `endpoint` first."""
        for route in (*self.table.routes, *self.table.internal_routes):
            if endpoint in route.members:
                return [endpoint] + [m for m in route.members if m is not endpoint]
        return [endpoint]

    @staticmethod
    def same_policy(a: EndpointConfig, b: EndpointConfig) -> bool:
        """Whether failing over from a to b keeps the policy decision valid."""
        return (a.traffic_policy_json, a.traffic_policy_file) == (
            b.traffic_policy_json,
            b.traffic_policy_file,
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
