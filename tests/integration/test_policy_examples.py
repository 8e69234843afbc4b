"""ngrok's documented traffic-policy examples for TLS endpoints, loaded as files and run.

The fixtures in tests/data/ngrok-policy-examples/ are ngrok's own documents (the README
there names each source and adaptation). They are given to the gateway unchanged
through ``traffic_policy_file``; only the ``@NAME@`` certificate placeholders are filled,
in a copy, as the README describes. One gateway serves every example, each on its own
endpoint (SNI), so the whole set costs one start; each test checks what the example's
documentation promises, with real clients.
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
from pathlib import Path

import pytest

from tests.integration.test_policy import closed_without_alert, connect, greet, local_ca
from tests.support.certs import TestCA
from tests.support.gateway import Gateway, read_line, wait_for
from tests.support.upstream import TlsUpstream

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parent.parent / "data" / "ngrok-policy-examples"

#: endpoint name -> (example file, whether the example terminates TLS at the gateway)
ENDPOINTS = {
    "minmax-yml": ("terminate-tls-min-max-version.yml", True),
    "minmax-json": ("terminate-tls-min-max-version.json", True),
    "custom-yml": ("terminate-tls-custom-certificate.yml", True),
    "custom-json": ("terminate-tls-custom-certificate.json", True),
    "mtls": ("terminate-tls-mutual-tls.yml", True),
    "noconfig": ("terminate-tls-no-config.yml", True),
    "ipbasic": ("restrict-ips-tls-basic.yml", False),
    "iploop": ("restrict-ips-tls-basic-loopback.yml", False),
    "iplists": ("restrict-ips-allow-deny-lists.json", False),
    "iptesting": ("restrict-ips-tls-testing-traffic.yml", False),
    "deny-yml": ("deny-tcp-basic.yml", False),
    "deny-json": ("deny-tcp-basic.json", False),
    "denyip": ("how-it-works-deny-client-ip.yml", False),
    "notinlist": ("expressions-not-in-list.yml", False),
    "forward": ("forward-internal-tls.yml", False),
    "setvars": ("set-vars-basic.yml", False),
    "log": ("log-basic.yml", False),
}
#: close-connection-basic closes names starting with "dc.": a wildcard endpoint shows both
#: sides (the exact names above win over it).
CLOSE_WILDCARD = "example.test"
PLACEHOLDER = re.compile(r"@[A-Z_]+@")


def fill_placeholders(text: str, values: dict[str, str]) -> str:
    """Replace ``@NAME@`` with PEM text: in YAML block scalars every PEM line keeps the
    placeholder's indentation; ``@NAME_JSON@`` gets the JSON-escaped text."""
    lines = []
    for line in text.splitlines(keepends=True):
        for name, pem in values.items():
            json_marker, marker = f"@{name}_JSON@", f"@{name}@"
            if json_marker in line:
                line = line.replace(json_marker, json.dumps(pem)[1:-1])
            elif marker in line:
                indent = line[: len(line) - len(line.lstrip())]
                line = line.replace(marker, pem.strip().replace("\n", "\n" + indent))
        lines.append(line)
    return "".join(lines)


class Examples:
    """One gateway with every example on its own endpoint, and what the tests need."""

    def __init__(self, directory: Path, pki):
        self.pki = pki
        own = TestCA(directory / "own", "custom certificate CA")
        self.custom_ca = own.files.cert
        custom = own.issue("custom", ["custom-yml.example.test", "custom-json.example.test"])
        self.clients = TestCA(directory / "clients", "client CA")
        self.alice = self.clients.issue("alice", ["alice.clients.test"], client=True)
        placeholders = {
            "APP_CERT_PEM": custom.cert_pem.decode(),
            "APP_KEY_PEM": custom.key_pem.decode(),
            "CLIENT_CA_PEM": self.clients.files.cert_pem.decode(),
        }
        policies = directory / "policies"
        policies.mkdir()
        self.upstreams: dict[str, TlsUpstream] = {}
        endpoints = []
        for name, (filename, terminates) in ENDPOINTS.items():
            original = EXAMPLES / filename
            text = original.read_text()
            if PLACEHOLDER.search(text):
                path = policies / filename
                path.write_text(fill_placeholders(text, placeholders))
            else:
                path = policies / filename
                shutil.copyfile(original, path)  # byte for byte
            upstream = TlsUpstream(name, pki.server, tls=not terminates)
            self.upstreams[name] = upstream
            endpoints.append(
                {"name": name, "url": f"tls://{name}.example.test", "upstream": {"url": upstream.address},
                 "traffic_policy_file": str(path)}
            )  # fmt: skip
        self.upstreams["app-internal"] = internal = TlsUpstream("app-internal", pki.server)
        endpoints.append(
            {"name": "app-internal", "url": "tls://app.internal:443", "bindings": ["internal"],
             "upstream": {"url": internal.address}}
        )  # fmt: skip
        self.upstreams["close"] = close = TlsUpstream("close", pki.server)
        endpoints.append(
            {"name": "close", "url": f"tls://*.{CLOSE_WILDCARD}", "upstream": {"url": close.address},
             "traffic_policy_file": str(EXAMPLES / "close-connection-basic.yml")}
        )  # fmt: skip
        self.gw = Gateway(directory / "gw", {"endpoints": endpoints}).start()
        self.gateway_ca = local_ca(self.gw)

    def events_for(self, endpoint: str, count: int) -> list[dict]:
        """``count`` events of ``endpoint`` (each test uses its own endpoints), ordered by
        when the connection started: workers write events when connections close."""

        def enough():
            found = [
                e["object"]
                for e in self.gw.events()
                if (e["object"]["endpoint"] or {}).get("name") == endpoint
            ]
            return found if len(found) >= count else None

        found = wait_for(enough, what=f"{count} events of {endpoint}")
        assert len(found) == count, found
        return sorted(found, key=lambda obj: obj["conn"]["start_ts"])

    def close(self) -> None:
        self.gw.stop()
        for upstream in self.upstreams.values():
            upstream.close()


@pytest.fixture(scope="module")
def ex(tmp_path_factory, pki):
    examples = Examples(tmp_path_factory.mktemp("examples"), pki)
    yield examples
    examples.close()


def test_placeholders_are_filled_and_nothing_else_changes():
    pem = "-----BEGIN X-----\nAAAA\n-----END X-----\n"
    text = (EXAMPLES / "terminate-tls-custom-certificate.yml").read_text()
    filled = fill_placeholders(text, {"APP_CERT_PEM": pem, "APP_KEY_PEM": pem})
    assert PLACEHOLDER.search(text) and not PLACEHOLDER.search(filled)
    assert (
        "            -----BEGIN X-----\n            AAAA\n            -----END X-----\n" in filled
    )
    assert [
        line for line in filled.splitlines() if "X-----" not in line and "AAAA" not in line
    ] == [line for line in text.splitlines() if not PLACEHOLDER.search(line)]
    raw = (EXAMPLES / "terminate-tls-custom-certificate.json").read_text()
    doc = json.loads(fill_placeholders(raw, {"APP_CERT_PEM": pem, "APP_KEY_PEM": pem}))
    assert doc["on_tcp_connect"][0]["actions"][0]["config"]["server_certificate"] == pem


@pytest.mark.parametrize("name", ["minmax-yml", "minmax-json"])
def test_terminate_tls_min_max_version(ex, name):
    sni = f"{name}.example.test"
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        connect(ex.gw.port, sni, ex.gateway_ca, version=ssl.TLSVersion.TLSv1_2)
    with connect(ex.gw.port, sni, ex.gateway_ca) as s:
        assert s.version() == "TLSv1.3"
        assert read_line(s) == f"hello from {name}\n"
    failed, ok = ex.events_for(name, 2)
    assert failed["close_reason"] == "handshake_failed"
    assert failed["tls"]["alert_sent"] == "protocol_version"
    assert ok["tls"]["version"] == "1.3"
    assert ex.upstreams[name].accepted == 1


@pytest.mark.parametrize("name", ["custom-yml", "custom-json"])
def test_terminate_tls_custom_certificate(ex, name):
    sni = f"{name}.example.test"
    # Verifies only against the CA that issued the certificate pasted into the policy.
    assert greet(ex.gw.port, sni, ex.custom_ca) == f"hello from {name}"
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(ex.gw.port, sni, ex.gateway_ca)
    served, refused = ex.events_for(name, 2)
    assert served["termination"] == "gateway" and served["close_reason"] == "eof"
    assert refused["close_reason"] == "handshake_failed"  # the client's unknown_ca alert


def test_terminate_tls_mutual_tls(ex):
    sni = "mtls.example.test"
    assert greet(ex.gw.port, sni, ex.gateway_ca, cert=ex.alice) == "hello from mtls"
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
        with connect(ex.gw.port, sni, ex.gateway_ca) as s:
            s.recv(100)  # TLS 1.3: the rejection arrives after the client's Finished
    events = ex.events_for("mtls", 2)
    assert events[0]["tls"]["client_certificate"]["subject"]["common_name"] == "alice.clients.test"
    assert events[1]["close_reason"] == "handshake_failed"
    assert ex.upstreams["mtls"].accepted == 1


def test_terminate_tls_no_config_uses_the_local_ca(ex):
    with connect(ex.gw.port, "noconfig.example.test", ex.gateway_ca) as s:
        assert s.getpeercert()["subjectAltName"] == (("DNS", "noconfig.example.test"),)
        assert read_line(s) == "hello from noconfig\n"


@pytest.mark.parametrize("name", ["ipbasic", "iplists"])
def test_restrict_ips_documented_allow_list_closes_loopback(ex, name):
    closed_without_alert(ex.gw.port, f"{name}.example.test")
    obj = ex.events_for(name, 1)[0]
    assert obj["close_reason"] == "ip_restricted" and obj["ip_policy"]["decision"] == "block"
    assert ex.upstreams[name].accepted == 0


def test_restrict_ips_basic_loopback_allows_only_127_0_0_1(ex):
    sni = "iploop.example.test"
    assert greet(ex.gw.port, sni, ex.pki.files.cert) == "hello from iploop"
    closed_without_alert(ex.gw.port, sni, source=("127.0.0.2", 0))
    allowed, denied = ex.events_for("iploop", 2)
    assert (allowed["conn"]["client_ip"], allowed["ip_policy"]["decision"]) == (
        "127.0.0.1",
        "allow",
    )
    assert (denied["conn"]["client_ip"], denied["close_reason"]) == ("127.0.0.2", "ip_restricted")
    assert ex.upstreams["iploop"].accepted == 1


def test_restrict_ips_testing_traffic_logs_the_would_be_decision(ex):
    assert greet(ex.gw.port, "iptesting.example.test", ex.pki.files.cert) == "hello from iptesting"
    obj = ex.events_for("iptesting", 1)[0]
    assert obj["close_reason"] == "eof"
    assert obj["ip_policy"]["decision"] == "block"
    assert obj["traffic_policy"]["logs"] == [
        {
            "message": "Restrict IPs action would be deny for 127.0.0.1.",
            "matched_cidr": "127.0.0.0/8",
            "error_code": "",
            "error_message": "",
        }
    ]


@pytest.mark.parametrize("name", ["deny-yml", "deny-json"])
def test_deny_tcp_basic(ex, name):
    closed_without_alert(ex.gw.port, f"{name}.example.test")
    assert ex.events_for(name, 1)[0]["close_reason"] == "policy_denied"
    assert ex.upstreams[name].accepted == 0


def test_how_it_works_denies_only_that_client_ip(ex):
    sni = "denyip.example.test"
    assert greet(ex.gw.port, sni, ex.pki.files.cert) == "hello from denyip"
    closed_without_alert(ex.gw.port, sni, source=("127.0.0.2", 0))
    allowed, denied = ex.events_for("denyip", 2)
    assert allowed["close_reason"] == "eof"
    assert (denied["conn"]["client_ip"], denied["close_reason"]) == ("127.0.0.2", "policy_denied")
    assert ex.upstreams["denyip"].accepted == 1


def test_expressions_not_in_list_denies_loopback(ex):
    closed_without_alert(ex.gw.port, "notinlist.example.test")
    assert ex.events_for("notinlist", 1)[0]["close_reason"] == "policy_denied"
    assert ex.upstreams["notinlist"].accepted == 0


def test_forward_internal_tls(ex):
    assert greet(ex.gw.port, "forward.example.test", ex.pki.files.cert) == "hello from app-internal"
    obj = ex.events_for("forward", 1)[0]
    assert obj["forwarded_to"] == {"name": "app-internal", "url": "tls://app.internal:443"}
    assert (ex.upstreams["forward"].accepted, ex.upstreams["app-internal"].accepted) == (0, 1)


def test_set_vars_basic(ex):
    assert greet(ex.gw.port, "setvars.example.test", ex.pki.files.cert) == "hello from setvars"
    assert ex.events_for("setvars", 1)[0]["traffic_policy"]["logs"] == [
        {"body": "bar 1.5 1 value value2"}
    ]


def test_log_basic(ex):
    assert greet(ex.gw.port, "log.example.test", ex.pki.files.cert) == "hello from log"
    obj = ex.events_for("log", 1)[0]
    assert obj["traffic_policy"]["logs"] == [
        {"message": "Log action executed.", "endpoint_id": "ep_log"}
    ]


def test_close_connection_basic(ex):
    closed_without_alert(ex.gw.port, f"dc.{CLOSE_WILDCARD}")
    assert greet(ex.gw.port, f"web.{CLOSE_WILDCARD}", ex.pki.files.cert) == "hello from close"
    closed, passed = ex.events_for("close", 2)
    assert (closed["conn"]["server_name"], closed["close_reason"]) == (
        f"dc.{CLOSE_WILDCARD}",
        "policy_denied",
    )
    assert (passed["conn"]["server_name"], passed["close_reason"]) == (
        f"web.{CLOSE_WILDCARD}",
        "eof",
    )
    assert ex.upstreams["close"].accepted == 1


def test_every_example_file_is_used_unchanged():
    used = {filename for filename, _ in ENDPOINTS.values()} | {"close-connection-basic.yml"}
    on_disk = {p.name for p in EXAMPLES.iterdir() if p.suffix in (".yml", ".json")}
    assert used == on_disk
