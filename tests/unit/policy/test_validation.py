"""Load-time validation: every class of error, with the exact message and key path."""

from __future__ import annotations

import pytest

from tests.unit.policy.helpers import errors, load, parse
from tlsgate.errors import Problems
from tlsgate.policy.load import load_policy_file, parse_policy

ALLOWED = (
    "close-connection, deny, forward-internal, log, rate-limit, restrict-ips, set-vars, "
    "terminate-tls"
)


def test_unknown_action_type_is_reported_with_the_key_path():
    assert errors("on_tcp_connect: [{actions: [{type: deny}, {type: foo}]}]") == [
        f"policy.yml: on_tcp_connect[0].actions[1].type: unknown action type 'foo'; "
        f"TLS endpoints allow: {ALLOWED}"
    ]


def test_misspelt_action_type_gets_a_suggestion():
    assert errors("on_tcp_connect: [{actions: [{type: restrict-ip}]}]") == [
        "policy.yml: on_tcp_connect[0].actions[0].type: unknown action type 'restrict-ip' "
        f"(did you mean 'restrict-ips'?); TLS endpoints allow: {ALLOWED}"
    ]


@pytest.mark.parametrize(
    "action",
    ["custom-response", "redirect", "add-headers", "remove-headers", "url-rewrite",
     "basic-auth", "oauth", "openid-connect", "jwt-validation", "compress-response",
     "circuit-breaker", "verify-webhook"],
)  # fmt: skip
def test_http_only_actions_say_so(action):
    assert errors(f"on_tcp_connect: [{{actions: [{{type: {action}}}]}}]") == [
        f"policy.yml: on_tcp_connect[0].actions[0].type: action '{action}' is only "
        f"available on HTTP endpoints; TLS endpoints allow: {ALLOWED}"
    ]


@pytest.mark.parametrize(
    ("phase", "message"),
    [
        ("on_http_request", "phase not available on TLS endpoints; TLS endpoints run only on_tcp_connect"),
        ("on_http_response", "phase not available on TLS endpoints; TLS endpoints run only on_tcp_connect"),
        ("inbound", "phase (legacy name of on_http_request) not available on TLS endpoints; "
         "TLS endpoints run only on_tcp_connect"),
        ("on_connect", "unknown phase 'on_connect'; TLS endpoints run only on_tcp_connect"),
    ],
)  # fmt: skip
def test_phases_other_than_on_tcp_connect_are_errors(phase, message):
    assert errors(f"{phase}: [{{actions: [{{type: deny}}]}}]") == [
        f"policy.yml: {phase}: {message}"
    ]


def test_rule_without_actions():
    assert errors("on_tcp_connect: [{name: empty, expressions: ['true']}]") == [
        "policy.yml: on_tcp_connect[0].actions: a rule needs at least one action"
    ]
    assert errors("on_tcp_connect: [{actions: []}]") == [
        "policy.yml: on_tcp_connect[0].actions: a rule needs at least one action"
    ]


@pytest.mark.parametrize(
    ("first", "ended_by"),
    [("{type: deny}", "deny"), ("{type: close-connection}", "close-connection"),
     ("{type: forward-internal, config: {url: 'tls://a.internal:443'}}", "forward-internal")],
)  # fmt: skip
def test_action_after_a_terminating_action_is_unreachable(first, ended_by):
    assert errors(
        f"on_tcp_connect: [{{actions: [{first}, {{type: log, config: {{metadata: {{a: b}}}}}}]}}]"
    ) == [
        f"policy.yml: on_tcp_connect[0].actions[1]: unreachable: 'log' comes after "
        f"'{ended_by}' (on_tcp_connect[0].actions[0]), which ends the rule"
    ]


def test_forward_internal_with_on_error_continue_does_not_end_the_rule():
    load(
        "on_tcp_connect: [{actions: [{type: forward-internal, config: "
        "{url: 'tls://a.internal', on_error: continue}}, {type: deny}]}]"
    )


def test_non_terminating_actions_may_be_followed():
    load(
        "on_tcp_connect: [{actions: [{type: restrict-ips, config: {allow: [10.0.0.0/8]}}, "
        "{type: terminate-tls}, {type: log, config: {metadata: {a: b}}}, {type: deny}]}]"
    )


def test_deny_and_close_connection_reject_status_code():
    for action in ("deny", "close-connection"):
        assert errors(
            f"on_tcp_connect: [{{actions: [{{type: {action}, config: {{status_code: 403}}}}]}}]"
        ) == [
            f"policy.yml: on_tcp_connect[0].actions[0].config.status_code: '{action}' takes no "
            "config on TLS endpoints: the connection is closed without a response "
            "(status_code is for HTTP endpoints)"
        ]


def test_unknown_config_key_lists_the_allowed_keys_and_suggests():
    assert errors(
        "on_tcp_connect: [{actions: [{type: restrict-ips, config: {alow: [1.2.3.4/32]}}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].actions[0].config.alow: unknown key (did you mean 'allow'?); "
        "allowed keys: enforce, allow, deny, ip_policies",
    ]
    assert errors(
        "on_tcp_connect: [{actions: [{type: restrict-ips, config: {enforce: true}}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].actions[0].config: restrict-ips needs at least one CIDR in allow or deny",
    ]
    assert errors("on_tcp_connect: [{actions: [{type: deny, config: {reason: x}}]}]") == [
        "policy.yml: on_tcp_connect[0].actions[0].config.reason: unknown key; allowed keys: none"
    ]


def test_restrict_ips_config_errors():
    assert errors(
        "on_tcp_connect: [{actions: [{type: restrict-ips, config: "
        "{enforce: 'yes', allow: [10.0.0.0/33, '::1/128'], deny: 1.2.3.4}}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].actions[0].config.enforce: must be true or false, not a string",
        "policy.yml: on_tcp_connect[0].actions[0].config.allow[0]: '10.0.0.0/33' is not an IPv4 or "
        "IPv6 CIDR (like 192.0.2.0/24 or 2001:db8::/32)",
        "policy.yml: on_tcp_connect[0].actions[0].config.deny: must be a list of strings, not a string",
    ]


def test_restrict_ips_ip_policies_are_not_available():
    assert errors(
        "on_tcp_connect: [{actions: [{type: restrict-ips, config: {enforce: true, ip_policies: [ipp_1]}}]}]"
    )[0] == (
        "policy.yml: on_tcp_connect[0].actions[0].config.ip_policies: ngrok cloud IP policies "
        "(ipp_...) are not available; list CIDRs in allow/deny"
    )


def test_terminate_tls_config_errors():
    assert errors(
        "on_tcp_connect: [{actions: [{type: terminate-tls, config: {min_version: '1.1', "
        "server_certificate: x, mutual_tls_verification_strategy: always, "
        "mutual_tls_certificate_authorities: [ca_123]}}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].actions[0].config.min_version: must be one of '1.2', '1.3', not '1.1'",
        "policy.yml: on_tcp_connect[0].actions[0].config: server_certificate and "
        "server_private_key must be set together",
        "policy.yml: on_tcp_connect[0].actions[0].config.mutual_tls_certificate_authorities[0]: "
        "ngrok certificate authority IDs (ca_...) are not available; give PEM text or a file path",
        "policy.yml: on_tcp_connect[0].actions[0].config.mutual_tls_verification_strategy: must be "
        "one of 'require-and-verify', 'require-any', 'request', not 'always'",
    ]
    assert errors(
        "on_tcp_connect: [{actions: [{type: terminate-tls, config: {min_version: '1.3', max_version: '1.2'}}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].actions[0].config.min_version: '1.3' is above max_version '1.2'"
    ]


def test_forward_internal_config_errors():
    assert errors("on_tcp_connect: [{actions: [{type: forward-internal}]}]") == [
        "policy.yml: on_tcp_connect[0].actions[0].config.url: required: the internal "
        "endpoint's URL, like tls://app.internal:443"
    ]
    assert errors(
        "on_tcp_connect: [{actions: [{type: forward-internal, config: {url: 'tls://app.example.com', on_error: retry}}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].actions[0].config.on_error: must be one of 'halt', 'continue', not 'retry'",
        "policy.yml: on_tcp_connect[0].actions[0].config.url: 'tls://app.example.com': "
        "forward-internal targets internal endpoints, whose host ends in .internal",
    ]
    assert errors(
        "on_tcp_connect: [{actions: [{type: forward-internal, config: {url: 'https://a.internal/x'}}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].actions[0].config.url: 'https://a.internal/x' is not a TLS "
        "endpoint URL like tls://app.internal:443"
    ]


def test_log_and_set_vars_config_errors():
    assert errors("on_tcp_connect: [{actions: [{type: log}]}]") == [
        "policy.yml: on_tcp_connect[0].actions[0].config.metadata: required: a map of names to values, not null"
    ]
    assert errors(
        "on_tcp_connect: [{actions: [{type: set-vars, config: {vars: [{a: 1, b: 2}, {'1x': 3}]}}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].actions[0].config.vars[0]: must be a map with exactly one key: {name: value}",
        "policy.yml: on_tcp_connect[0].actions[0].config.vars[1]: '1x' is not a variable name (letters, digits, _)",
    ]


def test_rate_limit_config_errors():
    assert errors(
        "on_tcp_connect: [{actions: [{type: rate-limit, config: {algorithm: fixed_window, "
        "capacity: 0, rate: 10 seconds, bucket_key: ['conn.clientip']}}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].actions[0].config.algorithm: must be one of 'sliding_window', not 'fixed_window'",
        "policy.yml: on_tcp_connect[0].actions[0].config.capacity: required: an integer above 0, not 0",
        'policy.yml: on_tcp_connect[0].actions[0].config.rate: required: a duration like "60s" or "1m", not \'10 seconds\'',
        "policy.yml: on_tcp_connect[0].actions[0].config.bucket_key[0]: expression 'conn.clientip': "
        "unknown variable 'conn.clientip'",
    ]


def test_expression_syntax_error_names_rule_and_expression():
    assert errors(
        "on_tcp_connect: [{name: broken, expressions: ['conn.client_ip =='], actions: [{type: deny}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].expressions[0]: rule 'broken': expression 'conn.client_ip ==': "
        "syntax error at line 1 column 18: mismatched input '<EOF>' expecting {'[', '{', '(', '.', "
        "'-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}"
    ]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("conn.client_port + 'x' == 'y'", "type error: No such overload: the operation is not defined for the given operand types."),
        ("conn.client_ip", "must evaluate to a boolean, not a string"),
        ("conn.tls.snii == 'a'", "unknown variable 'conn.tls.snii'"),
        ("client_ip == 'a'", "unknown variable 'client_ip'"),
        ("req.url.path == '/'", "variable 'req' is not available on TLS endpoints (HTTP endpoints only)"),
        ("vars.later == 1", "unknown variable 'vars.later': no earlier set-vars action sets it"),
        ("conn.client_port.startsWith('1')", "unknown variable or function 'startsWith' (or a method on a value of the wrong type)"),
        ("false && conn.tls.sn == ''", "unknown variable 'conn.tls.sn'"),
    ],
)  # fmt: skip
def test_expression_type_errors(expression, message):
    text = f'on_tcp_connect: [{{actions: [{{type: deny}}], expressions: ["{expression}"]}}]'
    assert errors(text) == [
        f"policy.yml: on_tcp_connect[0].expressions[0]: rule #0: expression {expression!r}: {message}"
    ]


def test_interpolation_errors_name_the_config_key():
    assert errors(
        "on_tcp_connect: [{actions: [{type: log, config: {metadata: {a: '${conn.nope}', b: '${1 +}'}}}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].actions[0].config.metadata.a: in '${conn.nope}': unknown variable 'conn.nope'",
        "policy.yml: on_tcp_connect[0].actions[0].config.metadata.b: in '${1 +}': syntax error at line 1 "
        "column 4: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', "
        "'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
    ]
    assert errors(
        "on_tcp_connect: [{actions: [{type: log, config: {metadata: {a: '${conn'}}}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].actions[0].config.metadata.a: in '${conn': unterminated '${' at offset 0"
    ]


def test_set_vars_are_visible_to_later_rules_only():
    load(
        "on_tcp_connect: [{actions: [{type: set-vars, config: {vars: [{tier: 2}]}}]},"
        " {expressions: ['vars.tier > 1'], actions: [{type: deny}]}]"
    )
    assert errors(
        "on_tcp_connect: [{expressions: ['vars.tier > 1'], actions: [{type: set-vars, config: {vars: [{tier: 2}]}}]}]"
    ) == [
        "policy.yml: on_tcp_connect[0].expressions[0]: rule #0: expression 'vars.tier > 1': "
        "unknown variable 'vars.tier': no earlier set-vars action sets it"
    ]
    # The sample value keeps its type: comparing an int variable to a string is a type error.
    assert (
        "type error"
        in errors(
            "on_tcp_connect: [{actions: [{type: set-vars, config: {vars: [{tier: 2}]}}]},"
            " {expressions: ['vars.tier < \"x\"'], actions: [{type: deny}]}]"
        )[0]
    )


def test_document_shape_errors():
    assert errors("[1, 2]") == ["policy.yml: (top): policy must be a map, not a list"]
    assert errors("on_tcp_connect: {actions: []}") == [
        "policy.yml: on_tcp_connect: must be a list of rules, not a map"
    ]
    assert errors("on_tcp_connect: [deny]") == [
        "policy.yml: on_tcp_connect[0]: rule must be a map with actions, not a string"
    ]
    assert errors("on_tcp_connect: [{actions: [{type: deny}], expresions: []}]") == [
        "policy.yml: on_tcp_connect[0].expresions: unknown key (did you mean 'expressions'?); "
        "allowed keys: name, expressions, actions"
    ]
    assert errors("on_tcp_connect: [{actions: [{config: {}}]}]") == [
        "policy.yml: on_tcp_connect[0].actions[0].type: required: the action type, like deny"
    ]


def test_inline_policy_paths_are_prefixed():
    problems = Problems()
    doc = {"on_tcp_connect": [{"actions": [{"type": "redirect"}]}]}
    assert parse_policy(doc, "tlsgate.toml", "endpoints[2].traffic_policy", problems) is None
    assert str(problems.items[0]).startswith(
        "tlsgate.toml: endpoints[2].traffic_policy.on_tcp_connect[0].actions[0].type: action 'redirect'"
    )


def test_every_problem_of_a_document_is_reported():
    _, problems = parse(
        "on_http_request: []\non_tcp_connect: [{actions: [{type: foo}]}, {actions: []}]"
    )
    assert len(problems) == 3


@pytest.mark.parametrize("name", ["good.yaml", "good.json", "good.toml"])
def test_files_load_by_extension(name, data_dir):
    policy, problems = load_policy_file(data_dir / name)
    assert problems.items == [] and policy is not None
    assert [r.name for r in policy.rules] == ["office", "everyone else"]
    assert policy.source == str(data_dir / name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad-syntax.yaml", "not valid YAML: "),
        ("bad-syntax.json", "not valid JSON: "),
        ("policy.txt", "policy file must end in .yml, .yaml, .json or .toml"),
        ("missing.yml", "cannot read policy file: No such file or directory"),
    ],
)
def test_file_errors(name, message, data_dir):
    policy, problems = load_policy_file(data_dir / name)
    assert policy is None
    assert str(problems.items[0]).startswith(f"{data_dir / name}: : {message}")


def test_file_problems_name_the_policy_file(data_dir):
    policy, problems = load_policy_file(data_dir / "bad-actions.yml")
    assert policy is None
    assert [str(p) for p in problems.items] == [
        f"{data_dir / 'bad-actions.yml'}: on_tcp_connect[0].actions[1].type: action "
        f"'custom-response' is only available on HTTP endpoints; TLS endpoints allow: {ALLOWED}"
    ]


def test_static_forward_urls_are_exposed_for_the_config_loader():
    policy = load(
        "on_tcp_connect:\n"
        "- actions: [{type: forward-internal, config: {url: 'tls://a.internal:443', on_error: continue}}]\n"
        "- actions: [{type: forward-internal, config: {url: 'tls://${conn.tls.sni}.internal'}}]\n"
    )
    (found,) = policy.static_forward_urls()
    assert (found.source, found.key_path, found.url) == (
        "policy.yml", "on_tcp_connect[0].actions[0].config", "tls://a.internal:443",
    )  # fmt: skip
