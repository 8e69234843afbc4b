"""Loading and checking certificates and keys; choosing one by SNI."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from tests.unit.tls.certgen import make_ca, make_leaf
from tlsgate.errors import Problems
from tlsgate.tls.certs import CertificateStore, load_ca_bundle, load_certificate_pair


@pytest.fixture(scope="module")
def ca():
    return make_ca("Certs Test CA")


def load(cert, key, problems=None, **kwargs):
    problems = problems if problems is not None else Problems()
    return load_certificate_pair(
        cert, key, "gw.toml", "certificates[0]", problems, **kwargs
    ), problems


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ed25519"])
def test_loads_files_of_each_key_type(ca, tmp_path, kind):
    leaf = make_leaf(ca, ("App.Example.Test", "*.apps.example.test"), kind=kind)
    pair, problems = load(*leaf.write(tmp_path, kind))

    assert problems.items == []
    assert pair.dns_names == ("app.example.test", "*.apps.example.test")
    assert pair.not_after == leaf.cert.not_valid_after_utc
    assert serialization.load_pem_private_key(pair.key_pem, None).public_key() == (
        leaf.key.public_key()
    )


def test_pem_text_accepted_and_key_never_in_repr(ca):
    leaf = make_leaf(ca)
    pair, problems = load(leaf.chain_pem().decode(), leaf.key_pem.decode())

    assert problems.items == [] and pair.source == "<pem>"
    assert b"PRIVATE KEY" in pair.key_pem
    assert "PRIVATE" not in repr(pair) and "PRIVATE" not in str(pair)
    assert "key_pem" not in repr(pair)


def test_key_not_matching_certificate_is_an_error(ca):
    leaf, other = make_leaf(ca), make_leaf(ca)
    pair, problems = load(leaf.cert_pem.decode(), other.key_pem.decode())

    assert pair is None
    assert [str(p) for p in problems.errors] == [
        "gw.toml: certificates[0].key: private key does not match the certificate"
    ]


def test_chain_out_of_order_is_an_error(ca):
    intermediate = make_ca("Intermediate", issuer=ca)
    leaf = make_leaf(intermediate)
    reversed_chain = (intermediate.cert_pem + leaf.cert_pem).decode()
    pair, problems = load(reversed_chain, leaf.key_pem.decode())

    assert pair is None
    assert "chain out of order" in str(problems.errors[0])
    assert problems.errors[0].key_path == "certificates[0].cert"

    good, problems = load(leaf.chain_pem().decode(), leaf.key_pem.decode())
    assert problems.items == [] and good is not None


def test_unreadable_file_and_missing_pem_are_errors(ca, tmp_path):
    (tmp_path / "empty.pem").write_text("nothing here\n")
    pair, problems = load(str(tmp_path / "missing.crt"), str(tmp_path / "empty.pem"))

    assert pair is None
    messages = [str(p) for p in problems.errors]
    assert messages[0].startswith("gw.toml: certificates[0].cert: cannot read ")
    assert "No such file" in messages[0]
    assert messages[1] == "gw.toml: certificates[0].key: no PEM private key found"


def test_encrypted_key_is_an_error(ca):
    leaf = make_leaf(ca)
    encrypted = leaf.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    pair, problems = load(leaf.cert_pem.decode(), encrypted.decode())

    assert pair is None
    assert "encrypted" in problems.errors[0].message


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(-30, -1, "certificate expired on"), (5, 30, "certificate is not valid before")],
)
def test_expired_and_not_yet_valid_are_warnings(ca, start, end, expected):
    now = datetime.now(UTC)
    leaf = make_leaf(
        ca, not_before=now + timedelta(days=start), not_after=now + timedelta(days=end)
    )
    pair, problems = load(leaf.cert_pem.decode(), leaf.key_pem.decode())

    assert pair is not None and problems.errors == []
    assert len(problems.warnings) == 1
    assert str(problems.warnings[0]).startswith(
        f"gw.toml: certificates[0].cert: warning: {expected}"
    )


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_key_readable_by_others_is_a_warning(ca, tmp_path, mode):
    cert_path, key_path = make_leaf(ca).write(tmp_path, "leaf", key_mode=mode)
    pair, problems = load(cert_path, key_path)

    assert pair is not None
    assert [p.key_path for p in problems.warnings] == ["certificates[0].key"]
    assert f"{mode:04o}" in problems.warnings[0].message


def test_field_names_for_terminate_tls(ca):
    leaf, other = make_leaf(ca), make_leaf(ca)
    problems = Problems()
    load_certificate_pair(
        leaf.cert_pem.decode(),
        other.key_pem.decode(),
        "gw.toml",
        "endpoints[0].traffic_policy.on_tcp_connect[0].actions[0].config",
        problems,
        cert_field="server_certificate",
        key_field="server_private_key",
    )
    assert problems.errors[0].key_path.endswith("config.server_private_key")


def test_matches_follows_rfc6125(ca):
    leaf = make_leaf(ca, ("api.example.test", "*.apps.example.test"))
    pair, _ = load(leaf.cert_pem.decode(), leaf.key_pem.decode())

    assert pair.matches("API.example.test.")
    assert pair.matches("x.apps.example.test")
    assert not pair.matches("apps.example.test")
    assert not pair.matches("a.b.apps.example.test")
    assert not pair.matches("example.test")


def test_store_prefers_exact_then_wildcard_then_none(ca):
    wildcard_leaf = make_leaf(ca, ("*.example.test",))
    exact_leaf = make_leaf(ca, ("app.example.test",))
    wildcard, _ = load(wildcard_leaf.cert_pem.decode(), wildcard_leaf.key_pem.decode())
    exact, _ = load(exact_leaf.cert_pem.decode(), exact_leaf.key_pem.decode())
    store = CertificateStore.build([wildcard, exact])

    assert store.find("APP.example.test") is exact
    assert store.find("other.example.test") is wildcard
    assert store.find("deep.other.example.test") is None
    assert store.find("example.test") is None


def test_ca_bundle_accepts_cas_and_rejects_leaves_and_non_pem(ca, tmp_path):
    path = tmp_path / "cas.pem"
    other = make_ca("Second CA")
    path.write_bytes(ca.cert_pem + other.cert_pem)
    problems = Problems()
    bundle = load_ca_bundle([str(path)], "gw.toml", "mutual_tls_certificate_authorities", problems)
    assert problems.items == [] and bundle.count == 2

    problems = Problems()
    bundle = load_ca_bundle(
        [make_leaf(ca).cert_pem.decode(), "-----BEGIN nonsense"],
        "gw.toml",
        "mtls",
        problems,
    )
    assert bundle is None
    assert [(p.key_path, p.message.split(" ")[0]) for p in problems.errors] == [
        ("mtls[0]", "certificate"),
        ("mtls[1]", "no"),
    ]
    assert "is not a CA" in problems.errors[0].message


def test_key_file_mode_check_uses_the_file(ca, tmp_path):
    cert_path, key_path = make_leaf(ca).write(tmp_path, "leaf")
    os.chmod(key_path, 0o600)
    _, problems = load(cert_path, key_path)
    assert problems.items == []
