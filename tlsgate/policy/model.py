"""What a loaded traffic policy is, and what evaluating it decides.

`load.py` builds a frozen `Policy` (rules of compiled expressions and parsed actions)
once per config load; `engine.evaluate` reads it per connection and returns a frozen
`Decision` that the worker carries out.  Nothing here touches sockets.

The worker's loop around `evaluate`::

    decision = evaluate(policy, conn_vars, now, limiter)
    if decision.outcome == "terminate_tls":      # non-terminating action: pause here
        ...handshake with decision.terminate_tls, then rebuild conn_vars with conn.tls...
        decision = evaluate(policy, conn_vars_with_tls, now, limiter, resume=decision.resume)
    if decision.outcome == "forward":             # hand over to decision.forward.url
        ...if the internal endpoint is missing or fails and decision.resume is set
        (on_error: continue), evaluate(..., resume=decision.resume.with_forward_error(...))
    "close" -> close without an alert (decision.close_reason); "continue" -> upstream.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tlsgate.policy.actions import Action
    from tlsgate.policy.expr import Expr

PHASE = "on_tcp_connect"

Outcome = Literal["continue", "close", "forward", "terminate_tls"]
CloseReason = Literal["ip_restricted", "policy_denied", "rate_limited", "policy_error"]
OnError = Literal["halt", "continue"]


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    name: str
    """The rule's ``name``, or ``""``; `label` is what messages show."""
    expressions: tuple[Expr, ...]
    actions: tuple[Action, ...]

    @property
    def label(self) -> str:
        return self.name or f"#{self.index}"


@dataclass(frozen=True, slots=True)
class StaticForward:
    """A ``forward-internal`` URL known at load, for the config loader to check."""

    source: str
    key_path: str
    url: str


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    """The file the policy text is in (the config file when inline)."""
    key_path: str
    """Where the policy sits in that file: ``""`` for a policy file,
    ``endpoints[0].traffic_policy`` when inline."""
    rules: tuple[Rule, ...] = ()
    functions: frozenset[str] = frozenset()
    """CEL functions the policy calls; only these are registered per connection."""
    static_paths: Any = None
    """`expr.PathTree` of the variables the policy reads; ``None`` = pass them all."""
    reads_dynamic: bool = False
    """Whether any expression reads ``vars`` or ``actions`` (served by a resolver)."""

    def static_forward_urls(self) -> tuple[StaticForward, ...]:
        from tlsgate.policy.action_types import ForwardInternal

        found = []
        for rule in self.rules:
            for action in rule.actions:
                if isinstance(action, ForwardInternal) and action.url.is_static:
                    found.append(StaticForward(self.source, action.key_path, action.url.source))
        return tuple(found)

    @property
    def is_empty(self) -> bool:
        return not self.rules


@dataclass(frozen=True, slots=True)
class TerminateTls:
    """A ``terminate-tls`` decision with its config resolved (PEM text or file paths)."""

    min_version: str = "1.2"
    max_version: str = "1.3"
    server_certificate: str | None = None
    server_private_key: str | None = None
    mutual_tls_certificate_authorities: tuple[str, ...] = ()
    mutual_tls_verification_strategy: str = "require-and-verify"
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Forward:
    url: str
    on_error: OnError = "halt"


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a paused evaluation goes on, and the state it had reached."""

    rule_index: int
    action_index: int
    """The next action to run in ``rule_index`` (its expressions already matched)."""
    vars: dict[str, Any]
    actions: dict[str, Any]
    logs: tuple[dict[str, Any], ...]
    ip_policy_decision: str | None
    matched_rules: tuple[str, ...]
    trace: tuple[str, ...]
    tls_terminated: bool = False

    def with_forward_error(self, url: str, code: str, message: str) -> Resume:
        """For ``on_error: continue``: later rules see ``actions.ngrok.forward_internal.*``."""
        actions = copy.deepcopy(self.actions)
        actions["ngrok"]["forward_internal"] = {
            "url": url,
            "error": {"code": code, "message": message},
        }
        return replace(self, actions=actions)


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    close_reason: CloseReason | None = None
    forward: Forward | None = None
    terminate_tls: TerminateTls | None = None
    resume: Resume | None = None
    """Set when the worker must act and then call `evaluate` again (see module doc)."""
    logs: tuple[dict[str, Any], ...] = ()
    """Evaluated ``log`` metadata maps, for the event's ``traffic_policy.logs``."""
    ip_policy_decision: str | None = None
    """``allow`` / ``block`` from the last ``restrict-ips`` that ran, else ``None``."""
    vars: dict[str, Any] = field(default_factory=dict)
    matched_rules: tuple[str, ...] = ()
    trace: tuple[str, ...] = ()
    """One line per action run, for ``tlsgate policy test``."""
    error: str | None = None
    """With ``close_reason == "policy_error"``: which expression failed and why."""
