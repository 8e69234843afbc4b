"""TLS terminated at the gateway: certificates by SNI, versions, mutual TLS, re-encryption."""

from __future__ import annotations

import hashlib
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.certs import TestCA
from tests.support.gateway import accepts, free_port, read_line, wait_for
from tests.support.upstream import pattern_chunks

pytestmark = pytest.mark.integration

TERMINATE = {"on_tcp_connect": [{"actions": [{"type": "terminate-tls"}]}]}


def terminate(**config):
    action = {"type": "terminate-tls"}
    if config:
        action["config"] = config
    return {"on_tcp_connect": [{"actions": [action]}]}


def endpoint(name, url, upstream, policy=TERMINATE, **extra):
    upstream_conf = {"url": upstream if isinstance(upstream, str) else upstream.address}
    upstream_conf.update(extra.pop("upstream_extra", {}))
    return {"name": name, "url": url, "upstream": upstream_conf, "traffic_policy": policy, **extra}


def local_ca(gw) -> str:
    """The gateway's local CA certificate, through `tlsgate ca path` (creates it if needed)."""
    out = subprocess.run(
        [sys.executable, "-m", "tlsgate", "ca", "path", "-c", str(gw.config_path)],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


def connect(port, sni, cafile, *, version=None, cert=None, ciphers=None):
    ctx = ssl.create_default_context(cafile=cafile)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    if ciphers:
        ctx.set_ciphers(ciphers)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def talk(tls_sock) -> str:
    """Greeting through a terminated connection, then a clean close."""
    with tls_sock:
        line = read_line(tls_sock)
        tls_sock.sendall(b"ECHO\nping")
        assert tls_sock.recv(4) == b"ping"
        return line.strip()


@pytest.fixture
def plain(upstreams):
    return upstreams("plain", tls=False)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_local_ca_certificate_for_each_sni_tls12_and_tls13(gateway, plain, version):
    gw = gateway({"endpoints": [endpoint("wild", "tls://*.example.test", plain)]})
    ca = local_ca(gw)
    for sni in ("a.example.test", "b.c.example.test"):
        with connect(gw.port, sni, ca, version=version) as s:
            cert = s.getpeercert()
            assert ("DNS", sni) in cert["subjectAltName"]
            assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
            assert read_line(s) == "hello from plain\n"
    events = gw.wait_events(2)
    for event in events:
        obj = event["object"]
        assert obj["termination"] == "gateway"
        assert obj["close_reason"] in ("eof", "client_reset")
        assert obj["tls"]["version"] == ("1.2" if version == ssl.TLSVersion.TLSv1_2 else "1.3")
        assert obj["tls"]["cipher_suite"].startswith("TLS_")


def test_custom_certificate_store_and_endpoint_certificate(gateway, plain, tmp_path, pki):
    own = TestCA(tmp_path / "own", "own CA")
    store_cert = own.issue("store", ["*.store.test"])
    exact = own.issue("exact", ["exact.store.test"])
    ep_cert = own.issue("ep", ["ep.example.test"])
    gw = gateway(
        {
            "certificates": [
                {"cert": str(store_cert.cert), "key": str(store_cert.key)},
                {"cert": str(exact.cert), "key": str(exact.key)},
            ],
            "endpoints": [
                endpoint("store", "tls://*.store.test", plain),
                endpoint(
                    "ep",
                    "tls://ep.example.test",
                    plain,
                    policy=terminate(server_certificate=str(ep_cert.cert), server_private_key=str(ep_cert.key)),
                ),
            ],
        }
    )
    cafile = str(own.files.cert)
    with connect(gw.port, "x.store.test", cafile) as s:
        assert s.getpeercert()["subjectAltName"] == (("DNS", "*.store.test"),)
    with connect(gw.port, "exact.store.test", cafile) as s:  # exact SAN beats the wildcard
        assert s.getpeercert()["subjectAltName"] == (("DNS", "exact.store.test"),)
    assert talk(connect(gw.port, "ep.example.test", cafile)) == "hello from plain"


def test_no_certificate_and_no_local_ca_gets_unrecognized_name(gateway, plain):
    gw = gateway({"tls": {"auto_certificates": "off"}, "endpoints": [endpoint("a", "tls://a.example.test", plain)]})
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            ctx.wrap_socket(raw, server_hostname="a.example.test")
    event = gw.wait_events(1)[0]["object"]
    assert event["close_reason"] == "handshake_failed"
    assert "no certificate" in event["tls"]["error"]
    assert plain.accepted == 0


def test_version_outside_min_max_gets_protocol_version_alert(gateway, plain):
    gw = gateway({"endpoints": [endpoint("a", "tls://a.example.test", plain, policy=terminate(min_version="1.3"))]})
    ca = local_ca(gw)
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        connect(gw.port, "a.example.test", ca, version=ssl.TLSVersion.TLSv1_2)
    assert talk(connect(gw.port, "a.example.test", ca, version=ssl.TLSVersion.TLSv1_3)) == "hello from plain"
    first = gw.wait_events(2)[0]["object"]
    assert first["close_reason"] == "handshake_failed"
    assert first["tls"]["alert_sent"] == "protocol_version"
    assert plain.accepted == 1  # a failed handshake never opens an upstream connection


def test_tls11_client_gets_protocol_version_from_openssl(gateway, plain):
    gw = gateway({"endpoints": [endpoint("a", "tls://a.example.test", plain)]})
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{gw.port}", "-servername", "a.example.test",
         "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
        input="", capture_output=True, text=True, timeout=20,
    )
    assert result.returncode != 0
    assert "protocol version" in (result.stdout + result.stderr).lower()
    assert gw.wait_events(1)[0]["object"]["close_reason"] == "handshake_failed"


@pytest.fixture
def mtls(tmp_path):
    good_ca = TestCA(tmp_path / "clients", "client CA")
    other_ca = TestCA(tmp_path / "others", "other CA")
    return {
        "ca": good_ca,
        "good": good_ca.issue("alice", ["alice.clients.test"], client=True),
        "other": other_ca.issue("mallory", ["mallory.others.test"], client=True),
    }


@pytest.mark.parametrize(
    ("strategy", "good", "other", "none"),
    [
        ("require-and-verify", "ok", "UNKNOWN_CA", "CERTIFICATE_REQUIRED"),
        ("require-any", "ok", "ok", "CERTIFICATE_REQUIRED"),
        ("request", "ok", "ok", "ok"),
    ],
)
def test_mutual_tls_strategies(gateway, plain, mtls, strategy, good, other, none):
    policy = terminate(
        mutual_tls_certificate_authorities=[str(mtls["ca"].files.cert)],
        mutual_tls_verification_strategy=strategy,
    )
    gw = gateway({"endpoints": [endpoint("m", "tls://m.example.test", plain, policy=policy)]})
    ca = local_ca(gw)
    for cert, expected in ((mtls["good"], good), (mtls["other"], other), (None, none)):
        if expected == "ok":
            assert talk(connect(gw.port, "m.example.test", ca, cert=cert)) == "hello from plain"
            continue
        # In TLS 1.3 the client learns of the rejection on its first read after the handshake.
        with pytest.raises(ssl.SSLError, match=expected):
            s = connect(gw.port, "m.example.test", ca, cert=cert)
            with s:
                s.recv(100)
    events = gw.wait_events(3)
    with_cert = [e for e in events if "client_certificate" in e["object"].get("tls", {})]
    assert any(e["object"]["tls"]["client_certificate"]["subject"]["common_name"] == "alice.clients.test" for e in with_cert)


def test_mutual_tls_missing_certificate_in_tls12_gets_handshake_failure(gateway, plain, mtls):
    policy = terminate(mutual_tls_certificate_authorities=[str(mtls["ca"].files.cert)])
    gw = gateway({"endpoints": [endpoint("m", "tls://m.example.test", plain, policy=policy)]})
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        connect(gw.port, "m.example.test", local_ca(gw), version=ssl.TLSVersion.TLSv1_2)


def test_fragmented_client_hello_still_selects_certificate_and_enforces_mtls(gateway, plain, mtls, tmp_path):
    """1-byte TLS records must not fall back to a default certificate or skip client auth."""
    own = TestCA(tmp_path / "own", "own CA")
    ep_cert = own.issue("ep", ["frag.example.test"])
    policy = terminate(
        server_certificate=str(ep_cert.cert),
        server_private_key=str(ep_cert.key),
        mutual_tls_certificate_authorities=[str(mtls["ca"].files.cert)],
    )
    gw = gateway({"endpoints": [endpoint("f", "tls://frag.example.test", plain, policy=policy)]})
    for cert, ok in ((mtls["good"], True), (None, False)):
        ctx = ssl.create_default_context(cafile=str(own.files.cert))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the missing cert then fails in the handshake
        if cert:
            ctx.load_cert_chain(cert.cert, cert.key)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname="frag.example.test")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        body = hello[5:]  # one record: re-cut its payload into 1-byte records
        records = b"".join(b"\x16" + hello[1:3] + b"\x00\x01" + body[i : i + 1] for i in range(len(body)))
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(records)
            outcome = _finish_handshake(tls, incoming, outgoing, s)
        if ok:
            assert outcome == "ok"
            assert ("DNS", "frag.example.test") in tls.getpeercert()["subjectAltName"]
        else:
            assert "HANDSHAKE_FAILURE" in outcome


def _finish_handshake(tls, incoming, outgoing, sock) -> str:
    while True:
        try:
            tls.do_handshake()
            return "ok"
        except ssl.SSLWantReadError:
            if out := outgoing.read():
                sock.sendall(out)
            data = sock.recv(65536)
            if not data:
                return "closed"
            incoming.write(data)
        except ssl.SSLError as e:
            return str(e)


def test_100_mib_each_way_through_termination(gateway, plain):
    gw = gateway({"endpoints": [endpoint("a", "tls://a.example.test", plain)]})
    ca = local_ca(gw)
    size = 100 * 1024 * 1024
    expected = hashlib.sha256()
    with connect(gw.port, "a.example.test", ca) as s:
        read_line(s)
        s.sendall(f"SINK {size}\n".encode())
        for piece in pattern_chunks(size, seed=3):
            expected.update(piece)
            s.sendall(piece)
        assert read_line(s).strip() == expected.hexdigest()
    expected, got, received = hashlib.sha256(), hashlib.sha256(), 0
    for piece in pattern_chunks(size, seed=4):
        expected.update(piece)
    with connect(gw.port, "a.example.test", ca) as s:
        read_line(s)
        s.sendall(f"SOURCE {size} 4\n".encode())
        while data := s.recv(1 << 20):
            got.update(data)
            received += len(data)
    assert received == size and got.hexdigest() == expected.hexdigest()


def test_reencrypt_to_tls_upstream_with_private_ca(gateway, upstreams, pki, tmp_path):
    secure = upstreams("secure", proxy_protocol=True)
    wrong_ca = TestCA(tmp_path / "wrong", "wrong CA")
    gw = gateway(
        {
            "endpoints": [
                endpoint("ok", "tls://ok.example.test", f"tls://{secure.address}",
                         upstream_extra={"tls_verify_cas": str(pki.files.cert), "server_name": "app.example.test", "proxy_protocol": 2}),
                endpoint("bad", "tls://bad.example.test", f"tls://{secure.address}",
                         upstream_extra={"tls_verify_cas": str(wrong_ca.files.cert), "server_name": "app.example.test", "proxy_protocol": 2}),
                endpoint("off", "tls://off.example.test", f"tls://{secure.address}",
                         upstream_extra={"tls_verify": False, "proxy_protocol": 2}),
            ]
        }
    )
    ca = local_ca(gw)
    assert talk(connect(gw.port, "ok.example.test", ca)) == "hello from secure"
    # The PROXY header came before the upstream TLS, with the client's address and the SNI.
    header = secure.proxy_headers[0]
    assert header.source[0] == "127.0.0.1" and header.tlvs[0x02] == b"ok.example.test"
    assert secure.sni_seen[0] == "app.example.test"
    s = connect(gw.port, "bad.example.test", ca)
    with s:
        s.settimeout(10)
        assert s.recv(100) == b""
    assert talk(connect(gw.port, "off.example.test", ca)) == "hello from secure"
    events = {e["object"]["endpoint"]["name"]: e["object"] for e in gw.wait_events(3)}
    assert events["bad"]["close_reason"] == "upstream_tls_failed"
    assert "certificate verify failed" in events["bad"]["tls"]["upstream_error"]
    assert events["ok"]["close_reason"] == "eof" and events["off"]["close_reason"] == "eof"
    assert "endpoints[2].upstream.tls_verify: warning: the upstream's certificate is not verified" in gw.log()


def test_tls_upstream_without_termination_is_a_config_error(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('[[endpoints]]\nname = "a"\nurl = "tls://a.example.test"\nupstream = { url = "tls://127.0.0.1:9443" }\n')
    result = subprocess.run([sys.executable, "-m", "tlsgate", "check", "-c", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "endpoints[0].upstream.url: a tls:// upstream means re-encrypting" in result.stderr


def test_ca_export_prints_the_pem_that_path_points_to(gateway, plain):
    gw = gateway({"endpoints": [endpoint("a", "tls://a.example.test", plain)]})
    path = local_ca(gw)
    exported = subprocess.run(
        [sys.executable, "-m", "tlsgate", "ca", "export", "-c", str(gw.config_path)],
        capture_output=True, text=True, check=True,
    ).stdout
    assert exported.startswith("-----BEGIN CERTIFICATE-----")
    assert Path(path).read_text() == exported
    key = Path(path).parent / "ca.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_stalled_handshake_is_closed_at_handshake_timeout(gateway, plain):
    gw = gateway({"limits": {"handshake_timeout": "1s"}, "endpoints": [endpoint("a", "tls://a.example.test", plain)]})
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="a.example.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(outgoing.read())  # the ClientHello, then silence: never the Finished
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        assert data  # the gateway's ServerHello flight, then the close
    event = gw.wait_events(1)[0]["object"]
    assert event["close_reason"] == "handshake_timeout"
    assert plain.accepted == 0


@pytest.mark.parametrize("resumption", [True, False])
def test_session_resumption_setting(gateway, plain, resumption):
    gw = gateway(
        {"tls": {"session_resumption": resumption}, "endpoints": [endpoint("a", "tls://a.example.test", plain)]},
        workers=1,
    )
    ctx = ssl.create_default_context(cafile=local_ca(gw))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # a session is known right after the handshake
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname="a.example.test") as s:
        read_line(s)
        session = s.session
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname="a.example.test", session=session) as s:
        read_line(s)
        assert s.session_reused is resumption


def test_quick_mode_terminates_with_given_certificate_and_mtls(tmp_path, plain, mtls):
    own = TestCA(tmp_path / "own", "own CA")
    cert = own.issue("quick", ["quick.example.test"])
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlsgate", "tls", plain.address, "--url", "tls://quick.example.test",
         "--listen", f"127.0.0.1:{port}", "--workers", "1", "--terminate-at", "gateway",
         "--crt", str(cert.cert), "--key", str(cert.key), "--mutual-tls-cas", str(mtls["ca"].files.cert)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert "TLS ends at the gateway" in proc.stdout.readline()
        wait_for(lambda: accepts(port), what="quick mode listening")
        assert talk(connect(port, "quick.example.test", str(own.files.cert), cert=mtls["good"])) == "hello from plain"
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
            with connect(port, "quick.example.test", str(own.files.cert)) as s:
                s.recv(10)
    finally:
        proc.terminate()
        code = proc.wait(30)
        proc.stdout.close()
    assert code == 0


def test_quick_mode_reencrypts_to_tls_upstream(tmp_path, upstreams, pki):
    secure = upstreams("secure")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlsgate", "tls", f"tls://{secure.address}", "--url", "tls://q.example.test",
         "--listen", f"127.0.0.1:{port}", "--workers", "1", "--terminate-at", "gateway",
         "--upstream-tls-verify=false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        warning = proc.stdout.readline()
        assert "upstream.tls_verify: warning: the upstream's certificate is not verified" in warning
        assert f"-> tls://{secure.address}" in proc.stdout.readline()
        wait_for(lambda: accepts(port), what="quick mode listening")
        ca = subprocess.run(
            [sys.executable, "-m", "tlsgate", "ca", "path"], capture_output=True, text=True, cwd=tmp_path, check=True
        ).stdout.strip()
        assert talk(connect(port, "q.example.test", ca)) == "hello from secure"
    finally:
        proc.terminate()
        code = proc.wait(30)
        proc.stdout.close()
    assert code == 0


def test_sessions_resume_across_workers(gateway, plain):
    """Ticket keys come from contexts the master built before fork, so every worker of a
    generation accepts every other worker's tickets."""
    gw = gateway({"endpoints": [endpoint("a", "tls://a.example.test", plain)]}, workers=2)
    ctx = ssl.create_default_context(cafile=local_ca(gw))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname="a.example.test") as s:
        read_line(s)
        session = s.session
    reused = []
    for _ in range(12):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname="a.example.test", session=session) as s:
            read_line(s)
            reused.append(s.session_reused)
    events = gw.wait_events(13)
    workers = {e["object"]["id"].split(".")[0] for e in events}
    assert len(workers) == 2, "both workers should have served connections"
    assert all(reused), reused


def test_ticket_keys_rotate_with_a_new_generation(gateway, plain):
    gw = gateway(
        {"tls": {"ticket_key_rotation": "2s"}, "endpoints": [endpoint("a", "tls://a.example.test", plain)]},
        workers=1,
    )
    ctx = ssl.create_default_context(cafile=local_ca(gw))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    def connect_with(session=None):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname="a.example.test", session=session) as s:
            read_line(s)
            return s.session, s.session_reused

    old_session, _ = connect_with()
    assert connect_with(old_session)[1] is True
    [first_worker] = gw.worker_pids()
    wait_for(lambda: "rotating TLS session-ticket keys" in gw.log(), what="a key rotation")
    # Until the previous generation has stopped accepting, it could still take a connection.
    wait_for(lambda: first_worker not in gw.worker_pids(), what="the previous generation to exit")
    # Tickets of the previous keys no longer resume; the new keys' tickets do (unless the
    # next rotation fell between the two connections: then try again).
    assert connect_with(old_session)[1] is False
    for _ in range(3):
        rotations = gw.log().count("rotating TLS session-ticket keys")
        new_session, _ = connect_with()
        reused = connect_with(new_session)[1]
        if reused or gw.log().count("rotating TLS session-ticket keys") == rotations:
            break
    assert reused is True
