"""The eight action types a TLS endpoint's ``on_tcp_connect`` phase may use.

ngrok's seven (restrict-ips, deny, close-connection, log, set-vars, forward-internal
here; terminate-tls in `terminate.py`) with ngrok's config fields and rules, plus
tlsgate's ``rate-limit`` for connections (ngrok's HTTP action's config shape).  Each registers itself in
`actions.Action.registry` by ``type_name``; `load.py` imports this module for that.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tlsgate.policy.actions import Action, EvalState, ParseContext, Stop, type_label
from tlsgate.policy.expr import (
    EvalEnv,
    Expr,
    ExprError,
    Template,
    compile_expression,
    format_value,
    functions_of,
    ip_in_networks,
)
from tlsgate.policy.model import Forward


def _no_config(cls: type[Action], config: dict[str, Any], ctx: ParseContext) -> None:
    if "status_code" in config:
        ctx.error(
            "status_code",
            f"'{cls.type_name}' takes no config on TLS endpoints: the connection is closed "
            "without a response (status_code is for HTTP endpoints)",
        )
    ctx.check_keys({k: v for k, v in config.items() if k != "status_code"}, ())


@dataclass(frozen=True)
class Deny(Action, type_name="deny"):
    key_path: str

    @classmethod
    def parse(cls, config, ctx):
        _no_config(cls, config, ctx)
        return cls(ctx.key_path) if ctx.ok else None

    @property
    def terminating(self) -> bool:
        return True

    def apply(self, state: EvalState) -> Stop:
        return Stop("close", close_reason="policy_denied")


@dataclass(frozen=True)
class CloseConnection(Deny, type_name="close-connection"):
    """On a TLS endpoint ngrok's close-connection does what deny does: close, no upstream."""


def check_cidr(text: str) -> str | None:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"{text!r} is not an IPv4 or IPv6 CIDR (like 192.0.2.0/24 or 2001:db8::/32)"
    return None


@dataclass(frozen=True)
class RestrictIps(Action, type_name="restrict-ips"):
    key_path: str
    enforce: bool
    allow: tuple[Template, ...]
    deny: tuple[Template, ...]

    @classmethod
    def parse(cls, config, ctx):
        ctx.check_keys(config, ("enforce", "allow", "deny", "ip_policies"))
        if "ip_policies" in config:
            ctx.error(
                "ip_policies",
                "ngrok cloud IP policies (ipp_...) are not available; list CIDRs in allow/deny",
            )
        enforce = ctx.boolean(config, "enforce", True)
        allow = ctx.string_list(config, "allow", check_cidr)
        deny = ctx.string_list(config, "deny", check_cidr)
        if ctx.ok and not allow and not deny:
            ctx.error("", "restrict-ips needs at least one CIDR in allow or deny")
        return cls(ctx.key_path, enforce, allow, deny) if ctx.ok else None

    def apply(self, state: EvalState) -> Stop | None:
        ip = state.conn_vars["conn"]["client_ip"]
        matched_deny = ip_in_networks(ip, _cidrs(state, self.deny))
        allow = _cidrs(state, self.allow)
        matched_allow = ip_in_networks(ip, allow) if allow else None
        allowed = matched_deny is None and (not allow or matched_allow is not None)
        matched = matched_deny or matched_allow or ""
        state.actions["ngrok"]["restrict_ips"] = {
            "action": "allow" if allowed else "deny",
            "matched_cidr": matched,
            "error": {"code": "", "message": ""},
        }
        state.ip_policy_decision = "allow" if allowed else "block"
        verdict = "allow" if allowed else "deny"
        enforced = "" if self.enforce else " (not enforced)"
        state.trace.append(f"restrict-ips: {ip} -> {verdict} {matched}{enforced}".rstrip())
        if not allowed and self.enforce:
            return Stop("close", close_reason="ip_restricted")
        return None


def _cidrs(state: EvalState, templates: tuple[Template, ...]) -> list[str]:
    cidrs: list[str] = []
    for template in templates:
        if template.is_static:
            cidrs.append(template.source)
            continue
        value = state.render(template)  # "${vars.blocked}" may give a whole list
        for item in value if isinstance(value, list) else [value]:
            text = format_value(item)
            problem = check_cidr(text)
            if problem:
                raise ExprError(f"{template.source!r}: {problem}")
            cidrs.append(text)
    return cidrs


# --- values with ${...} anywhere inside (log metadata, set-vars) ----------------------------


def compile_value(ctx: ParseContext, key: str, value: Any) -> Any:
    """``value`` with every string replaced by its `Template`; ``None`` marks an error."""
    if isinstance(value, str):
        return ctx.template(key, value)
    if isinstance(value, list):
        return [compile_value(ctx, f"{key}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: compile_value(ctx, f"{key}.{k}", v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float):
        return value
    # YAML and TOML also have dates and times; CEL values and event JSON do not.
    ctx.error(key, f"values must be strings, numbers, booleans, lists or maps, not {type_label(value)}")
    return None


def render_value(env: EvalEnv, value: Any) -> Any:
    if isinstance(value, Template):
        return value.render(env)
    if isinstance(value, list):
        return [render_value(env, v) for v in value]
    if isinstance(value, dict):
        return {k: render_value(env, v) for k, v in value.items()}
    return value


def _sample_value(ctx: ParseContext, value: Any) -> Any:
    exprs = [e for t in _templates(value) for e in t.expressions]
    return render_value(EvalEnv(ctx.sample, functions_of(exprs), None), value)


def _templates(value: Any):
    if isinstance(value, Template):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _templates(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _templates(v)


@dataclass(frozen=True)
class Log(Action, type_name="log"):
    key_path: str
    metadata: dict[str, Any]

    @classmethod
    def parse(cls, config, ctx):
        ctx.check_keys(config, ("metadata",))
        metadata = config.get("metadata")
        if not isinstance(metadata, dict) or not metadata:
            ctx.error("metadata", f"required: a map of names to values, not {type_label(metadata)}")
            return None
        compiled = {k: compile_value(ctx, f"metadata.{k}", v) for k, v in metadata.items()}
        if not ctx.ok:
            return None
        # A later log may read actions.ngrok.log.metadata.<key>: check it against these keys.
        results = ctx.sample["actions"]["ngrok"]
        results["log"] = {
            "metadata": {**results["log"]["metadata"], **_sample_value(ctx, compiled)}
        }
        return cls(ctx.key_path, compiled)

    def apply(self, state: EvalState) -> None:
        entry = render_value(state.env, self.metadata)
        state.logs.append(entry)
        state.actions["ngrok"]["log"] = {"metadata": entry}
        state.trace.append(f"log: {entry}")


_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SetVars(Action, type_name="set-vars"):
    key_path: str
    vars: tuple[tuple[str, Any], ...]

    @classmethod
    def parse(cls, config, ctx):
        ctx.check_keys(config, ("vars",))
        entries = config.get("vars")
        if not isinstance(entries, list) or not entries:
            ctx.error("vars", "required: a list of one-key maps like [{name: value}]")
            return None
        parsed = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or len(entry) != 1:
                ctx.error(f"vars[{i}]", "must be a map with exactly one key: {name: value}")
                continue
            ((name, value),) = entry.items()
            if not isinstance(name, str) or not _VAR_NAME.match(name):
                ctx.error(f"vars[{i}]", f"{name!r} is not a variable name (letters, digits, _)")
                continue
            compiled = compile_value(ctx, f"vars[{i}].{name}", value)
            if ctx.ok:
                # Later rules are type-checked against this sample value of vars.NAME.
                ctx.sample["vars"][name] = _sample_value(ctx, compiled)
            parsed.append((name, compiled))
        return cls(ctx.key_path, tuple(parsed)) if ctx.ok else None

    def apply(self, state: EvalState) -> None:
        for name, value in self.vars:
            state.vars[name] = render_value(state.env, value)
        state.trace.append("set-vars: " + ", ".join(n for n, _ in self.vars))


def check_internal_url(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # urlsplit rejects an unbalanced "[" ; .port rejects a non-numeric port.
        return f"{url!r} is not a URL like tls://app.internal:443"
    if parts.scheme != "tls" or not parts.hostname or parts.path or port == 0:
        return f"{url!r} is not a TLS endpoint URL like tls://app.internal:443"
    if not parts.hostname.endswith(".internal"):
        return f"{url!r}: forward-internal targets internal endpoints, whose host ends in .internal"
    return None


@dataclass(frozen=True)
class ForwardInternal(Action, type_name="forward-internal"):
    key_path: str
    url: Template
    on_error: str

    @classmethod
    def parse(cls, config, ctx):
        ctx.check_keys(config, ("url", "on_error"))
        on_error = ctx.choice(config, "on_error", ("halt", "continue"), "halt")
        if "url" not in config:
            ctx.error("url", "required: the internal endpoint's URL, like tls://app.internal:443")
            return None
        url = ctx.template("url", config["url"])
        if url is not None and url.is_static:
            problem = check_internal_url(url.source)
            if problem:
                ctx.error("url", problem)
        return cls(ctx.key_path, url, on_error) if ctx.ok else None

    @property
    def terminating(self) -> bool:
        return self.on_error == "halt"

    def apply(self, state: EvalState) -> Stop:
        url = format_value(state.render(self.url))
        state.trace.append(f"forward-internal: {url} (on_error {self.on_error})")
        resumable = self.on_error == "continue"
        return Stop("forward", forward=Forward(url, self.on_error), resumable=resumable)  # type: ignore[arg-type]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration (``60s``, ``1m30s``, ``500ms``) in seconds; `ValueError` if malformed."""
    if not isinstance(text, str) or not text or _DURATION.sub("", text):
        raise ValueError(text)
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(text))


@dataclass(frozen=True)
class RateLimit(Action, type_name="rate-limit"):
    key_path: str
    name: str
    capacity: int
    rate: float
    """Window length in seconds."""
    bucket_key: tuple[Expr, ...]

    @classmethod
    def parse(cls, config, ctx):
        ctx.check_keys(config, ("name", "algorithm", "capacity", "rate", "bucket_key"))
        name = config.get("name", ctx.key_path)
        if not isinstance(name, str) or not name:
            ctx.error("name", "must be a non-empty string")
        if "algorithm" not in config:
            ctx.error("algorithm", 'required: "sliding_window"')
        else:
            ctx.choice(config, "algorithm", ("sliding_window",), "sliding_window")
        capacity = config.get("capacity")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            ctx.error("capacity", f"required: an integer above 0, not {capacity!r}")
        rate = 0.0
        try:
            rate = parse_duration(config.get("rate"))
            if rate <= 0:
                raise ValueError
        except ValueError:
            ctx.error(
                "rate", f'required: a duration like "60s" or "1m", not {config.get("rate")!r}'
            )
        keys = []
        raw_keys = config.get("bucket_key")
        if not isinstance(raw_keys, list):
            ctx.error("bucket_key", 'required: a list of CEL expressions, like ["conn.client_ip"]')
            raw_keys = []
        for i, source in enumerate(raw_keys):
            try:
                expr = compile_expression(source)
                expr.check(ctx.sample)
                keys.append(expr)
            except ExprError as e:
                ctx.error(f"bucket_key[{i}]", f"expression {source!r}: {e}")
        return cls(ctx.key_path, name, capacity, rate, tuple(keys)) if ctx.ok else None

    def apply(self, state: EvalState) -> Stop | None:
        if state.rate_limiter is None:
            state.trace.append(f"rate-limit {self.name}: no limiter given; not enforced")
            return None
        bucket = "|".join(format_value(e.run(state.env)) for e in self.bucket_key)
        endpoint = state.conn_vars.get("endpoint", {}).get("id", "")
        allowed = state.rate_limiter.hit(
            f"{endpoint}/{self.name}/{bucket}", self.capacity, self.rate, state.now.timestamp()
        )
        state.actions["ngrok"]["rate_limit"] = {
            "limited": not allowed,
            "bucket_key": bucket,
            "error": {"code": "", "message": ""},
        }
        state.trace.append(
            f"rate-limit {self.name}: {bucket} -> {'allow' if allowed else 'limited'}"
        )
        return None if allowed else Stop("close", close_reason="rate_limited")
