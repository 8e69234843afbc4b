"""Traffic policies through a real gateway (2 workers) with real TLS clients and upstreams.

Each action of a TLS endpoint's ``on_tcp_connect`` phase is checked from the outside:
what the client sees (greeting, certificate, alert or bare close), whether the upstream
was contacted, and what the connection's ``tcp_connection_closed.v0`` event records.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys

import pytest

from tests.support.certs import TestCA
from tests.support.gateway import free_port, read_line
from tests.support.upstream import client_hello_bytes

pytestmark = pytest.mark.integration


def policy(*rules) -> dict:
    return {"on_tcp_connect": list(rules)}


def rule(*actions, expressions=(), name=None) -> dict:
    r: dict = {"actions": list(actions)}
    if expressions:
        r["expressions"] = list(expressions)
    if name:
        r["name"] = name
    return r


def action(type_name: str, **config) -> dict:
    a: dict = {"type": type_name}
    if config:
        a["config"] = config
    return a


def endpoint(name, url, upstream, traffic_policy=None, **extra) -> dict:
    ep = {
        "name": name,
        "url": url,
        "upstream": {"url": upstream if isinstance(upstream, str) else upstream.address},
    }
    if traffic_policy is not None:
        ep["traffic_policy"] = traffic_policy
    ep.update(extra)
    return ep


def connect(
    port, sni, cafile, *, host="127.0.0.1", source=None, version=None, max_version=None, cert=None
):
    ctx = ssl.create_default_context(cafile=str(cafile))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if max_version is not None:
        ctx.maximum_version = max_version
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    raw = socket.create_connection((host, port), timeout=10, source_address=source)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def greet(port, sni, cafile, **kwargs) -> str:
    """The upstream's greeting through the gateway, then an echo round trip and a clean close."""
    with connect(port, sni, cafile, **kwargs) as s:
        line = read_line(s).strip()
        s.sendall(b"ECHO\nping")
        assert s.recv(4) == b"ping"
        return line


def closed_without_alert(port, sni, *, host="127.0.0.1", source=None) -> None:
    """Send a real ClientHello; the gateway must close without sending a single byte."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        if source is not None:
            s.bind(source)
        s.connect((host, port))
        s.sendall(client_hello_bytes(sni))
        try:
            received = s.recv(4096)
        except ConnectionResetError:
            received = b""
        assert received == b"", f"expected a bare close, got {received[:16]!r}"


def refused_by_tls_client(port, sni, cafile, **kwargs) -> None:
    """A real TLS client sees the connection end during its handshake, without an alert."""
    with pytest.raises((ssl.SSLEOFError, ConnectionResetError, ssl.SSLZeroReturnError)):
        connect(port, sni, cafile, **kwargs).close()


def closed_after_handshake(tls_sock) -> None:
    """After a terminated handshake the gateway closes instead of relaying the upstream."""
    with tls_sock:
        try:
            assert tls_sock.recv(100) == b""
        except (ssl.SSLEOFError, ConnectionResetError):
            pass


def local_ca(gw) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tlsgate", "ca", "path", "-c", str(gw.config_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def by_client(events, key="client_ip"):
    return {e["object"]["conn"][key]: e["object"] for e in events}


def check(tmp_path, config_text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "check.toml"
    path.write_text(config_text)
    return subprocess.run(
        [sys.executable, "-m", "tlsgate", "check", "-c", str(path)], capture_output=True, text=True
    )


@pytest.fixture
def app(upstreams):
    return upstreams("app")


@pytest.fixture
def plain(upstreams):
    return upstreams("plain", tls=False)


# --- restrict-ips ----------------------------------------------------------------------


def test_restrict_ips_ipv4_allows_listed_client_and_closes_others_without_alert(gateway, app, pki):
    only_local = policy(rule(action("restrict-ips", allow=["127.0.0.1/32"])))
    gw = gateway({"endpoints": [endpoint("app", "tls://app.example.test", app, only_local)]})
    ca = pki.files.cert
    assert greet(gw.port, "app.example.test", ca) == "hello from app"
    closed_without_alert(gw.port, "app.example.test", source=("127.0.0.2", 0))
    refused_by_tls_client(gw.port, "app.example.test", ca, source=("127.0.0.2", 0))
    events = gw.wait_events(3)
    allowed = [e["object"] for e in events if e["object"]["conn"]["client_ip"] == "127.0.0.1"]
    denied = [e["object"] for e in events if e["object"]["conn"]["client_ip"] == "127.0.0.2"]
    assert len(allowed) == 1 and len(denied) == 2
    assert allowed[0]["close_reason"] == "eof"
    assert allowed[0]["ip_policy"]["decision"] == "allow"
    for obj in denied:
        assert obj["close_reason"] == "ip_restricted"
        assert obj["ip_policy"]["decision"] == "block"
        assert obj["upstream"] is None
    assert app.accepted == 1


def test_restrict_ips_ipv6_client_on_an_ipv6_listener(gateway, app, pki):
    port6 = free_port("::1")
    gw = gateway(
        {
            "endpoints": [
                # Only the IPv6 loopback may use "six"; "four" denies exactly that client.
                endpoint(
                    "six",
                    "tls://app.example.test",
                    app,
                    policy(rule(action("restrict-ips", allow=["::1/128"]))),
                ),
                endpoint(
                    "four",
                    "tls://other.example.test",
                    app,
                    policy(rule(action("restrict-ips", deny=["::1/128"]))),
                ),
            ]
        },
        start=False,
    )
    gw.config["gateway"]["listen"].append(f"[::1]:{port6}")
    gw.write_config(gw.config)
    gw.start()
    ca = pki.files.cert
    assert greet(port6, "app.example.test", ca, host="::1") == "hello from app"
    closed_without_alert(gw.port, "app.example.test")
    closed_without_alert(port6, "other.example.test", host="::1")
    # The ssl client checks the certificate for other.example.test: the wildcard SAN covers it.
    assert greet(gw.port, "other.example.test", ca) == "hello from app"
    events = gw.wait_events(4)
    outcomes = sorted(
        (e["object"]["endpoint"]["name"], e["object"]["conn"]["client_ip"], e["object"]["close_reason"],
         e["object"]["ip_policy"]["decision"])
        for e in events
    )  # fmt: skip
    assert outcomes == [
        ("four", "127.0.0.1", "eof", "allow"),
        ("four", "::1", "ip_restricted", "block"),
        ("six", "127.0.0.1", "ip_restricted", "block"),
        ("six", "::1", "eof", "allow"),
    ]
    assert app.accepted == 2


def test_restrict_ips_enforce_false_records_the_decision_but_lets_it_through(gateway, app, pki):
    dry_run = policy(
        rule(
            action("restrict-ips", enforce=False, deny=["127.0.0.0/8"]),
            action("log", metadata={"would": "${actions.ngrok.restrict_ips.action}",
                                    "cidr": "${actions.ngrok.restrict_ips.matched_cidr}"}),
        )
    )  # fmt: skip
    gw = gateway({"endpoints": [endpoint("app", "tls://app.example.test", app, dry_run)]})
    assert (
        greet(gw.port, "app.example.test", pki.files.cert, source=("127.0.0.2", 0))
        == "hello from app"
    )
    obj = gw.wait_events(1)[0]["object"]
    assert obj["close_reason"] == "eof"
    assert obj["ip_policy"]["decision"] == "block"
    assert obj["traffic_policy"]["logs"] == [{"would": "deny", "cidr": "127.0.0.0/8"}]
    assert app.accepted == 1


# --- deny, close-connection, log, set-vars ---------------------------------------------


def test_deny_and_close_connection_never_contact_the_upstream(gateway, upstreams, pki):
    denied_up, closed_up, wild_up = upstreams("denied"), upstreams("closed"), upstreams("wild")
    gw = gateway(
        {
            "endpoints": [
                endpoint("denied", "tls://denied.example.test", denied_up, policy(rule(action("deny")))),
                endpoint("closed", "tls://closed.example.test", closed_up, policy(rule(action("close-connection")))),
                endpoint(
                    "wild", "tls://*.example.test", wild_up,
                    policy(rule(action("deny"), expressions=['conn.tls.sni.startsWith("bad.")'])),
                ),
            ]
        }
    )  # fmt: skip
    ca = pki.files.cert
    closed_without_alert(gw.port, "denied.example.test")
    refused_by_tls_client(gw.port, "closed.example.test", ca)
    closed_without_alert(gw.port, "bad.example.test")
    assert greet(gw.port, "good.example.test", ca) == "hello from wild"
    events = by_client(gw.wait_events(4), "server_name")
    for name in ("denied.example.test", "closed.example.test", "bad.example.test"):
        assert events[name]["close_reason"] == "policy_denied"
        assert events[name]["upstream"] is None
    assert events["good.example.test"]["close_reason"] == "eof"
    assert (denied_up.accepted, closed_up.accepted, wild_up.accepted) == (0, 0, 1)


def test_log_metadata_is_interpolated_into_the_event(gateway, plain):
    logged = policy(
        rule(
            action("log", metadata={"client": "${conn.client_ip}", "endpoint": "${endpoint.name}",
                                    "port": "${conn.server_port}", "text": "sni=${conn.tls.sni}"}),
            name="first",
        ),
        rule(action("terminate-tls")),
        rule(action("log", metadata={"cipher": "${conn.tls.cipher_suite}", "nested": {"v": "${conn.tls.version}"}})),
    )  # fmt: skip
    gw = gateway({"endpoints": [endpoint("logger", "tls://log.example.test", plain, logged)]})
    assert (
        greet(gw.port, "log.example.test", local_ca(gw), version=ssl.TLSVersion.TLSv1_3)
        == "hello from plain"
    )
    obj = gw.wait_events(1)[0]["object"]
    first, second = obj["traffic_policy"]["logs"]
    # A metadata value that is exactly "${...}" keeps its type (the port stays a number).
    assert first == {
        "client": "127.0.0.1",
        "endpoint": "logger",
        "port": gw.port,
        "text": "sni=log.example.test",
    }
    assert second["cipher"].startswith("TLS_") and second["nested"] == {"v": "1.3"}


def test_set_vars_decide_a_later_rule(gateway, upstreams, pki):
    wild = upstreams("wild")
    tagged = policy(
        rule(
            action(
                "set-vars",
                vars=[{"is_admin": "${conn.tls.sni.startsWith('admin.')}"}, {"tier": "gold"}],
            )
        ),
        rule(action("log", metadata={"tier": "${vars.tier}", "admin": "${vars.is_admin}"})),
        rule(action("deny"), expressions=["vars.is_admin"]),
    )
    gw = gateway({"endpoints": [endpoint("wild", "tls://*.example.test", wild, tagged)]})
    closed_without_alert(gw.port, "admin.example.test")
    assert greet(gw.port, "user.example.test", pki.files.cert) == "hello from wild"
    events = by_client(gw.wait_events(2), "server_name")
    assert events["admin.example.test"]["close_reason"] == "policy_denied"
    assert events["admin.example.test"]["traffic_policy"]["logs"] == [
        {"tier": "gold", "admin": True}
    ]
    assert events["user.example.test"]["close_reason"] == "eof"
    assert events["user.example.test"]["traffic_policy"]["logs"] == [
        {"tier": "gold", "admin": False}
    ]
    assert wild.accepted == 1


# --- forward-internal ------------------------------------------------------------------


def test_forward_internal_reaches_the_internal_endpoint_which_sni_cannot(gateway, upstreams, pki):
    public_up, db_up = upstreams("public"), upstreams("db")
    db_policy = policy(
        rule(action("log", metadata={"at": "${endpoint.name}", "url": "${endpoint.url}"}))
    )
    gw = gateway(
        {
            "endpoints": [
                endpoint("app", "tls://app.example.test", public_up,
                         policy(rule(action("log", metadata={"at": "${endpoint.name}"}),
                                     action("forward-internal", url="tls://db.internal:443")))),
                endpoint("db", "tls://db.internal:443", db_up, db_policy, bindings=["internal"]),
            ]
        }
    )  # fmt: skip
    ca = pki.files.cert
    assert greet(gw.port, "app.example.test", ca) == "hello from db"
    # Internal endpoints are not routable by SNI.
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            ctx.wrap_socket(raw, server_hostname="db.internal")
    events = gw.wait_events(2)
    assert len(events) == 2  # one event per client connection, not one per endpoint
    forwarded = next(
        e["object"] for e in events if e["object"]["conn"]["server_name"] == "app.example.test"
    )
    assert forwarded["endpoint"]["name"] == "app"
    assert forwarded["forwarded_to"] == {"name": "db", "url": "tls://db.internal:443"}
    assert forwarded["upstream"] == {"addr": db_up.address}
    assert forwarded["close_reason"] == "eof"
    # The internal endpoint's own policy ran, with its own endpoint.* variables; the
    # event keeps the logs of both endpoints.
    assert forwarded["traffic_policy"]["logs"] == [
        {"at": "app"},
        {"at": "db", "url": "tls://db.internal:443"},
    ]
    direct = next(
        e["object"] for e in events if e["object"]["conn"]["server_name"] == "db.internal"
    )
    assert direct["close_reason"] == "unknown_sni"
    assert (public_up.accepted, db_up.accepted) == (0, 1)


def test_forward_internal_after_terminate_tls_keeps_the_tls_variables(gateway, upstreams, plain):
    internal_rules = policy(
        rule(
            action(
                "log",
                metadata={"version": "${conn.tls.version}", "cipher": "${conn.tls.cipher_suite}"},
            )
        ),
        # Denies only if the internal endpoint lost the terminated connection's TLS view.
        rule(action("deny"), expressions=['conn.tls.cipher_suite == ""']),
    )
    gw = gateway(
        {
            "endpoints": [
                endpoint("edge", "tls://edge.example.test", upstreams("edge"), policy(
                    rule(action("terminate-tls")),
                    rule(action("forward-internal", url="tls://svc.internal")),
                )),
                endpoint("svc", "tls://svc.internal", plain, internal_rules, bindings=["internal"]),
            ]
        }
    )  # fmt: skip
    assert greet(gw.port, "edge.example.test", local_ca(gw)) == "hello from plain"
    obj = gw.wait_events(1)[0]["object"]
    assert obj["termination"] == "gateway" and obj["close_reason"] == "eof"
    assert obj["forwarded_to"]["name"] == "svc"
    (log,) = obj["traffic_policy"]["logs"]
    assert log["version"] == "1.3" and log["cipher"] == obj["tls"]["cipher_suite"] != ""


def test_forward_internal_to_nothing_at_run_time_follows_on_error(gateway, upstreams, pki):
    cont_up, halt_up, spin_up = upstreams("cont"), upstreams("halt"), upstreams("spin")
    # The URL names an internal endpoint only at run time (vars.target), and none exists.
    dynamic = "tls://${vars.target}.internal:443"
    gw = gateway(
        {
            "endpoints": [
                endpoint("cont", "tls://cont.example.test", cont_up, policy(
                    rule(action("set-vars", vars=[{"target": "missing"}])),
                    rule(action("forward-internal", url=dynamic, on_error="continue")),
                    rule(action("log", metadata={"code": "${actions.ngrok.forward_internal.error.code}",
                                                 "after": "later rule ran"})),
                )),
                endpoint("halt", "tls://halt.example.test", halt_up, policy(
                    rule(action("set-vars", vars=[{"target": "missing"}])),
                    rule(action("forward-internal", url=dynamic)),
                )),
                # A loop that only exists at run time: spin.internal forwards to its own host.
                endpoint("loop", "tls://loop.example.test", halt_up, policy(
                    rule(action("forward-internal", url="tls://spin.internal")),
                )),
                endpoint("spin", "tls://spin.internal", spin_up, policy(
                    rule(action("forward-internal", url="tls://${endpoint.host}")),
                ), bindings=["internal"]),
            ]
        }
    )  # fmt: skip
    ca = pki.files.cert
    assert greet(gw.port, "cont.example.test", ca) == "hello from cont"
    closed_without_alert(gw.port, "halt.example.test")
    closed_without_alert(gw.port, "loop.example.test")
    events = by_client(gw.wait_events(3), "server_name")
    cont = events["cont.example.test"]
    assert cont["close_reason"] == "eof" and "forwarded_to" not in cont
    assert cont["traffic_policy"]["logs"] == [{"code": "ERR_NGROK_3200", "after": "later rule ran"}]
    halt = events["halt.example.test"]
    assert halt["close_reason"] == "forward_internal_failed"
    assert "missing.internal" in halt["forward_error"]
    loop = events["loop.example.test"]
    assert loop["close_reason"] == "forward_internal_failed"
    assert loop["forward_error"] == "too many forward-internal hops"
    assert (cont_up.accepted, halt_up.accepted, spin_up.accepted) == (1, 0, 0)


def test_static_forward_to_missing_endpoint_and_static_loop_are_config_errors(tmp_path):
    missing = check(
        tmp_path,
        """
[[endpoints]]
name = "app"
url = "tls://app.example.test"
upstream = { url = "127.0.0.1:9443" }
traffic_policy = { on_tcp_connect = [ { actions = [ { type = "forward-internal", config = { url = "tls://nope.internal:443" } } ] } ] }
""",
    )
    assert missing.returncode == 2, missing.stderr
    assert (
        "endpoints[0].traffic_policy.on_tcp_connect[0].actions[0].config.url: tls://nope.internal:443 names no internal endpoint"
        in missing.stderr
    )
    loop = check(
        tmp_path,
        """
[[endpoints]]
name = "a"
url = "tls://a.internal"
bindings = ["internal"]
upstream = { url = "127.0.0.1:9443" }
traffic_policy = { on_tcp_connect = [ { actions = [ { type = "forward-internal", config = { url = "tls://b.internal" } } ] } ] }

[[endpoints]]
name = "b"
url = "tls://b.internal"
bindings = ["internal"]
upstream = { url = "127.0.0.1:9443" }
traffic_policy = { on_tcp_connect = [ { actions = [ { type = "forward-internal", config = { url = "tls://a.internal" } } ] } ] }
""",
    )  # fmt: skip
    assert loop.returncode == 2, loop.stderr
    assert "forward-internal loop: " in loop.stderr
    assert (
        "traffic_policy.on_tcp_connect[0].actions[0].config.url: forward-internal loop"
        in loop.stderr
    )


# --- terminate-tls chosen by an expression, and the rules after it -------------------------


def test_terminate_tls_chosen_by_an_sni_expression(gateway, upstreams, pki):
    app = upstreams("app")
    chooser = policy(
        rule(action("terminate-tls"), expressions=['conn.tls.sni.startsWith("term.")'])
    )
    gw = gateway(
        {
            "endpoints": [
                {"name": "wild", "url": "tls://*.example.test", "traffic_policy": chooser,
                 "upstream": {"url": f"tls://{app.address}", "tls_verify_cas": str(pki.files.cert),
                              "server_name": "app.example.test"}},
            ]
        }
    )  # fmt: skip
    gateway_ca = local_ca(gw)
    # Terminated: the gateway's local CA issued the certificate, for exactly this name.
    with connect(gw.port, "term.example.test", gateway_ca) as s:
        assert s.getpeercert()["subjectAltName"] == (("DNS", "term.example.test"),)
        assert read_line(s) == "hello from app\n"
    # Passed through: the upstream's own certificate (from the test CA) reaches the client.
    with connect(gw.port, "pass.example.test", pki.files.cert) as s:
        assert ("DNS", "*.example.test") in s.getpeercert()["subjectAltName"]
        assert read_line(s) == "hello from app\n"
    # And neither certificate verifies against the other CA.
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(gw.port, "pass.example.test", gateway_ca)
    events = by_client(gw.wait_events(3), "server_name")
    assert events["term.example.test"]["termination"] == "gateway"
    assert events["pass.example.test"]["termination"] == "upstream"
    assert app.sni_seen.count("app.example.test") == 1  # the re-encrypted connection's SNI


def test_rules_after_terminate_tls_see_the_negotiated_version(gateway, plain):
    # The client offers 1.3 (its ClientHello says so) but only 1.2 is negotiated.
    strict = policy(
        rule(action("terminate-tls", max_version="1.2"),
             expressions=['conn.tls.version == "1.3"', 'conn.tls.sni.startsWith("capped.")']),
        rule(action("terminate-tls"), expressions=['conn.tls.sni.startsWith("open.")']),
        rule(action("deny"), expressions=['conn.tls.version != "1.3"']),
    )  # fmt: skip
    gw = gateway({"endpoints": [endpoint("wild", "tls://*.example.test", plain, strict)]})
    ca = local_ca(gw)
    capped = connect(gw.port, "capped.example.test", ca)
    assert capped.version() == "TLSv1.2"
    closed_after_handshake(capped)
    assert greet(gw.port, "open.example.test", ca) == "hello from plain"
    events = by_client(gw.wait_events(2), "server_name")
    assert events["capped.example.test"]["close_reason"] == "policy_denied"
    assert events["capped.example.test"]["tls"]["version"] == "1.2"
    assert events["open.example.test"]["close_reason"] == "eof"
    assert plain.accepted == 1


def test_rules_after_mutual_tls_see_the_client_certificate(gateway, plain, tmp_path):
    clients = TestCA(tmp_path / "clients", "client CA")
    alice = clients.issue("alice", ["alice.clients.test"], client=True)
    bob = clients.issue("bob", ["bob.clients.test"], client=True)
    mtls = policy(
        rule(action("terminate-tls", mutual_tls_certificate_authorities=[str(clients.files.cert)])),
        rule(action("log", metadata={"cn": "${conn.tls.client.subject.common_name}",
                                     "issuer": "${conn.tls.client.issuer.common_name}",
                                     "sans": "${conn.tls.client.san.dns_names}"})),
        rule(action("deny"), expressions=['conn.tls.client.subject.common_name != "alice.clients.test"']),
    )  # fmt: skip
    gw = gateway({"endpoints": [endpoint("m", "tls://m.example.test", plain, mtls)]})
    ca = local_ca(gw)
    assert greet(gw.port, "m.example.test", ca, cert=alice) == "hello from plain"
    closed_after_handshake(connect(gw.port, "m.example.test", ca, cert=bob))
    events = gw.wait_events(2)
    logs = {e["object"]["traffic_policy"]["logs"][0]["cn"]: e["object"] for e in events}
    assert logs["alice.clients.test"]["close_reason"] == "eof"
    assert logs["bob.clients.test"]["close_reason"] == "policy_denied"
    assert logs["bob.clients.test"]["traffic_policy"]["logs"] == [
        {"cn": "bob.clients.test", "issuer": "client CA", "sans": ["bob.clients.test"]}
    ]
    assert plain.accepted == 1


# --- rate-limit across workers ---------------------------------------------------------


def test_rate_limit_is_shared_by_both_workers(gateway, app, pki):
    capacity = 6
    limited = policy(
        rule(action("rate-limit", name="per-ip", algorithm="sliding_window", capacity=capacity,
                    rate="60s", bucket_key=["conn.client_ip"]))
    )  # fmt: skip
    gw = gateway(
        {"endpoints": [endpoint("app", "tls://app.example.test", app, limited)]}, workers=2
    )
    ca = pki.files.cert
    outcomes = []
    for _ in range(3 * capacity):
        try:
            outcomes.append(greet(gw.port, "app.example.test", ca))
        except (ssl.SSLEOFError, ConnectionResetError, ssl.SSLZeroReturnError):
            outcomes.append("closed")
    events = gw.wait_events(3 * capacity)
    reasons = [e["object"]["close_reason"] for e in events]
    assert reasons.count("eof") == capacity
    assert reasons.count("rate_limited") == 2 * capacity
    assert outcomes.count("hello from app") == capacity
    assert outcomes[:capacity] == ["hello from app"] * capacity  # sequential: the first N pass
    # Both workers served connections (an id is "<worker pid in hex>.<n>"), so one table held.
    workers = {e["object"]["id"].split(".")[0] for e in events}
    assert workers <= {f"{pid:x}" for pid in gw.worker_pids()}
    assert len(workers) == 2, f"all connections went to one worker: {workers}"
    assert app.accepted == capacity
