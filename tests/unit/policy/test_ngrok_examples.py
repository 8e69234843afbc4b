"""ngrok's documented TLS-endpoint policy examples load unchanged and behave as documented.

The files are a verbatim copy of ../shared/reference/ngrok-policy-examples, kept in
tests/data/ngrok-policy-examples so the suite is self-contained (the README there lists
each file's source, adaptation and documented behaviour).  Placeholders ``@NAME@`` are filled
with freshly generated PEM text.  What needs sockets (the certificate actually served,
alerts) is left to the integration tests; here the decision is checked.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.unit.policy.helpers import NOW, conn
from tlsgate.policy.engine import evaluate
from tlsgate.policy.load import load_policy_file

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "ngrok-policy-examples"
EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*") if p.suffix in (".yml", ".json"))
assert len(EXAMPLE_FILES) == 18, EXAMPLE_FILES


def _pem_pair(common_name: str, ca: bool) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode().strip()
    key_pem = (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
        .strip()
    )
    return cert_pem, key_pem


@pytest.fixture(scope="module")
def pems() -> dict[str, str]:
    app_cert, app_key = _pem_pair("app.example.com", ca=False)
    ca_cert, _ = _pem_pair("Test Client CA", ca=True)
    return {"APP_CERT_PEM": app_cert, "APP_KEY_PEM": app_key, "CLIENT_CA_PEM": ca_cert}


def _fill(text: str, pems: dict[str, str]) -> str:
    """Replace ``@NAME@`` (JSON-escaped for ``@NAME_JSON@``) keeping YAML block indentation."""

    def replace(match: re.Match) -> str:
        indent, name, json_escaped = match.groups()
        pem = pems[name]
        if json_escaped:
            return indent + json.dumps(pem)[1:-1]
        return "\n".join(indent + line for line in pem.splitlines())

    return re.sub(r"^([ \t]*)@([A-Z_]+?)(_JSON)?@", replace, text, flags=re.MULTILINE)


def load_example(name: str, pems: dict[str, str], tmp_path: Path):
    text = (EXAMPLES / name).read_text()
    if "@" in text:
        text = re.sub(r'"@([A-Z_]+)_JSON@"', lambda m: json.dumps(pems[m.group(1)]), text)
        text = _fill(text, pems)
        path = tmp_path / name
        path.write_text(text)
    else:
        path = EXAMPLES / name  # unchanged file, loaded where it is
    policy, problems = load_policy_file(path)
    assert [str(p) for p in problems.items] == []
    assert policy is not None
    return policy


def test_examples_are_present():
    assert len(EXAMPLE_FILES) >= 18


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_loads(name, pems, tmp_path):
    load_example(name, pems, tmp_path)


def decide(name, pems, tmp_path, client_ip="127.0.0.1", sni="app.example.com"):
    return evaluate(load_example(name, pems, tmp_path), conn(client_ip, sni), NOW)


def test_terminate_tls_min_max_version(pems, tmp_path):
    for name in ("terminate-tls-min-max-version.yml", "terminate-tls-min-max-version.json"):
        decision = decide(name, pems, tmp_path)
        assert decision.outcome == "terminate_tls"
        assert (decision.terminate_tls.min_version, decision.terminate_tls.max_version) == (
            "1.3",
            "1.3",
        )


def test_terminate_tls_custom_certificate_passes_the_pem_through(pems, tmp_path):
    for name in ("terminate-tls-custom-certificate.yml", "terminate-tls-custom-certificate.json"):
        tls = decide(name, pems, tmp_path).terminate_tls
        assert tls.server_certificate == pems["APP_CERT_PEM"]
        assert tls.server_private_key == pems["APP_KEY_PEM"]


def test_terminate_tls_mutual_tls(pems, tmp_path):
    tls = decide("terminate-tls-mutual-tls.yml", pems, tmp_path).terminate_tls
    assert tls.mutual_tls_certificate_authorities == (pems["CLIENT_CA_PEM"],)
    assert tls.mutual_tls_verification_strategy == "require-and-verify"


def test_terminate_tls_no_config_uses_defaults(pems, tmp_path):
    tls = decide("terminate-tls-no-config.yml", pems, tmp_path).terminate_tls
    assert (tls.min_version, tls.max_version, tls.server_certificate) == ("1.2", "1.3", None)


def test_restrict_ips_basic_closes_loopback(pems, tmp_path):
    decision = decide("restrict-ips-tls-basic.yml", pems, tmp_path)
    assert (decision.close_reason, decision.ip_policy_decision) == ("ip_restricted", "block")
    assert decide("restrict-ips-tls-basic.yml", pems, tmp_path, "1.1.1.1").outcome == "continue"


def test_restrict_ips_basic_loopback(pems, tmp_path):
    assert (
        decide("restrict-ips-tls-basic-loopback.yml", pems, tmp_path, "127.0.0.1").outcome
        == "continue"
    )
    assert (
        decide("restrict-ips-tls-basic-loopback.yml", pems, tmp_path, "127.0.0.2").close_reason
        == "ip_restricted"
    )


def test_restrict_ips_allow_deny_lists(pems, tmp_path):
    assert (
        decide("restrict-ips-allow-deny-lists.json", pems, tmp_path).close_reason == "ip_restricted"
    )
    assert (
        decide("restrict-ips-allow-deny-lists.json", pems, tmp_path, "1.1.1.1").outcome
        == "continue"
    )


def test_restrict_ips_testing_traffic_logs_the_would_be_decision(pems, tmp_path):
    decision = decide("restrict-ips-tls-testing-traffic.yml", pems, tmp_path)
    assert decision.outcome == "continue"
    assert decision.ip_policy_decision == "block"
    assert decision.logs == (
        {
            "message": "Restrict IPs action would be deny for 127.0.0.1.",
            "matched_cidr": "127.0.0.0/8",
            "error_code": "",
            "error_message": "",
        },
    )


def test_deny_tcp_basic(pems, tmp_path):
    for name in ("deny-tcp-basic.yml", "deny-tcp-basic.json"):
        decision = decide(name, pems, tmp_path)
        assert (decision.outcome, decision.close_reason) == ("close", "policy_denied")


def test_how_it_works_deny_client_ip(pems, tmp_path):
    assert (
        decide("how-it-works-deny-client-ip.yml", pems, tmp_path, "127.0.0.2").close_reason
        == "policy_denied"
    )
    assert (
        decide("how-it-works-deny-client-ip.yml", pems, tmp_path, "127.0.0.1").outcome == "continue"
    )


def test_expressions_not_in_list(pems, tmp_path):
    assert decide("expressions-not-in-list.yml", pems, tmp_path).close_reason == "policy_denied"
    assert (
        decide("expressions-not-in-list.yml", pems, tmp_path, "98.35.32.113").outcome == "continue"
    )
    assert (
        decide("expressions-not-in-list.yml", pems, tmp_path, "2001:4860:7:f0e::f4").outcome
        == "continue"
    )


def test_forward_internal_tls(pems, tmp_path):
    policy = load_example("forward-internal-tls.yml", pems, tmp_path)
    assert [f.url for f in policy.static_forward_urls()] == ["tls://app.internal:443"]
    decision = evaluate(policy, conn(), NOW)
    assert (decision.outcome, decision.forward.url) == ("forward", "tls://app.internal:443")


def test_set_vars_basic(pems, tmp_path):
    decision = decide("set-vars-basic.yml", pems, tmp_path)
    assert decision.logs == ({"body": "bar 1.5 1 value value2"},)
    assert decision.vars["sample_null"] is None
    assert decision.vars["sample_nested_map"] == {"key": ["value1", "value2"]}


def test_log_basic(pems, tmp_path):
    assert decide("log-basic.yml", pems, tmp_path).logs == (
        {"message": "Log action executed.", "endpoint_id": "ep_123"},
    )


def test_close_connection_basic(pems, tmp_path):
    assert (
        decide("close-connection-basic.yml", pems, tmp_path, sni="dc.example.com").close_reason
        == "policy_denied"
    )
    assert decide("close-connection-basic.yml", pems, tmp_path).outcome == "continue"
