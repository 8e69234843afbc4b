"""The action registry, the helpers actions parse their config with, and evaluation state.

Every action type is a class registered by name
(``class Deny(Action, type_name="deny")``, see `action_types.py`).  Its classmethod
``parse(config, ctx)`` validates the config at load, reporting into ``ctx`` with key
paths, and returns the frozen action or ``None``; its ``apply(state)`` runs per
connection and returns a `Stop` when evaluation must end (or pause).  `load.py` looks
types up in `Action.registry`; `engine.py` calls ``apply``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from tlsgate.errors import Problems
from tlsgate.policy.expr import EvalEnv, ExprError, Template, parse_template
from tlsgate.policy.model import CloseReason, Forward, Outcome, Policy, TerminateTls

#: ngrok actions that exist only for HTTP endpoints; named so the error can say so.
HTTP_ONLY_ACTIONS = frozenset(
    {
        "add-headers", "basic-auth", "circuit-breaker", "compress-response",
        "custom-response", "http-request", "jwt-validation", "oauth", "openid-connect",
        "owasp-crs-request", "owasp-crs-response", "redirect", "remove-headers", "saml",
        "url-rewrite", "verify-webhook",
    }
)  # fmt: skip


class Action:
    """Base of the action types; subclasses are frozen dataclasses."""

    type_name: ClassVar[str]
    registry: ClassVar[dict[str, type[Action]]] = {}
    key_path: str

    def __init_subclass__(cls, type_name: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = type_name
        Action.registry[type_name] = cls

    @classmethod
    def parse(cls, config: dict[str, Any], ctx: ParseContext) -> Action | None:
        raise NotImplementedError

    @property
    def terminating(self) -> bool:
        """Whether evaluation never goes past this action (later ones are unreachable)."""
        return False

    def apply(self, state: EvalState) -> Stop | None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Stop:
    """What an action returns to end the evaluation, or pause it when ``resumable``."""

    outcome: Outcome
    close_reason: CloseReason | None = None
    forward: Forward | None = None
    terminate_tls: TerminateTls | None = None
    resumable: bool = False


class EvalState:
    """Mutable state of one evaluation; the engine turns it into a `Decision`."""

    def __init__(
        self,
        policy: Policy,
        conn_vars: dict[str, Any] | Callable[[], dict[str, Any]],
        now: datetime,
        rate_limiter: Any,
        vars: dict[str, Any],
        actions: dict[str, Any],
    ) -> None:
        self.policy = policy
        self._conn_vars = conn_vars
        self.now = now
        self.rate_limiter = rate_limiter
        self.vars = vars
        self.actions = actions
        self.logs: list[dict[str, Any]] = []
        self.ip_policy_decision: str | None = None
        self.matched_rules: list[str] = []
        self.trace: list[str] = []
        self.tls_terminated = False
        self.mirror_tls = False
        """``actions.ngrok.terminate_tls`` still has to mirror ``conn.tls`` (done when read)."""
        self._env: EvalEnv | None = None

    @property
    def conn_vars(self) -> dict[str, Any]:
        """The connection's variables (`vars.build_conn_vars`), built on first use when
        given as a function: a policy of plain actions never reads them."""
        conn_vars = self._conn_vars
        if callable(conn_vars):
            conn_vars = self._conn_vars = conn_vars()
        return conn_vars

    @property
    def env(self) -> EvalEnv:
        """The CEL context, built on first use (a policy of plain actions never needs it)."""
        if self._env is None:
            policy = self.policy
            static = {"time": {"now": self.now}, **self.conn_vars}
            if policy.static_paths is not None:
                static = policy.static_paths.project(static, ("conn", "endpoint", "time"))
            dynamic = self._resolve if policy.reads_dynamic else None
            self._env = EvalEnv(static, policy.functions, dynamic)
        return self._env

    def _resolve(self, name: str) -> Any:
        if name == "vars":
            return self.vars
        if name == "actions":
            if self.mirror_tls:
                self._mirror_tls()
            paths = self.policy.static_paths
            if paths is None:
                return self.actions
            # Only the read paths: converting all of actions.ngrok.* would cost ~100 µs.
            return paths.project({"actions": self.actions}, ("actions",)).get("actions")
        return None

    def render(self, template: Template) -> Any:
        return template.render(self.env)

    def _mirror_tls(self) -> None:
        """After termination ``actions.ngrok.terminate_tls.*`` mirrors ``conn.tls.*`` (ngrok)."""
        self.mirror_tls = False
        tls = self.conn_vars["conn"]["tls"]
        previous = self.actions["ngrok"]["terminate_tls"]
        self.actions["ngrok"]["terminate_tls"] = {
            **tls,
            "error_code": previous.get("error_code", ""),
            "error_message": previous.get("error_message", ""),
            "warnings": previous.get("warnings", []),
        }


class ParseContext:
    """Where an action's config is being parsed: reports problems under its key path.

    ``sample`` is the complete variable sample that expressions are checked against;
    ``set-vars`` adds to ``sample["vars"]`` so later rules may read those names.
    """

    def __init__(self, problems: Problems, source: str, key_path: str, sample: dict) -> None:
        self.problems = problems
        self.source = source
        self.key_path = key_path
        self.sample = sample
        self.ok = True

    def path(self, key: str = "") -> str:
        if not key:
            return self.key_path
        return f"{self.key_path}{key}" if key.startswith("[") else f"{self.key_path}.{key}"

    def error(self, key: str, message: str) -> None:
        self.problems.error(self.source, self.path(key), message)
        self.ok = False

    def check_keys(self, config: dict[str, Any], allowed: tuple[str, ...]) -> None:
        for key in config:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                more = f" (did you mean '{hint[0]}'?)" if hint else ""
                known = ", ".join(allowed) if allowed else "none"
                self.error(str(key), f"unknown key{more}; allowed keys: {known}")

    def template(self, key: str, value: Any) -> Template | None:
        """A config string that may hold ``${...}``: compiled and checked on the sample."""
        if not isinstance(value, str):
            self.error(key, f"must be a string, not {type_label(value)}")
            return None
        try:
            template = parse_template(value)
            template.render_sample(self.sample)
        except ExprError as e:
            self.error(key, f"in {value!r}: {e}")
            return None
        return template

    def choice(self, config: dict, key: str, choices: tuple[str, ...], default: str) -> str:
        value = config.get(key, default)
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            self.error(key, f"must be one of {listed}, not {value!r}")
            return default
        return value

    def boolean(self, config: dict, key: str, default: bool) -> bool:
        value = config.get(key, default)
        if not isinstance(value, bool):
            self.error(key, f"must be true or false, not {type_label(value)}")
            return default
        return value

    def string_list(
        self, config: dict, key: str, check: Callable[[str], str | None] | None = None
    ) -> tuple[Template, ...]:
        """A list of (possibly interpolated) strings; ``check`` validates static entries."""
        value = config.get(key, [])
        if not isinstance(value, list):
            self.error(key, f"must be a list of strings, not {type_label(value)}")
            return ()
        items = []
        for i, item in enumerate(value):
            template = self.template(f"{key}[{i}]", item)
            if template is None:
                continue
            if check is not None and template.is_static:
                problem = check(template.source)
                if problem:
                    self.error(f"{key}[{i}]", problem)
                    continue
            items.append(template)
        return tuple(items)


def type_label(value: Any) -> str:
    """A value's type in the words of YAML/JSON users."""
    if value is None:
        return "null"
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string",
        list: "a list", dict: "a map",
    }.get(type(value), type(value).__name__)  # fmt: skip


def unknown_type_message(type_name: Any) -> str:
    """The message for an action ``type`` that tlsgate cannot run on a TLS endpoint."""
    allowed = ", ".join(sorted(Action.registry))
    if not isinstance(type_name, str):
        return f"the action type must be a string such as deny, not {type_label(type_name)}"
    if type_name in HTTP_ONLY_ACTIONS:
        return (
            f"action '{type_name}' is only available on HTTP endpoints; "
            f"TLS endpoints allow: {allowed}"
        )
    hint = difflib.get_close_matches(str(type_name), sorted(Action.registry), n=1)
    more = f" (did you mean '{hint[0]}'?)" if hint else ""
    return f"unknown action type {type_name!r}{more}; TLS endpoints allow: {allowed}"
