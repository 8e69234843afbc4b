"""Mutual TLS: the three verification strategies against real clients, and chain size."""

from __future__ import annotations

import ssl

import pytest

from tests.unit.tls.certgen import make_ca, make_leaf
from tests.unit.tls.harness import client_context, python_client, run_pair, terminating_server
from tests.unit.tls.test_handshake import pair_for
from tlsgate.errors import Problems
from tlsgate.tls.certs import load_ca_bundle
from tlsgate.tls.clientcert import describe_certificate
from tlsgate.tls.contexts import (
    EFFECTIVE_MAX_CERTIFICATE_MESSAGE,
    create_server_context,
    install_sni_selector,
)
from tlsgate.tls.gsocket import TLSHandshakeError

MISSING_CERT = {
    "1.3": ("TLSV13_ALERT_CERTIFICATE_REQUIRED", 116),
    "1.2": ("SSLV3_ALERT_HANDSHAKE_FAILURE", 40),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    server_ca = make_ca("Server CA")
    client_ca = make_ca("Client CA")
    other_ca = make_ca("Other CA")
    good = make_leaf(client_ca, ("alice.clients.test",), client=True, common_name="alice")
    stranger = make_leaf(other_ca, ("mallory.clients.test",), client=True, common_name="mallory")
    (directory / "client-ca.pem").write_bytes(client_ca.cert_pem)
    return {
        "server_ca": server_ca,
        "server_pair": pair_for(make_leaf(server_ca)),
        "client_ca_path": str(directory / "client-ca.pem"),
        "good": good.write(directory, "good"),
        "stranger": stranger.write(directory, "stranger"),
        "good_leaf": good,
        "dir": directory,
        "client_ca": client_ca,
    }


def server_context(pki, strategy):
    problems = Problems()
    bundle = load_ca_bundle([pki["client_ca_path"]], "<test>", "cas", problems)
    assert bundle is not None, problems.items
    return create_server_context(
        pki["server_pair"], client_cas=bundle, verify_strategy=strategy, session_resumption=False
    )


def attempt(pki, strategy, version, client_cert):
    ctx = server_context(pki, strategy)
    cert = pki[client_cert] if client_cert else None
    client_ctx = client_context(pki["server_ca"].cert_pem, version=version, cert=cert)
    return run_pair(terminating_server(ctx), python_client(client_ctx))


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("strategy", ["require-and-verify", "require-any", "request"])
def test_valid_client_certificate_is_accepted_and_described(pki, strategy, version):
    server, client = attempt(pki, strategy, version, "good")

    assert (server.error, client.error) == (None, None)
    assert client.value["answer"] == b"pong"
    described = describe_certificate(server.value["peer"])
    assert described["subject"]["common_name"] == "alice"
    assert described["subject"]["organization"] == "Test Clients"
    assert described["issuer"]["common_name"] == "Client CA"
    assert described["san"]["dns_names"] == ["alice.clients.test"]
    assert described["serial_number"] == format(pki["good_leaf"].cert.serial_number, "x")


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_require_and_verify_rejects_other_ca_with_unknown_ca(pki, version):
    server, client = attempt(pki, "require-and-verify", version, "stranger")

    assert isinstance(client.error, ssl.SSLError), client
    assert client.error.reason == "TLSV1_ALERT_UNKNOWN_CA"
    assert isinstance(server.error, TLSHandshakeError)
    assert server.error.alert == 48
    assert "certificate verify failed" in server.error.reason


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("strategy", ["require-and-verify", "require-any"])
def test_missing_client_certificate_is_refused(pki, strategy, version):
    server, client = attempt(pki, strategy, version, None)

    reason, alert = MISSING_CERT[version]
    assert isinstance(client.error, ssl.SSLError), client
    assert client.error.reason == reason
    assert isinstance(server.error, TLSHandshakeError)
    assert server.error.alert == alert


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("strategy", ["require-any", "request"])
def test_other_ca_accepted_when_not_verifying(pki, strategy, version):
    server, client = attempt(pki, strategy, version, "stranger")

    assert (server.error, client.error) == (None, None)
    assert describe_certificate(server.value["peer"])["subject"]["common_name"] == "mallory"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_request_without_certificate_is_accepted(pki, version):
    server, client = attempt(pki, "request", version, None)

    assert (server.error, client.error) == (None, None)
    assert server.value["peer"] is None


def test_client_chain_over_openssl_limit_is_refused_with_an_alert(pki):
    """The 256 KiB max_certificate_message cannot be set; OpenSSL's 100 KiB cap holds."""
    names = tuple(f"host{i:05d}.padding.clients.test" for i in range(4000))
    big = make_leaf(pki["client_ca"], names, client=True, common_name="big")
    assert len(big.cert_pem) * 3 // 4 > EFFECTIVE_MAX_CERTIFICATE_MESSAGE
    pki["big"] = big.write(pki["dir"], "big")

    server, client = attempt(pki, "require-and-verify", "1.3", "big")

    assert isinstance(client.error, ssl.SSLError), client
    assert client.error.reason == "SSLV3_ALERT_ILLEGAL_PARAMETER"
    assert isinstance(server.error, TLSHandshakeError)
    assert "excessive message size" in server.error.reason


def test_client_chain_under_openssl_limit_is_accepted(pki):
    names = tuple(f"host{i:05d}.padding.clients.test" for i in range(2500))
    large = make_leaf(pki["client_ca"], names, client=True, common_name="large")
    assert 64 * 1024 < len(large.cert_pem) * 3 // 4 < EFFECTIVE_MAX_CERTIFICATE_MESSAGE
    pki["large"] = large.write(pki["dir"], "large")

    server, client = attempt(pki, "require-and-verify", "1.3", "large")

    assert (server.error, client.error) == (None, None)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_context_switched_by_sni_still_authenticates_clients(pki, version):
    """The front context asks for no certificate; the one chosen by SNI requires one."""
    front = create_server_context(
        pair_for(make_leaf(pki["server_ca"], ("front.example.test",))), session_resumption=False
    )
    install_sni_selector(front, lambda sni: server_context(pki, "require-and-verify"))

    def connect(cert):
        client_ctx = client_context(pki["server_ca"].cert_pem, version=version, cert=cert)
        return run_pair(terminating_server(front), python_client(client_ctx))

    server, client = connect(None)
    reason, alert = MISSING_CERT[version]
    assert isinstance(client.error, ssl.SSLError) and client.error.reason == reason
    assert server.error.alert == alert

    server, client = connect(pki["stranger"])
    assert client.error.reason == "TLSV1_ALERT_UNKNOWN_CA"

    server, client = connect(pki["good"])
    assert (server.error, client.error) == (None, None)
    assert describe_certificate(server.value["peer"])["subject"]["common_name"] == "alice"
