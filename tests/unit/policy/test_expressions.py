"""Every variable is readable by expressions with its real type; macros; interpolation."""

from __future__ import annotations

import pytest

from tests.unit.policy.helpers import NOW, conn, load, run, terminated_tls
from tlsgate.policy.engine import evaluate
from tlsgate.policy.expr import ExprError, format_value, parse_template
from tlsgate.policy.vars import sample_vars

# (expression true for helpers.conn() with default arguments, before termination)
BEFORE_TERMINATION = [
    "conn.client_ip == '127.0.0.1'",
    "conn.client_port == 50123",
    "conn.server_ip == '127.0.0.1'",
    "conn.server_port == 8443",
    "conn.ts.start == timestamp('2025-03-01T11:59:59Z')",
    "conn.ts.start < time.now",
    "time.now == timestamp('2025-03-01T12:00:00Z')",
    "conn.tls.sni == 'app.example.com'",
    "conn.tls.version == '1.3'",
    "conn.tls.cipher_suite == ''",
    "conn.tls.negotiated_alpn == ''",
    "conn.tls.ja4_fingerprint.startsWith('t13d')",
    "conn.tls.session_resumed == false",
    "conn.tls.client.subject.common_name == ''",
    "size(conn.tls.client.san.dns_names) == 0",
    "endpoint.id == 'ep_123'",
    "endpoint.name == 'app'",
    "endpoint.url == 'tls://app.example.com'",
    "endpoint.host == 'app.example.com'",
    "endpoint.port == 8443",
    "endpoint.protocol == 'tls'",
    "actions.ngrok.restrict_ips.action == ''",
    "actions.ngrok.forward_internal.error.code == ''",
    "inCidrRange(conn.client_ip, '127.0.0.0/8')",
    "inCidrRanges(conn.client_ip, ['10.0.0.0/8', '127.0.0.1/32'])",
    "!inCidrRanges(conn.client_ip, ['::1/128'])",
    "conn.client_ip.isPrivateIp()",
    "isPrivateIp('10.1.2.3') && !isPrivateIp('8.8.8.8')",
    "conn.tls.sni.endsWith('.example.com') && conn.tls.sni.matches('^app[.]')",
    "'APP'.lowerAscii() == 'app' && conn.tls.sni.split('.')[0] == 'app'",
]

AFTER_TERMINATION = [
    "conn.tls.cipher_suite == 'TLS_AES_256_GCM_SHA384'",
    "conn.tls.negotiated_alpn == 'h2'",
    "conn.tls.client.subject.common_name == 'alice'",
    "'Acme' in conn.tls.client.subject.organization",
    "conn.tls.client.subject.country == ['DE']",
    "conn.tls.client.issuer.common_name == 'Acme CA'",
    "conn.tls.client.issuer.organizational_unit[0] == 'PKI'",
    "conn.tls.client.serial_number == '1f'",
    "conn.tls.client.san.dns_names.exists(n, n.endsWith('.example.com'))",
    "conn.tls.client.validity.not_before < time.now && time.now < conn.tls.client.validity.not_after",
    "actions.ngrok.terminate_tls.client.subject.common_name == 'alice'",
    "actions.ngrok.terminate_tls.cipher_suite == conn.tls.cipher_suite",
]


@pytest.mark.parametrize("expression", BEFORE_TERMINATION)
def test_variable_before_termination(expression):
    policy = load(f'on_tcp_connect: [{{expressions: ["{expression}"], actions: [{{type: deny}}]}}]')
    assert evaluate(policy, conn(), NOW).close_reason == "policy_denied"
    # and the same expression is false for a different connection where it should be
    negated = load(
        f'on_tcp_connect: [{{expressions: ["!({expression})"], actions: [{{type: deny}}]}}]'
    )
    assert evaluate(negated, conn(), NOW).outcome == "continue"


@pytest.mark.parametrize("expression", AFTER_TERMINATION)
def test_variable_after_termination(expression):
    policy = load(
        "on_tcp_connect:\n"
        "- actions: [{type: terminate-tls}]\n"
        f'- expressions: ["{expression}"]\n'
        "  actions: [{type: deny}]\n"
    )
    paused = evaluate(policy, conn(), NOW)
    assert paused.outcome == "terminate_tls"
    done = evaluate(policy, conn(tls=terminated_tls()), NOW, resume=paused.resume)
    assert done.close_reason == "policy_denied", done


def test_ipv6_cidr_macros():
    text = "on_tcp_connect: [{expressions: [\"inCidrRange(conn.client_ip, '::1/128')\"], actions: [{type: deny}]}]"
    assert run(text, "::1").outcome == "close"
    assert run(text, "127.0.0.1").outcome == "continue"


def test_ipv4_mapped_ipv6_client_matches_ipv4_cidrs():
    text = "on_tcp_connect: [{expressions: [\"inCidrRange(conn.client_ip, '127.0.0.0/8')\"], actions: [{type: deny}]}]"
    assert run(text, "::ffff:127.0.0.1").outcome == "close"


def test_sample_covers_every_documented_variable_root():
    sample = sample_vars()
    assert set(sample) == {"conn", "endpoint", "time", "vars", "actions"}
    assert set(sample["actions"]["ngrok"]) == {
        "restrict_ips", "forward_internal", "log", "rate_limit", "terminate_tls"
    }  # fmt: skip


def render(source: str):
    template = parse_template(source)
    return template.render_sample(sample_vars())


def test_exact_interpolation_keeps_the_type():
    assert render("${conn.client_port}") == 50000
    assert render("${conn.tls.client.san.dns_names}") == ["sample"]
    assert render("${conn.client_port > 1}") is True
    assert render("${{'a': 1}}") == {"a": 1}


def test_mixed_interpolation_is_a_string():
    assert render("port ${conn.client_port}!") == "port 50000!"
    assert render("${conn.client_ip}:${conn.client_port}") == "192.0.2.10:50000"
    assert render("no interpolation") == "no interpolation"
    assert render("a ${'}'} b") == "a } b"


def test_values_are_written_as_ngrok_writes_them():
    assert [format_value(v) for v in (True, None, 1.5, 2.0, [1, "a"], 3)] == [
        "true", "", "1.5", "2", "[1, a]", "3"
    ]  # fmt: skip
    assert format_value(NOW) == "2025-03-01T12:00:00Z"


def test_unterminated_interpolation_is_an_error():
    with pytest.raises(ExprError, match="unterminated"):
        parse_template("${conn.client_ip")


def test_projection_only_passes_read_variables():
    policy = load(
        "on_tcp_connect: [{expressions: ['conn.tls.sni == \"\"'], actions: [{type: deny}]}]"
    )
    assert policy.static_paths.root == {"conn": {"tls": {"sni": None}}}
    assert not policy.reads_dynamic
