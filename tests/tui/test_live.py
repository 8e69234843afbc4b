"""The dashboard against a real running gateway: connections, kill, events, filter, reconnect."""

from __future__ import annotations

import pytest

from tests.integration.test_control import app_config, socket_of
from tests.support.gateway import greeting, read_line, tls_connect
from tests.tui.helpers import shown, table, until
from tui.app import make_app
from tui.client import GatewayClient

pytestmark = pytest.mark.integration


def _two_endpoints(app_upstream, other_upstream) -> dict:
    config = app_config(app_upstream)
    config["endpoints"].append(
        {
            "name": "other",
            "url": "tls://*.example.test",
            "upstream": {"url": other_upstream.address},
        }
    )
    return config


async def test_live_connections_kill_events_and_filter(gateway, upstreams, pki):
    ca = pki.files.cert
    gw = gateway(_two_endpoints(upstreams("app"), upstreams("other")))
    held = {}
    for sni in ("app.example.test", "x.example.test"):
        conn = tls_connect(gw.port, sni, ca)
        read_line(conn)
        conn.sendall(b"ECHO\n")
        held[sni] = conn
    app = make_app(GatewayClient(socket_of(gw)), poll_interval=0.2)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            rows = await until(
                pilot,
                lambda: len(shown(app, "conn-table")) == 2 and shown(app, "conn-table"),
                "2 rows",
            )
            assert {(r[1], r[3]) for r in rows} == {
                ("app", "app.example.test"),
                ("other", "x.example.test"),
            }
            assert {r[7] for r in rows} == {"relaying"}

            await pilot.press("slash", *"ep:other", "enter")
            [row] = shown(app, "conn-table")
            assert row[3] == "x.example.test"
            assert app.focused is table(app, "conn-table")

            # Kill it through the dashboard: confirm, the client sees EOF, the event says killed.
            await pilot.press("k", "y")
            victim = held["x.example.test"]
            victim.settimeout(10)
            assert victim.recv(100) == b""
            await until(pilot, lambda: not table(app, "conn-table").order, "the killed row gone")
            killed = await until(
                pilot,
                lambda: [f for f in app.events_model.fields.values() if f["reason"] == "killed"],
                "the killed event",
            )
            assert killed[0]["endpoint"] == "other"

            # Live events: a new connection's close arrives while we watch.
            before = len(app.events_model.events)
            greeting(gw.port, "app.example.test", ca)
            await until(pilot, lambda: len(app.events_model.events) > before, "a live event")
            await pilot.press("5")
            app.query_one("#event-filter").value = "reason:eof"
            await pilot.pause()
            assert {r[1] for r in shown(app, "event-table")} == {"closed"}
            assert "eof" in shown(app, "event-table")[-1][3]
    finally:
        for conn in held.values():
            conn.close()


async def test_survives_a_gateway_restart(gateway, upstreams, pki):
    gw = gateway(app_config(upstreams("app")))
    app = make_app(GatewayClient(socket_of(gw)), poll_interval=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        first = await until(
            pilot, lambda: app.snapshot and app.snapshot.status["pid"], "the first gateway"
        )
        assert gw.stop() == 0
        await until(pilot, lambda: not app.connected, "the disconnect")
        assert "disconnected" in str(app.query_one("#status-line").render())
        gw.log_path.unlink()
        gw.start()
        second = await until(
            pilot,
            lambda: (
                app.connected
                and app.snapshot
                and app.snapshot.status["pid"] != first
                and app.snapshot.status["pid"]
            ),
            "the restarted gateway",
        )
        assert second == gw.proc.pid
        greeting(gw.port, "app.example.test", pki.files.cert)
        await until(
            pilot,
            lambda: any(f["reason"] == "eof" for f in app.events_model.fields.values()),
            "new events",
        )
