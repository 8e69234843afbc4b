"""The ``terminate-tls`` action: validates and keeps the TLS termination settings.

Certificates, keys and CAs are kept as given (PEM text or a file path, possibly
interpolated); the TLS layer loads them.  At run time the action pauses the
evaluation with a `model.TerminateTls` decision (see `model` for the worker's loop).
Registered on import; `load.py` imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from tlsgate.policy.actions import Action, EvalState, Stop
from tlsgate.policy.expr import Template, format_value
from tlsgate.policy.model import TerminateTls

TLS_VERSIONS = ("1.2", "1.3")
MTLS_STRATEGIES = ("require-and-verify", "require-any", "request")
TERMINATE_TLS_FIELDS = (
    "min_version",
    "max_version",
    "server_certificate",
    "server_private_key",
    "mutual_tls_certificate_authorities",
    "mutual_tls_verification_strategy",
    "alpn",
)


@dataclass(frozen=True)
class TerminateTlsAction(Action, type_name="terminate-tls"):
    key_path: str
    min_version: str
    max_version: str
    server_certificate: Template | None
    server_private_key: Template | None
    mutual_tls_certificate_authorities: tuple[Template, ...]
    mutual_tls_verification_strategy: str
    alpn: tuple[Template, ...]

    @classmethod
    def parse(cls, config, ctx):
        ctx.check_keys(config, TERMINATE_TLS_FIELDS)
        low = ctx.choice(config, "min_version", TLS_VERSIONS, "1.2")
        high = ctx.choice(config, "max_version", TLS_VERSIONS, "1.3")
        if low > high:
            ctx.error("min_version", f"{low!r} is above max_version {high!r}")
        cert = key = None
        if "server_certificate" in config:
            cert = ctx.template("server_certificate", config["server_certificate"])
        if "server_private_key" in config:
            key = ctx.template("server_private_key", config["server_private_key"])
        if ("server_certificate" in config) != ("server_private_key" in config):
            ctx.error("", "server_certificate and server_private_key must be set together")
        cas = ctx.string_list(config, "mutual_tls_certificate_authorities", _check_ca)
        strategy = ctx.choice(
            config, "mutual_tls_verification_strategy", MTLS_STRATEGIES, "require-and-verify"
        )
        alpn = ctx.string_list(config, "alpn")
        if not ctx.ok:
            return None
        return cls(ctx.key_path, low, high, cert, key, cas, strategy, alpn)

    @cached_property
    def static_decision(self) -> TerminateTls | None:
        """The decision, made once, when no setting interpolates ``${...}``."""
        templates = [
            self.server_certificate,
            self.server_private_key,
            *self.mutual_tls_certificate_authorities,
            *self.alpn,
        ]
        if not all(t is None or t.is_static for t in templates):
            return None
        return self._decide(lambda t: None if t is None else "".join(t.parts))

    def apply(self, state: EvalState) -> Stop | None:
        if state.tls_terminated:
            state.trace.append("terminate-tls: TLS already terminated; ignored")
            return None
        decided = self.static_decision
        if decided is None:

            def text(t: Template | None) -> str | None:
                if t is None:
                    return None
                parts = t.parts
                if len(parts) == 1 and type(parts[0]) is str:
                    return parts[0]  # static: what rendering returns, without CEL's context
                return format_value(state.render(t))

            decided = self._decide(text)
        state.trace.append(f"terminate-tls: TLS {self.min_version}-{self.max_version}")
        return Stop("terminate_tls", terminate_tls=decided, resumable=True)

    def _decide(self, text: Callable[[Template | None], str | None]) -> TerminateTls:
        return TerminateTls(
            min_version=self.min_version,
            max_version=self.max_version,
            server_certificate=text(self.server_certificate),
            server_private_key=text(self.server_private_key),
            mutual_tls_certificate_authorities=tuple(
                text(t) or "" for t in self.mutual_tls_certificate_authorities
            ),
            mutual_tls_verification_strategy=self.mutual_tls_verification_strategy,
            alpn=tuple(text(t) or "" for t in self.alpn),
        )


def only_terminates(policy) -> TerminateTls | None:
    """The decision of a policy that only terminates TLS, with settings that interpolate
    nothing (the commonest TLS-endpoint policy), else None.

    Evaluating such a policy decides exactly this, then resumes to ``continue`` with no
    logs, variables or IP decision, so the worker may terminate without evaluating it
    (tests/unit/policy/test_terminate_fast.py checks that against `engine.evaluate`).
    """
    if policy is None or len(policy.rules) != 1:
        return None
    rule = policy.rules[0]
    if rule.expressions or len(rule.actions) != 1:
        return None
    action = rule.actions[0]
    if not isinstance(action, TerminateTlsAction):
        return None
    return action.static_decision


def _check_ca(text: str) -> str | None:
    if text.startswith("ca_"):
        return "ngrok certificate authority IDs (ca_...) are not available; give PEM text or a file path"
    return None
