"""`only_terminates`: the policies the worker may terminate for without evaluating them.

The worker skips evaluation for these (tlsgate/worker/fastpath.py), so the decision it
uses must be exactly what `evaluate` decides, and the resumed evaluation must add
nothing the event would carry (logs, variables, an IP decision).
"""

from __future__ import annotations

import pytest

from tests.unit.policy.helpers import NOW, conn, load, terminated_tls
from tlsgate.policy.engine import evaluate
from tlsgate.policy.terminate import only_terminates

PLAIN = [
    "on_tcp_connect: [{actions: [{type: terminate-tls}]}]",
    """
on_tcp_connect:
  - name: tls
    actions:
      - type: terminate-tls
        config:
          min_version: "1.3"
          server_certificate: /certs/app.crt
          server_private_key: /certs/app.key
          mutual_tls_certificate_authorities: [/certs/ca.pem]
          mutual_tls_verification_strategy: require-any
          alpn: [h2, http/1.1]
""",
]

NOT_PLAIN = [
    # an expression decides whether to terminate
    "on_tcp_connect: [{expressions: ['conn.tls.sni != \"\"'], actions: [{type: terminate-tls}]}]",
    # a setting interpolates a variable
    """
on_tcp_connect:
  - actions:
      - type: terminate-tls
        config: {server_certificate: "/certs/${conn.tls.sni}.crt", server_private_key: /k.pem}
""",
    # more than the termination: a log, a second rule
    "on_tcp_connect: [{actions: [{type: terminate-tls}, {type: log, config: {metadata: {a: b}}}]}]",
    "on_tcp_connect: [{actions: [{type: terminate-tls}]}, {actions: [{type: deny}]}]",
    # no termination at all
    "on_tcp_connect: [{actions: [{type: restrict-ips, config: {allow: [127.0.0.0/8]}}]}]",
    "on_tcp_connect: []",
]


@pytest.mark.parametrize("text", PLAIN)
def test_the_decision_is_what_evaluation_decides_and_resuming_adds_nothing(text):
    policy = load(text)
    decided = only_terminates(policy)
    assert decided is not None
    paused = evaluate(policy, conn(sni="app.example.com"), NOW)
    assert paused.outcome == "terminate_tls"
    assert paused.terminate_tls == decided
    assert paused.logs == () and paused.ip_policy_decision is None and paused.vars == {}
    done = evaluate(policy, conn(tls=terminated_tls()), NOW, resume=paused.resume)
    assert done.outcome == "continue"
    assert done.logs == () and done.ip_policy_decision is None and done.vars == {}
    assert done.error is None


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_anything_more_is_evaluated(text):
    assert only_terminates(load(text)) is None


def test_no_policy():
    assert only_terminates(None) is None
