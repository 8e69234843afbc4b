"""Shared helpers of the policy unit tests: parse YAML text, build connections."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml

from tlsgate.errors import Problems
from tlsgate.policy.engine import evaluate
from tlsgate.policy.model import Decision, Policy
from tlsgate.policy.vars import build_conn_vars, build_endpoint_vars, empty_tls

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
START = datetime(2025, 3, 1, 11, 59, 59, tzinfo=UTC)
ENDPOINT = build_endpoint_vars(
    id="ep_123", name="app", url="tls://app.example.com", host="app.example.com", port=8443
)


def parse(text: str, source: str = "policy.yml") -> tuple[Policy | None, list[str]]:
    """Parse YAML policy text; returns the policy and the problems as strings."""
    from tlsgate.policy.load import parse_policy

    problems = Problems()
    policy = parse_policy(yaml.safe_load(text), source, "", problems)
    return policy, [str(p) for p in problems.items]


def load(text: str) -> Policy:
    policy, problems = parse(text)
    assert problems == [] and policy is not None, problems
    return policy


def errors(text: str) -> list[str]:
    policy, problems = parse(text)
    assert policy is None, "expected errors"
    return problems


def conn(
    client_ip: str = "127.0.0.1",
    sni: str = "app.example.com",
    *,
    client_port: int = 50123,
    tls: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return build_conn_vars(
        client_ip=client_ip, client_port=client_port, server_ip="127.0.0.1", server_port=8443,
        start=START, endpoint=ENDPOINT, sni=sni, tls_version="1.3",
        ja4_fingerprint="t13d1516h2_8daaf6152771_02713d6af862", tls=tls,
    )  # fmt: skip


def terminated_tls(sni: str = "app.example.com") -> dict[str, Any]:
    """conn.tls as the worker fills it after terminating with a client certificate."""
    tls = empty_tls(sni, "1.3")
    tls["cipher_suite"] = "TLS_AES_256_GCM_SHA384"
    tls["negotiated_alpn"] = "h2"
    client = tls["client"]
    client["subject"].update(common_name="alice", organization=["Acme"], country=["DE"])
    client["issuer"].update(common_name="Acme CA", organizational_unit=["PKI"])
    client["serial_number"] = "1f"
    client["san"]["dns_names"] = ["alice.example.com"]
    client["validity"]["not_before"] = datetime(2025, 1, 1, tzinfo=UTC)
    client["validity"]["not_after"] = datetime(2026, 1, 1, tzinfo=UTC)
    return tls


def run(text: str, client_ip: str = "127.0.0.1", sni: str = "app.example.com", **kw) -> Decision:
    return evaluate(load(text), conn(client_ip, sni), NOW, **kw)
