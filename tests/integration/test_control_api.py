"""The endpoint API and reload over the control socket, on real gateways with 2 workers."""

from __future__ import annotations

import json
import ssl
import tomllib

import pytest

from tests.integration.test_control import app_config, control, run_cli, socket_of
from tests.support.gateway import greeting
from tlsgate.config.load import parse_config
from tlsgate.control.client import ControlError
from tlsgate.errors import ConfigError

pytestmark = pytest.mark.integration


def _endpoint(name: str, host: str, upstream, **extra) -> dict:
    return {"name": name, "url": f"tls://{host}", "upstream": {"url": upstream.address}, **extra}


def _unknown_sni_alert(gw, sni: str, ca) -> bool:
    try:
        greeting(gw.port, sni, ca)
    except ssl.SSLError as e:
        return "UNRECOGNIZED_NAME" in str(e).upper()
    return False


def test_add_update_remove_and_traffic_follows_at_once(gateway, upstreams, pki):
    ca = pki.files.cert
    app, one, two = upstreams("app"), upstreams("one"), upstreams("two")
    gw = gateway(app_config(app), workers=2)
    with control(gw) as c:
        added = c.request("endpoints.add", endpoint=_endpoint("api", "api.example.test", one))
        assert added == {"endpoint": "api", "action": "added", "generation": 2, "ready": True}
        # Both workers of the new generation serve it from the first connection on.
        assert [greeting(gw.port, "api.example.test", ca) for _ in range(6)] == [
            "hello from one"
        ] * 6
        assert greeting(gw.port, "app.example.test", ca) == "hello from app"

        updated = c.request(
            "endpoints.update", name="api", endpoint={"upstream": {"url": two.address}}
        )
        assert updated["generation"] == 3 and updated["ready"] is True
        assert [greeting(gw.port, "api.example.test", ca) for _ in range(6)] == [
            "hello from two"
        ] * 6

        listing = {e["name"]: e for e in c.request("endpoints.list")["endpoints"]}
        assert listing["api"]["source"] == "api" and listing["app"]["source"] == "file"
        assert listing["api"]["upstream"]["url"] == two.address
        assert listing["api"]["termination"] == "passthrough" and listing["api"]["pool_size"] == 1

        removed = c.request("endpoints.remove", name="api")
        assert removed["action"] == "removed" and removed["ready"] is True
        assert _unknown_sni_alert(gw, "api.example.test", ca)
        assert [e["name"] for e in c.request("endpoints.list")["endpoints"]] == ["app"]
    events = [e for e in gw.events() if e["object"]["endpoint"]]
    assert {e["object"]["endpoint"]["name"] for e in events} == {"api", "app"}


def test_api_endpoints_survive_a_restart(gateway, upstreams, pki):
    ca = pki.files.cert
    app, one = upstreams("app"), upstreams("one")
    gw = gateway(app_config(app))
    with control(gw) as c:
        c.request(
            "endpoints.add",
            endpoint=_endpoint("api", "api.example.test", one, pooling_enabled=False),
        )
    store = gw.dir / "state" / "endpoints.toml"
    assert oct(store.stat().st_mode & 0o777) == "0o600"
    assert tomllib.loads(store.read_text())["endpoints"][0]["name"] == "api"
    assert gw.stop() == 0
    gw.log_path.unlink()  # wait_serving counts lines of this log: start the new one empty
    gw.start()
    assert greeting(gw.port, "api.example.test", ca) == "hello from one"
    with control(gw) as c:
        names = {e["name"]: e["source"] for e in c.request("endpoints.list")["endpoints"]}
    assert names == {"app": "file", "api": "api"}


def test_invalid_add_gets_the_config_loaders_messages(gateway, upstreams):
    app = upstreams("app")
    gw = gateway(app_config(app))
    bad = {
        "name": "bad name!",
        "url": "http://x.example.test",
        "upstream": {"url": "nowhere:99999"},
        "colour": 1,
    }
    with control(gw) as c, pytest.raises(ControlError) as refused:
        c.request("endpoints.add", endpoint=bad)
    assert refused.value.code == "invalid"
    api_messages = sorted(
        (p["key_path"].removeprefix("endpoint"), p["message"]) for p in refused.value.problems
    )

    with pytest.raises(ConfigError) as loader:
        parse_config({"endpoints": [bad]}, "file.toml", gw.dir)
    loader_messages = sorted(
        (p.key_path.removeprefix("endpoints[0]"), p.message)
        for p in loader.value.problems
        if not p.warning
    )
    assert api_messages == loader_messages
    assert len(api_messages) >= 4  # name, url, upstream.url, unknown key: every problem at once
    with control(gw) as c:
        assert c.request("status")["generation"] == 1  # nothing changed
    assert not (gw.dir / "state" / "endpoints.toml").exists()


def test_config_file_endpoints_are_read_only_and_conflicts_are_refused(gateway, upstreams):
    app = upstreams("app")
    gw = gateway(app_config(app))
    with control(gw) as c:
        for request, args in (
            ("endpoints.update", {"name": "app", "endpoint": {"upstream": {"url": app.address}}}),
            ("endpoints.remove", {"name": "app"}),
            ("endpoints.add", {"endpoint": _endpoint("app", "other.example.test", app)}),
        ):
            with pytest.raises(ControlError) as refused:
                c.request(request, **args)
            assert refused.value.code == "read_only", request
            assert "read-only through the API" in refused.value.message
        # Same URL as the file's endpoint without pooling: the pooling rule of the loader applies.
        with pytest.raises(ControlError) as pooled:
            c.request("endpoints.add", endpoint=_endpoint("twin", "app.example.test", app))
        [problem] = pooled.value.problems
        assert "to pool them" in problem["message"] and problem["key_path"] == "endpoints[0].url"
        with pytest.raises(ControlError) as missing:
            c.request("endpoints.remove", name="ghost")
        assert missing.value.code == "not_found"
        assert c.request("status")["generation"] == 1


def test_cli_endpoint_commands(gateway, upstreams, pki, tmp_path):
    ca = pki.files.cert
    app, one = upstreams("app"), upstreams("one", proxy_protocol=True)
    gw = gateway(app_config(app))
    sock = socket_of(gw)
    out = run_cli(
        "endpoints", "add", "--name", "cli", "--url", "tls://cli.example.test",
        "--upstream", one.address, "--proxy-protocol", "2", "--socket", sock, check=True,
    ).stdout  # fmt: skip
    assert "endpoint cli added; generation 2" in out
    assert greeting(gw.port, "cli.example.test", ca) == "hello from one"
    assert one.proxy_headers[-1].version == 2
    listed = json.loads(run_cli("endpoints", "list", "--json", "--socket", sock, check=True).stdout)
    cli = next(e for e in listed["endpoints"] if e["name"] == "cli")
    assert cli["upstream"] == {"url": one.address, "proxy_protocol": 2}
    human = run_cli("endpoints", "list", "--socket", sock, check=True).stdout
    assert "cli.example.test" in human and "api" in human
    run_cli("endpoints", "update", "cli", "--proxy-protocol", "1", "--socket", sock, check=True)
    assert greeting(gw.port, "cli.example.test", ca) == "hello from one"
    assert one.proxy_headers[-1].version == 1

    refused = run_cli(
        "endpoints",
        "add",
        "--name",
        "x",
        "--url",
        "tls://x.example.test",
        "--upstream",
        "nope:0",
        "--socket",
        sock,
    )
    assert refused.returncode == 2 and refused.stdout == ""
    assert "<api>: endpoint.upstream.url:" in refused.stderr
    read_only = run_cli("endpoints", "remove", "app", "--socket", sock)
    assert read_only.returncode == 1 and "read-only" in read_only.stderr
    run_cli("endpoints", "remove", "cli", "--socket", sock, check=True)
    assert _unknown_sni_alert(gw, "cli.example.test", ca)


def test_reload_request_returns_problems_or_the_new_generation(gateway, upstreams, pki):
    ca = pki.files.cert
    one, two = upstreams("one"), upstreams("two")
    gw = gateway(app_config(one))
    good = app_config(two, gateway=gw.config["gateway"], events=gw.config["events"])
    gw.config_path.write_text('[gateway]\nworkers = "many"\n')
    with control(gw) as c:
        with pytest.raises(ControlError) as refused:
            c.request("reload")
        texts = [p["text"] for p in refused.value.problems]
        assert any("gateway.workers" in t for t in texts), texts
        assert c.request("status")["generation"] == 1
        assert greeting(gw.port, "app.example.test", ca) == "hello from one"
        cli = run_cli("reload", "--socket", socket_of(gw))
        assert cli.returncode == 2 and "gateway.workers" in cli.stderr

        gw.write_config(good)
        result = c.request("reload")
        assert result["generation"] == 2 and result["ready"] is True
        assert greeting(gw.port, "app.example.test", ca) == "hello from two"
        kinds = [
            e["object"]["kind"]
            for e in c.subscribe(backlog=1000)
            if e["event_type"] == "gateway_log.v0"
        ]
        assert kinds.count("reload_failed") == 2 and kinds.count("reloaded") == 1
