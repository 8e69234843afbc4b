"""`evaluate`: run a policy's ``on_tcp_connect`` rules for one connection, purely.

Called by the worker after the ClientHello has been routed to an endpoint (and again,
with ``resume``, after it carried out a pausing decision: see `model`).  No I/O, no
clock of its own (``now`` is passed), no global state: the rate limiter is passed in.

Rules run in order; a rule whose expressions are all true runs its actions in order.
An action may stop the evaluation (close, forward) or pause it (terminate-tls, and
forward-internal with ``on_error: continue``).  An expression that fails at run time
closes the connection with ``close_reason`` ``policy_error``: ngrok closes connections
on policy errors, and failing open would skip whatever the policy guards.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from tlsgate.policy.actions import EvalState, Stop
from tlsgate.policy.expr import Expr, ExprError
from tlsgate.policy.model import Decision, Policy, Resume
from tlsgate.policy.vars import empty_action_results

_DEFAULT_RESULTS = empty_action_results()["ngrok"]


def evaluate(
    policy: Policy,
    conn_vars: dict[str, Any] | Callable[[], dict[str, Any]],
    now: datetime,
    rate_limiter: Any = None,
    *,
    resume: Resume | None = None,
) -> Decision:
    """Decide what happens to one connection (see `model.Decision`).

    ``conn_vars`` comes from `vars.build_conn_vars`, or is a function that returns it:
    called only if something reads a variable. ``rate_limiter`` is a
    `ratelimit.SlidingWindowLimiter` (``None``: rate-limit actions are not enforced).
    """
    if resume is None:
        # Actions replace whole entries of actions.ngrok, never mutate them, so a
        # shallow copy of the shared defaults is enough.
        state = EvalState(
            policy, conn_vars, now, rate_limiter, {}, {"ngrok": dict(_DEFAULT_RESULTS)}
        )
        first_rule, first_action = 0, 0
    else:
        state = EvalState(
            policy, conn_vars, now, rate_limiter, dict(resume.vars),
            {"ngrok": dict(resume.actions["ngrok"])},
        )  # fmt: skip
        state.logs = list(resume.logs)
        state.ip_policy_decision = resume.ip_policy_decision
        state.matched_rules = list(resume.matched_rules)
        state.trace = list(resume.trace)
        state.tls_terminated = resume.tls_terminated
        # Mirrored when an expression reads actions.*: building conn.tls costs more than
        # the whole evaluation of a policy that never looks.
        state.mirror_tls = resume.tls_terminated
        first_rule, first_action = resume.rule_index, resume.action_index

    rules = policy.rules
    for r in range(first_rule, len(rules)):
        rule = rules[r]
        if r == first_rule and first_action > 0:
            start = first_action  # the rule matched before the pause
        else:
            try:
                if not _matches(rule.expressions, state):
                    continue
            except ExprError as e:
                return _error(state, f"rule {rule.label}: {e}")
            state.matched_rules.append(rule.label)
            start = 0
        for a in range(start, len(rule.actions)):
            try:
                stop = rule.actions[a].apply(state)
            except ExprError as e:
                where = f"rule {rule.label}: action {rule.actions[a].type_name}"
                return _error(state, f"{where}: {e}")
            if stop is not None:
                return _decision(state, stop, r, a)
    return _decision(state, None, len(rules), 0)


def _matches(expressions: tuple[Expr, ...], state: EvalState) -> bool:
    for expr in expressions:
        try:
            result = expr.run(state.env)
        except ExprError as e:
            raise ExprError(f"expression {expr.source!r}: {e}") from e
        if result is not True:
            if result is not False:
                raise ExprError(f"expression {expr.source!r} gave {result!r}, not a boolean")
            return False
    return True


def _decision(state: EvalState, stop: Stop | None, rule: int, action: int) -> Decision:
    resume = None
    if stop is not None and stop.resumable:
        resume = Resume(
            rule_index=rule,
            action_index=action + 1,
            vars=dict(state.vars),
            actions={"ngrok": dict(state.actions["ngrok"])},
            logs=tuple(state.logs),
            ip_policy_decision=state.ip_policy_decision,
            matched_rules=tuple(state.matched_rules),
            trace=tuple(state.trace),
            tls_terminated=state.tls_terminated or stop.outcome == "terminate_tls",
        )
    return Decision(
        outcome=stop.outcome if stop else "continue",
        close_reason=stop.close_reason if stop else None,
        forward=stop.forward if stop else None,
        terminate_tls=stop.terminate_tls if stop else None,
        resume=resume,
        logs=tuple(state.logs),
        ip_policy_decision=state.ip_policy_decision,
        vars=dict(state.vars),
        matched_rules=tuple(state.matched_rules),
        trace=tuple(state.trace),
    )


def _error(state: EvalState, message: str) -> Decision:
    state.trace.append(f"error: {message}")
    decision = _decision(state, Stop("close", close_reason="policy_error"), 0, 0)
    return Decision(**{**_fields(decision), "error": message})


def _fields(decision: Decision) -> dict[str, Any]:
    return {name: getattr(decision, name) for name in Decision.__dataclass_fields__}
