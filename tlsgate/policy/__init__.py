"""ngrok-format traffic policies for TLS endpoints: the pure core (no sockets, no gevent).

`load` parses and validates documents (compiling every CEL expression once),
`engine.evaluate` decides per connection, `vars.build_conn_vars` builds its input,
`ratelimit` holds the sliding-window limiter.  See `model` for how the worker drives
`evaluate` around ``terminate-tls`` and ``forward-internal``.
"""

from tlsgate.policy.engine import evaluate
from tlsgate.policy.load import load_policy_file, parse_policy
from tlsgate.policy.model import Decision, Policy, Resume, TerminateTls
from tlsgate.policy.vars import build_conn_vars, build_endpoint_vars

__all__ = [
    "Decision",
    "Policy",
    "Resume",
    "TerminateTls",
    "build_conn_vars",
    "build_endpoint_vars",
    "evaluate",
    "load_policy_file",
    "parse_policy",
]
