"""Load-time checks of ``forward-internal``: static targets must exist, and must not loop.

A static URL (no ``${...}``) that names no internal endpoint is an error, as is a
cycle of static forwards (a -> b.internal -> a ...); interpolated URLs can only be
resolved per connection, where the worker stops loops with a depth limit.
"""

from __future__ import annotations

from tlsgate.config.model import EndpointConfig
from tlsgate.errors import Problems
from tlsgate.routing import RouteTable

#: Hops a connection may take through forward-internal before the worker gives up.
MAX_FORWARD_DEPTH = 8


def check_forwards(endpoints: list[EndpointConfig], problems: Problems) -> None:
    """Report bad static forwards at ``<key_path>.url``: a forward's key_path already
    ends in its action's ``.config``."""
    try:
        table = RouteTable.build(endpoints)
    except ValueError:
        return  # check_endpoints already reported the conflict with its file and key
    edges: dict[str, list[tuple[str, object]]] = {}
    for endpoint in endpoints:
        policy = endpoint.traffic_policy
        if policy is None:
            continue
        for forward in policy.static_forward_urls():
            route = table.forward_target(forward.url)
            if route is None:
                problems.error(
                    forward.source,
                    f"{forward.key_path}.url",
                    f"{forward.url} names no internal endpoint; an internal endpoint has "
                    'bindings = ["internal"] and a URL such as tls://app.internal',
                )
                continue
            edges.setdefault(endpoint.name, []).extend((m.name, forward) for m in route.members)
    _report_loops(edges, problems)


def _report_loops(edges: dict[str, list[tuple[str, object]]], problems: Problems) -> None:
    reported: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for target, forward in edges.get(name, ()):
            if target in path:
                loop = path[path.index(target) :] + [target]
                key = "->".join(sorted(set(loop)))
                if key not in reported:
                    reported.add(key)
                    problems.error(
                        forward.source,
                        f"{forward.key_path}.url",
                        "forward-internal loop: " + " -> ".join(loop),
                    )
                continue
            if len(path) < MAX_FORWARD_DEPTH:
                visit(target, path + [target])

    for start in edges:
        visit(start, [start])
