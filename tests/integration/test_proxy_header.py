"""The upstream receives a PROXY header with the client's real address, then the client's TLS."""

from __future__ import annotations

import socket

import pytest

from tests.support.gateway import greeting

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("version", [1, 2])
def test_upstream_receives_proxy_header_with_client_address(gateway, upstreams, pki, version):
    app = upstreams("app", proxy_protocol=True)
    gw = gateway(
        {"endpoints": [{"name": "app", "url": "tls://app.example.test", "upstream": {"url": app.address, "proxy_protocol": version}}]}
    )
    # Bind the client to a known port so the header can be compared with the real address.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        client_port = probe.getsockname()[1]
    raw = socket.create_connection(("127.0.0.1", gw.port), source_address=("127.0.0.1", client_port), timeout=10)
    import ssl

    ctx = ssl.create_default_context(cafile=str(pki.files.cert))
    with ctx.wrap_socket(raw, server_hostname="app.example.test") as s:
        assert s.recv(100) == b"hello from app\n"
    [header] = app.proxy_headers
    assert header.version == version
    assert header.source == ("127.0.0.1", client_port)
    assert header.destination == ("127.0.0.1", gw.port)
    if version == 2:
        assert header.tlvs.get(0x02) == b"app.example.test"
        assert 0x01 not in header.tlvs  # passthrough: the negotiated ALPN is unknown
    # The TLS the client started is intact after the header: the upstream saw the SNI.
    assert app.sni_seen == ["app.example.test"]


def test_proxy_v2_carries_normalised_sni_as_authority(gateway, upstreams, pki):
    app = upstreams("app", proxy_protocol=True)
    gw = gateway({"endpoints": [{"name": "app", "url": "tls://*.example.test", "upstream": {"url": app.address, "proxy_protocol": 2}}]})
    assert greeting(gw.port, "MiXeD.Example.Test", pki.files.cert) == "hello from app"
    assert app.proxy_headers[0].tlvs[0x02] == b"mixed.example.test"


def test_ipv6_listener_upstream_and_proxy_header(gateway, upstreams, pki):
    """A client on ::1 reaches an upstream on ::1; the PROXY v2 header carries IPv6 addresses."""
    import ssl

    from tests.support.gateway import free_port

    app = upstreams("app", proxy_protocol=True, host="::1")
    port6 = free_port("::1")
    gw = gateway(
        {"endpoints": [{"name": "app", "url": "tls://app.example.test", "upstream": {"url": app.address, "proxy_protocol": 2}}]},
        start=False,
    )
    gw.config["gateway"]["listen"].append(f"[::1]:{port6}")
    gw.write_config(gw.config)
    gw.start()
    ctx = ssl.create_default_context(cafile=str(pki.files.cert))
    with socket.create_connection(("::1", port6), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname="app.example.test") as s:
        client_port = s.getsockname()[1]
        assert s.recv(100) == b"hello from app\n"
    # The IPv4 listener of the same gateway still works.
    assert greeting(gw.port, "app.example.test", pki.files.cert) == "hello from app"
    header = app.proxy_headers[0]
    assert header.source == ("::1", client_port)
    assert header.destination == ("::1", port6)
    events = gw.wait_events(2)
    first = next(e for e in events if e["object"]["conn"]["server_port"] == port6)["object"]
    assert first["conn"]["client_ip"] == "::1"
    assert first["upstream"]["addr"] == app.address
