"""`evaluate`: every action's behaviour, rule order, pausing and resuming."""

from __future__ import annotations

from tests.unit.policy.helpers import NOW, conn, load, run, terminated_tls
from tlsgate.policy.engine import evaluate
from tlsgate.policy.model import TerminateTls
from tlsgate.policy.ratelimit import SlidingWindowLimiter

RESTRICT = """
on_tcp_connect:
  - actions:
      - type: restrict-ips
        config:
          enforce: {enforce}
          allow: [127.0.0.0/8, '::1/128']
          deny: [127.0.0.2/32, '2001:db8::/32']
"""


def test_no_rules_continue():
    decision = run("on_tcp_connect: []")
    assert decision.outcome == "continue" and decision.close_reason is None
    assert decision.logs == () and decision.ip_policy_decision is None


def test_restrict_ips_allow_and_deny_ipv4_and_ipv6():
    text = RESTRICT.format(enforce="true")
    for ip, outcome, decision, cidr in [
        ("127.0.0.1", "continue", "allow", "127.0.0.0/8"),
        ("::1", "continue", "allow", "::1/128"),
        ("127.0.0.2", "close", "block", "127.0.0.2/32"),  # deny wins over allow
        ("192.0.2.1", "close", "block", ""),  # not in allow
        ("2001:db8::5", "close", "block", "2001:db8::/32"),
        ("2001:db9::5", "close", "block", ""),
    ]:
        result = run(text, ip)
        assert (result.outcome, result.ip_policy_decision) == (outcome, decision), ip
        if outcome == "close":
            assert result.close_reason == "ip_restricted"
        assert f"-> {'allow' if decision == 'allow' else 'deny'} {cidr}".strip() in result.trace[0]


def test_restrict_ips_deny_only_allows_everyone_else():
    text = "on_tcp_connect: [{actions: [{type: restrict-ips, config: {deny: ['::1/128']}}]}]"
    assert run(text, "::1").close_reason == "ip_restricted"
    assert run(text, "127.0.0.1").outcome == "continue"


def test_restrict_ips_enforce_false_records_and_continues():
    text = RESTRICT.format(enforce="false") + (
        "  - expressions: [\"actions.ngrok.restrict_ips.action == 'deny'\"]\n"
        "    actions: [{type: log, config: {metadata: {would: '${actions.ngrok.restrict_ips.matched_cidr}'}}}]\n"
    )
    decision = run(text, "127.0.0.2")
    assert decision.outcome == "continue"
    assert decision.ip_policy_decision == "block"
    assert decision.logs == ({"would": "127.0.0.2/32"},)
    assert run(text, "127.0.0.1").logs == ()


def test_restrict_ips_interpolated_cidrs():
    text = (
        "on_tcp_connect:\n"
        "- actions: [{type: set-vars, config: {vars: [{blocked: ['127.0.0.2/32', '::1/128']}]}}]\n"
        "- actions: [{type: restrict-ips, config: {deny: ['${vars.blocked}']}}]\n"
    )
    assert run(text, "::1").close_reason == "ip_restricted"
    assert run(text, "127.0.0.1").outcome == "continue"


def test_restrict_ips_bad_runtime_cidr_is_a_policy_error():
    text = (
        "on_tcp_connect:\n- actions: [{type: restrict-ips, config: {deny: ['${conn.tls.sni}']}}]\n"
    )
    decision = run(text)
    assert decision.close_reason == "policy_error"
    assert "'app.example.com' is not an IPv4 or IPv6 CIDR" in decision.error


def test_deny_and_close_connection_close_with_policy_denied():
    for action in ("deny", "close-connection"):
        decision = run(f"on_tcp_connect: [{{actions: [{{type: {action}}}]}}]")
        assert (decision.outcome, decision.close_reason) == ("close", "policy_denied")


def test_rules_run_in_order_and_only_when_all_expressions_match():
    text = """
on_tcp_connect:
  - name: first
    expressions: ["conn.tls.sni == 'app.example.com'", "conn.client_port == 1"]
    actions: [{type: log, config: {metadata: {rule: first}}}]
  - name: second
    expressions: ["conn.tls.sni == 'app.example.com'"]
    actions: [{type: log, config: {metadata: {rule: second}}}]
  - name: third
    actions: [{type: deny}]
  - name: never
    actions: [{type: log, config: {metadata: {rule: never}}}]
"""
    decision = run(text)
    assert decision.matched_rules == ("second", "third")
    assert decision.logs == ({"rule": "second"},)
    assert decision.close_reason == "policy_denied"


def test_log_metadata_is_evaluated_and_appended():
    text = """
on_tcp_connect:
  - actions:
      - type: log
        config:
          metadata: {client: "${conn.client_ip}", port: "${conn.client_port}", nested: {sni: "sni=${conn.tls.sni}"}, n: 3}
      - type: log
        config:
          metadata: {previous: "${actions.ngrok.log.metadata.client}"}
"""
    assert run(text).logs == (
        {"client": "127.0.0.1", "port": 50123, "nested": {"sni": "sni=app.example.com"}, "n": 3},
        {"previous": "127.0.0.1"},
    )


def test_set_vars_read_by_a_later_rule_with_their_types():
    text = """
on_tcp_connect:
  - actions:
      - type: set-vars
        config:
          vars:
            - port: "${conn.client_port}"
            - label: "client ${conn.client_ip}"
            - big: "${vars.port > 50000}"
  - expressions: ["vars.big && vars.port == 50123"]
    actions: [{type: log, config: {metadata: {label: "${vars.label}"}}}]
"""
    decision = run(text)
    assert decision.vars == {"port": 50123, "label": "client 127.0.0.1", "big": True}
    assert decision.logs == ({"label": "client 127.0.0.1"},)
    assert evaluate(load(text), conn(client_port=40000), NOW).logs == ()


def test_missing_var_at_run_time_is_a_policy_error():
    text = """
on_tcp_connect:
  - expressions: ["conn.client_port == 1"]
    actions: [{type: set-vars, config: {vars: [{x: 1}]}}]
  - expressions: ["vars.x == 1"]
    actions: [{type: deny}]
"""
    decision = run(text)
    assert decision.close_reason == "policy_error"
    assert decision.error == "rule #1: expression 'vars.x == 1': no such key 'x'"
    guarded = text.replace('"vars.x == 1"', '"has(vars.x) && vars.x == 1"')
    assert run(guarded).outcome == "continue"


def test_forward_internal_static_and_interpolated():
    decision = run(
        "on_tcp_connect: [{actions: [{type: forward-internal, config: {url: 'tls://db.internal:443'}}]}]"
    )
    assert decision.outcome == "forward"
    assert (decision.forward.url, decision.forward.on_error) == ("tls://db.internal:443", "halt")
    assert decision.resume is None  # halt: nothing after it
    dynamic = run(
        "on_tcp_connect: [{actions: [{type: forward-internal, config: "
        "{url: 'tls://${conn.tls.sni.split(\".\")[0]}.internal'}}]}]"
    )
    assert dynamic.forward.url == "tls://app.internal"


def test_forward_internal_on_error_continue_resumes_with_the_error():
    policy = load("""
on_tcp_connect:
  - actions:
      - type: forward-internal
        config: {url: "tls://gone.internal", on_error: continue}
      - type: log
        config: {metadata: {code: "${actions.ngrok.forward_internal.error.code}"}}
  - actions: [{type: deny}]
""")
    paused = evaluate(policy, conn(), NOW)
    assert paused.outcome == "forward" and paused.forward.on_error == "continue"
    resume = paused.resume.with_forward_error(
        "tls://gone.internal", "ERR_NO_ENDPOINT", "no such endpoint"
    )
    done = evaluate(policy, conn(), NOW, resume=resume)
    assert done.logs == ({"code": "ERR_NO_ENDPOINT"},)
    assert done.close_reason == "policy_denied"


def test_terminate_tls_pauses_and_resumes_with_tls_variables():
    policy = load("""
on_tcp_connect:
  - expressions: ["conn.tls.sni.startsWith('secure.')"]
    actions:
      - type: set-vars
        config: {vars: [{secured: true}]}
      - type: terminate-tls
        config: {min_version: "1.3", alpn: [h2], mutual_tls_certificate_authorities: [ca.pem],
                 mutual_tls_verification_strategy: require-any}
      - type: log
        config: {metadata: {cn: "${conn.tls.client.subject.common_name}", secured: "${vars.secured}"}}
  - expressions: ["conn.tls.client.subject.common_name != 'alice'"]
    actions: [{type: deny}]
""")
    plain = evaluate(policy, conn(sni="app.example.com"), NOW)
    assert plain.close_reason == "policy_denied"  # not terminated: no client cert
    paused = evaluate(policy, conn(sni="secure.example.com"), NOW)
    assert paused.outcome == "terminate_tls"
    assert paused.terminate_tls == TerminateTls(
        min_version="1.3", max_version="1.3", mutual_tls_certificate_authorities=("ca.pem",),
        mutual_tls_verification_strategy="require-any", alpn=("h2",),
    )  # fmt: skip
    assert paused.resume.rule_index == 0 and paused.resume.action_index == 2
    done = evaluate(
        policy, conn(tls=terminated_tls("secure.example.com")), NOW, resume=paused.resume
    )
    assert done.outcome == "continue"
    assert done.logs == ({"cn": "alice", "secured": True},)
    assert done.matched_rules == ("#0",)


def test_terminate_tls_with_interpolated_certificate():
    policy = load("""
on_tcp_connect:
  - actions:
      - type: terminate-tls
        config:
          server_certificate: "/certs/${conn.tls.sni}.crt"
          server_private_key: "/certs/${conn.tls.sni}.key"
""")
    decision = evaluate(policy, conn(sni="b.example.com"), NOW)
    assert decision.terminate_tls.server_certificate == "/certs/b.example.com.crt"
    assert decision.terminate_tls.server_private_key == "/certs/b.example.com.key"


def test_second_terminate_tls_after_termination_is_ignored():
    policy = load(
        "on_tcp_connect: [{actions: [{type: terminate-tls}]}, {actions: [{type: terminate-tls}]}]"
    )
    paused = evaluate(policy, conn(), NOW)
    done = evaluate(policy, conn(tls=terminated_tls()), NOW, resume=paused.resume)
    assert done.outcome == "continue"
    assert done.trace[-1] == "terminate-tls: TLS already terminated; ignored"


def test_rate_limit_closes_over_capacity_per_bucket_key():
    policy = load("""
on_tcp_connect:
  - actions:
      - type: rate-limit
        config: {name: per-ip, algorithm: sliding_window, capacity: 2, rate: 60s, bucket_key: [conn.client_ip]}
""")
    limiter = SlidingWindowLimiter(clock=lambda: 0.0)
    outcomes = [evaluate(policy, conn("10.0.0.1"), NOW, limiter).close_reason for _ in range(3)]
    assert outcomes == [None, None, "rate_limited"]
    assert evaluate(policy, conn("10.0.0.2"), NOW, limiter).outcome == "continue"
    later = NOW.replace(minute=1, second=1)
    assert evaluate(policy, conn("10.0.0.1"), later, limiter).outcome == "continue"


def test_rate_limit_without_a_limiter_is_not_enforced():
    text = ("on_tcp_connect: [{actions: [{type: rate-limit, config: {algorithm: sliding_window, "
            "capacity: 1, rate: 1s, bucket_key: []}}]}]")  # fmt: skip
    assert run(text).outcome == run(text).outcome == "continue"
    assert "not enforced" in run(text).trace[0]


def test_evaluation_does_not_mutate_the_connection_map_or_leak_between_calls():
    policy = load("""
on_tcp_connect:
  - actions:
      - type: restrict-ips
        config: {enforce: false, deny: [127.0.0.1/32]}
      - type: set-vars
        config: {vars: [{a: 1}]}
""")
    conn_vars = conn()
    first = evaluate(policy, conn_vars, NOW)
    assert conn_vars == conn()
    second = evaluate(load("on_tcp_connect: [{expressions: [\"actions.ngrok.restrict_ips.action == ''\"], "
                           "actions: [{type: deny}]}]"), conn(), NOW)  # fmt: skip
    assert first.vars == {"a": 1} and second.close_reason == "policy_denied"


def test_variables_given_as_a_function_are_built_only_when_read():
    """The worker passes the connection's variables as a function: a policy whose rules
    read nothing must not pay for building them (conn.tls with its certificate maps)."""
    built = []

    def lazy(**kwargs):
        def build():
            built.append(kwargs)
            return conn(**kwargs)

        return build

    terminate_only = load("on_tcp_connect: [{actions: [{type: terminate-tls}]}]")
    paused = evaluate(terminate_only, lazy(sni="app.example.com"), NOW)
    assert paused.outcome == "terminate_tls"
    done = evaluate(terminate_only, lazy(tls=terminated_tls()), NOW, resume=paused.resume)
    assert done.outcome == "continue"
    assert built == []

    reading = load("""
on_tcp_connect:
  - actions: [{type: terminate-tls}]
  - expressions: ["actions.ngrok.terminate_tls.cipher_suite == conn.tls.cipher_suite",
                  "actions.ngrok.terminate_tls.client.subject.common_name == 'alice'"]
    actions: [{type: deny}]
""")
    paused = evaluate(reading, lazy(sni="app.example.com"), NOW)
    assert built == []  # the first rule has no expressions and pauses before the second
    done = evaluate(reading, lazy(tls=terminated_tls()), NOW, resume=paused.resume)
    # actions.ngrok.terminate_tls mirrors conn.tls once something reads it
    assert done.close_reason == "policy_denied"
    assert len(built) == 1
