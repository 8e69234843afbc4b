"""Loading traffic-policy documents: files (YAML, JSON, TOML) and already-parsed maps.

Called by the config loader for ``[endpoints.traffic_policy]`` (inline) and
``traffic_policy_file``, and by the CLI's ``--traffic-policy-file``.  Validates with
ngrok's rules for TLS endpoints and reports every problem as
``FILE: key.path: what is wrong`` into a `tlsgate.errors.Problems`; compiles and
type-checks every CEL expression here, once, so that evaluation never compiles.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

import tlsgate.policy.action_types  # noqa: F401  (registers the action types)
import tlsgate.policy.terminate  # noqa: F401
from tlsgate.errors import Problems
from tlsgate.policy.actions import Action, ParseContext, type_label, unknown_type_message
from tlsgate.policy.expr import (
    UNKNOWN,
    EvalEnv,
    Expr,
    ExprError,
    PathTree,
    Template,
    compile_expression,
)
from tlsgate.policy.model import PHASE, Policy, Rule
from tlsgate.policy.vars import sample_vars

_HTTP_PHASES = {
    "on_http_request": "on_http_request",
    "on_http_response": "on_http_response",
    "inbound": "on_http_request",  # ngrok's legacy names
    "outbound": "on_http_response",
}
_RULE_KEYS = ("name", "expressions", "actions")


def load_policy_file(
    path: str | Path, problems: Problems | None = None
) -> tuple[Policy | None, Problems]:
    """Read and parse a policy file by extension; the policy is ``None`` when it has errors."""
    problems = problems if problems is not None else Problems()
    source = str(path)
    suffix = Path(path).suffix.lower()
    try:
        if suffix in (".yml", ".yaml"):
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f)
        elif suffix == ".json":
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        elif suffix == ".toml":
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        else:
            problems.error(source, "", "policy file must end in .yml, .yaml, .json or .toml")
            return None, problems
    except OSError as e:
        problems.error(source, "", f"cannot read policy file: {e.strerror or e}")
        return None, problems
    except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeError) as e:
        problems.error(source, "", f"not valid {suffix.lstrip('.').upper()}: {_one_line(e)}")
        return None, problems
    if doc is None:
        doc = {}
    return parse_policy(doc, source, "", problems), problems


def parse_policy(doc: Any, source: str, key_path: str, problems: Problems) -> Policy | None:
    """Validate a policy map (``{on_tcp_connect: [rule, ...]}``); ``None`` when it has errors."""
    before = len(problems.errors)
    prefix = f"{key_path}." if key_path else ""
    if not isinstance(doc, dict):
        problems.error(source, key_path or "(top)", f"policy must be a map, not {type_label(doc)}")
        return None
    for phase in doc:
        if phase == PHASE:
            continue
        if phase in _HTTP_PHASES:
            legacy = (
                "" if phase == _HTTP_PHASES[phase] else f" (legacy name of {_HTTP_PHASES[phase]})"
            )
            message = (
                f"phase{legacy} not available on TLS endpoints; TLS endpoints run only {PHASE}"
            )
        else:
            message = f"unknown phase {phase!r}; TLS endpoints run only {PHASE}"
        problems.error(source, f"{prefix}{phase}", message)
    raw_rules = doc.get(PHASE) or []
    if not isinstance(raw_rules, list):
        problems.error(
            source, prefix + PHASE, f"must be a list of rules, not {type_label(raw_rules)}"
        )
        raw_rules = []
    sample = sample_vars()
    rules = []
    for i, raw in enumerate(raw_rules):
        rule = _parse_rule(raw, i, source, f"{prefix}{PHASE}[{i}]", problems, sample)
        if rule is not None:
            rules.append(rule)
    if len(problems.errors) > before:
        return None
    policy = Policy(source, key_path, tuple(rules))
    return _with_projection(policy, sample)


def _parse_rule(
    raw: Any, index: int, source: str, path: str, problems: Problems, sample: dict
) -> Rule | None:
    if not isinstance(raw, dict):
        problems.error(source, path, f"rule must be a map with actions, not {type_label(raw)}")
        return None
    before = len(problems.errors)
    ParseContext(problems, source, path, sample).check_keys(raw, _RULE_KEYS)
    name = raw.get("name", "")
    if not isinstance(name, str):
        problems.error(source, f"{path}.name", f"must be a string, not {type_label(name)}")
        name = ""
    label = f"rule {name!r}" if name else f"rule #{index}"
    expressions = []
    raw_exprs = raw.get("expressions") or []
    if not isinstance(raw_exprs, list):
        problems.error(source, f"{path}.expressions", "must be a list of CEL expressions")
        raw_exprs = []
    for j, text in enumerate(raw_exprs):
        try:
            expr = compile_expression(text)
            result = expr.check(sample)
            if not isinstance(result, bool) and result is not UNKNOWN:
                raise ExprError(f"must evaluate to a boolean, not {type_label(result)}")
            expressions.append(expr)
        except ExprError as e:
            shown = text if isinstance(text, str) else repr(text)
            problems.error(
                source, f"{path}.expressions[{j}]", f"{label}: expression {shown!r}: {e}"
            )
    actions = _parse_actions(raw.get("actions"), source, f"{path}.actions", problems, sample)
    if len(problems.errors) > before:
        return None
    return Rule(index, name, tuple(expressions), tuple(actions))


def _parse_actions(raw: Any, source: str, path: str, problems: Problems, sample: dict) -> list:
    if not raw:
        problems.error(source, path, "a rule needs at least one action")
        return []
    if not isinstance(raw, list):
        problems.error(source, path, f"must be a list of actions, not {type_label(raw)}")
        return []
    actions: list[Action] = []
    ended_by: str | None = None
    for j, item in enumerate(raw):
        here = f"{path}[{j}]"
        if not isinstance(item, dict):
            problems.error(
                source, here, f"action must be a map with a type, not {type_label(item)}"
            )
            continue
        ParseContext(problems, source, here, sample).check_keys(item, ("type", "config"))
        type_name = item.get("type")
        if type_name is None:
            problems.error(source, f"{here}.type", "required: the action type, like deny")
            continue
        cls = Action.registry.get(type_name) if isinstance(type_name, str) else None
        if cls is None:
            problems.error(source, f"{here}.type", unknown_type_message(type_name))
            continue
        if ended_by is not None:
            problems.error(
                source,
                here,
                f"unreachable: '{type_name}' comes after {ended_by}, which ends the rule",
            )
        config = item.get("config")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            problems.error(source, f"{here}.config", f"must be a map, not {type_label(config)}")
            continue
        action = cls.parse(config, ParseContext(problems, source, f"{here}.config", sample))
        if action is None:
            continue
        if action.terminating and ended_by is None:
            ended_by = f"'{type_name}' ({here})"
        actions.append(action)
    return actions


def iter_expressions(policy: Policy) -> Iterator[Expr]:
    """Every compiled expression of the policy: rule expressions, ``${...}``, bucket keys."""
    for rule in policy.rules:
        yield from rule.expressions
        for action in rule.actions:
            for f in fields(action):  # type: ignore[arg-type]
                yield from _exprs_in(getattr(action, f.name))


def _exprs_in(value: Any) -> Iterator[Expr]:
    if isinstance(value, Expr):
        yield value
    elif isinstance(value, Template):
        yield from value.expressions
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _exprs_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _exprs_in(v)


def _with_projection(policy: Policy, sample: dict) -> Policy:
    """Attach the paths and functions the policy reads, after proving the projection safe.

    Each expression is run against the projected sample and must give what it gives
    against the full sample; if the text analysis missed a path, fall back to passing
    every variable (correct, only slower).
    """
    exprs = list(iter_expressions(policy))
    functions = frozenset().union(*(e.functions for e in exprs))
    reads_dynamic = any(e.roots & {"vars", "actions"} for e in exprs)
    tree = PathTree()
    for expr in exprs:
        for path, _ in expr.paths:
            tree.add(path)
    static = tree.project(sample, ("conn", "endpoint", "time"))
    dynamic = {"vars": sample["vars"], **tree.project(sample, ("actions",))}
    for expr in exprs:
        full = EvalEnv(sample, functions, None)
        projected = EvalEnv(static, functions, dynamic.get)
        try:
            same = expr.run(projected) == expr.run(full)
        except ExprError:
            same = False
        if not same:
            tree = None
            break
    return Policy(policy.source, policy.key_path, policy.rules, functions, tree, reads_dynamic)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
