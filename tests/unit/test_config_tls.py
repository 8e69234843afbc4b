"""[tls], [[certificates]], tls:// upstreams and terminate-tls material, checked at config load."""

from __future__ import annotations

import os

import pytest

from tests.support.certs import TestCA
from tlsgate.config.load import load_config
from tlsgate.errors import ConfigError


def problems_of(path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path / "pki")


def test_certificate_store_loads_and_reports_bad_pairs(tmp_path, ca):
    good = ca.issue("good", ["good.example.test"])
    other = ca.issue("other", ["other.example.test"])
    path = tmp_path / "g.toml"
    path.write_text(
        f'[[certificates]]\ncert = "{good.cert}"\nkey = "{good.key}"\n'
        f'[[certificates]]\ncert = "{good.cert}"\nkey = "{other.key}"\n'
        f'[[certificates]]\ncert = "missing.crt"\nkey = "{good.key}"\n'
        '[tls]\nauto_certificates = "maybe"\nsession_resumption = "yes"\n'
    )
    lines = problems_of(path)
    assert f"{path}: certificates[1].key: private key does not match the certificate" in lines
    assert any(line.startswith(f"{path}: certificates[2].cert: ") for line in lines)
    assert any(line.startswith(f"{path}: tls.auto_certificates: ") for line in lines)
    assert any(line.startswith(f"{path}: tls.session_resumption: ") for line in lines)
    assert not any("certificates[0]" in line for line in lines)


def test_world_readable_key_and_tls_verify_off_are_warnings(tmp_path, ca):
    leaf = ca.issue("leaf", ["a.example.test"])
    os.chmod(leaf.key, 0o644)
    path = tmp_path / "g.toml"
    path.write_text(
        f'[[certificates]]\ncert = "{leaf.cert}"\nkey = "{leaf.key}"\n'
        '[[endpoints]]\nname = "a"\nurl = "tls://a.example.test"\n'
        '[endpoints.upstream]\nurl = "tls://127.0.0.1:9443"\ntls_verify = false\n'
        "[endpoints.traffic_policy]\n"
        'on_tcp_connect = [{ actions = [{ type = "terminate-tls" }] }]\n'
    )
    config, warnings = load_config(path)
    assert config.certificates[0].pair.dns_names == ("a.example.test",)
    shown = [str(w) for w in warnings]
    assert any(w.startswith(f"{path}: certificates[0].key: warning: ") for w in shown), shown
    assert any(w.startswith(f"{path}: endpoints[0].upstream.tls_verify: warning: ") for w in shown), shown


def test_terminate_tls_certificate_problems_name_the_policy_key(tmp_path, ca):
    one = ca.issue("one", ["one.example.test"])
    two = ca.issue("two", ["two.example.test"])
    path = tmp_path / "g.toml"
    path.write_text(
        '[[endpoints]]\nname = "a"\nurl = "tls://a.example.test"\nupstream = { url = 9443 }\n'
        "[endpoints.traffic_policy]\n"
        "on_tcp_connect = [{ actions = [{ type = \"terminate-tls\", config = { "
        f'server_certificate = "{one.cert}", server_private_key = "{two.key}", '
        f'mutual_tls_certificate_authorities = ["{one.cert}"] }} }}] }}]\n'
    )
    lines = problems_of(path)
    prefix = f"{path}: endpoints[0].traffic_policy.on_tcp_connect[0].actions[0].config"
    assert f"{prefix}.server_private_key: private key does not match the certificate" in lines
    assert any(line.startswith(f"{prefix}.mutual_tls_certificate_authorities[0]: ") and "not a CA" in line for line in lines)


def test_relative_certificate_paths_resolve_against_the_config_file(tmp_path, ca):
    leaf = ca.issue("leaf", ["a.example.test"])
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "leaf.crt").write_bytes(leaf.cert_pem)
    fd = os.open(conf_dir / "leaf.key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, leaf.key_pem)
    os.close(fd)
    path = conf_dir / "g.toml"
    path.write_text('[[certificates]]\ncert = "leaf.crt"\nkey = "leaf.key"\n')
    config, _ = load_config(path)
    assert config.certificates[0].cert == conf_dir / "leaf.crt"


def test_upstream_tls_options_need_a_tls_upstream(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(
        '[[endpoints]]\nname = "a"\nurl = "tls://a.example.test"\n'
        '[endpoints.upstream]\nurl = "127.0.0.1:9443"\ntls_verify = false\nserver_name = "x"\n'
    )
    lines = problems_of(path)
    assert f"{path}: endpoints[0].upstream.tls_verify: only applies to a tls:// upstream (re-encryption)" in lines
    assert f"{path}: endpoints[0].upstream.server_name: only applies to a tls:// upstream (re-encryption)" in lines
