"""The dashboard's behaviour with an injected fake gateway: filter, sort, kill, reload, events, reconnect."""

from __future__ import annotations

from tests.tui.fakes import FakeSource, closed_event, fixed_clock, log_event, rates, usage
from tests.tui.helpers import shown, table, until
from tlsgate.control.client import ControlError
from tui.app import make_app
from tui.screens.dialogs import ConfirmKill, EventDetail, HelpScreen, ReloadProblems


def app_for(source: FakeSource, **kwargs):
    return make_app(
        source, clock=fixed_clock, poll_interval=0.05, rates=rates(), usage=usage, **kwargs
    )


async def test_snapshot_fills_every_panel():
    app = app_for(FakeSource())
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: table(app, "conn-table").order, "connections")
        rows = shown(app, "conn-table")
        # Sorted by age, oldest first.
        assert [r[0] for r in rows] == ["10cd.2", "10cd.1", "10ce.7"]
        assert rows[0][1:7] == (
            "shop-a",
            "198.51.100.20:61000",
            "eu.shop.example.com",
            "1.0MB",
            "50.0MB",
            "1h00m",
        )
        assert rows[2][1] == "-" and rows[2][3] == "-"  # not routed yet: no endpoint, no SNI
        endpoints = {r[0]: r for r in shown(app, "endpoint-table")}
        assert endpoints["shop-a"][8] == "upstream_connect_timeout 1m15s ago"
        assert endpoints["shop-b"][7] == "api" and endpoints["app"][4] == "1"
        workers = shown(app, "worker-table")
        assert [w[2] for w in workers] == ["serving", "serving", "draining"]
        assert workers[0][4] == "12.5" and workers[0][5] == "46.1MB" and workers[1][7] == "1"
        limits = {r[0]: r[2] for r in shown(app, "limit-table")}
        assert limits["client_hello_timeout"] == "12" and limits["idle_timeout"] == "40"
        assert len(shown(app, "event-table")) == 7


async def test_filter_by_endpoint_sni_and_client():
    app = app_for(FakeSource())
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: table(app, "conn-table").order, "connections")
        await pilot.press("slash", *"ep:shop")
        assert [r[0] for r in shown(app, "conn-table")] == ["10cd.2"]
        app.query_one("#conn-filter").value = "sni:app.example"
        await pilot.pause()
        assert [r[0] for r in shown(app, "conn-table")] == ["10cd.1"]
        app.query_one(
            "#conn-filter"
        ).value = "192.0.2"  # a bare word matches endpoint, SNI or client
        await pilot.pause()
        assert [r[0] for r in shown(app, "conn-table")] == ["10ce.7"]
        await pilot.press("escape")
        assert app.focused is table(app, "conn-table")


async def test_sorting_cycles_columns_and_reverses():
    app = app_for(FakeSource())
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: table(app, "conn-table").order, "connections")
        await pilot.press("S")  # age, newest first
        assert [r[0] for r in shown(app, "conn-table")] == ["10ce.7", "10cd.1", "10cd.2"]
        for _ in range(4):
            await pilot.press("s")  # -> endpoint, client, sni, bytes_in
        assert app.sort_column == "bytes_in"
        assert [r[0] for r in shown(app, "conn-table")] == ["10ce.7", "10cd.1", "10cd.2"]
        await pilot.press("S")
        assert [r[0] for r in shown(app, "conn-table")] == ["10cd.2", "10cd.1", "10ce.7"]


async def test_kill_asks_first_and_the_cursor_follows_its_row():
    source = FakeSource()
    app = app_for(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: table(app, "conn-table").order, "connections")
        await pilot.press("down")
        assert table(app, "conn-table").cursor_key == "10cd.1"
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmKill)
        await pilot.press("n")
        assert not any(r[0] == "connections.kill" for r in source.requests)
        await pilot.press("k", "y")
        await until(
            pilot,
            lambda: ("connections.kill", {"id": "10cd.1"}) in source.requests,
            "the kill request",
        )
        await until(pilot, lambda: len(table(app, "conn-table").order) == 2, "the killed row gone")
        assert "10cd.1" not in table(app, "conn-table").order


async def test_reload_problems_are_shown():
    source = FakeSource()
    source.reload_error = ControlError(
        "invalid", "reload refused; still serving the previous config",
        [{"text": "/etc/tlsgate/tlsgate.toml: gateway.workers: expected an integer, got string \"many\""}],
    )  # fmt: skip
    app = app_for(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.snapshot, "a snapshot")
        await pilot.press("r")
        screen = await until(
            pilot, lambda: isinstance(app.screen, ReloadProblems) and app.screen, "the problems"
        )
        assert "gateway.workers: expected an integer" in screen.problems[0]["text"]
        await pilot.press("escape")
        source.reload_error = None
        await pilot.press("r")
        await until(pilot, lambda: source.requests.count(("reload", {})) == 2, "the second reload")


async def test_events_tail_pause_filter_and_detail():
    source = FakeSource()
    app = app_for(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(table(app, "event-table").order) == 7, "the backlog")
        await pilot.press("5")
        events = table(app, "event-table")
        assert app.focused is events and events.cursor_row == 6  # tail: the newest row
        source.on_event(closed_event(8, reason="killed"))
        await until(pilot, lambda: len(events.order) == 8, "a live event")
        assert events.cursor_row == 7
        await pilot.press("p")
        source.on_event(log_event(9, "worker_exited", "worker 1 died", "error"))
        await until(pilot, lambda: app.unseen_events == 1, "the paused count")
        assert len(events.order) == 8
        await pilot.press("p")
        assert len(events.order) == 9
        await pilot.press("slash", *"type:closed", "enter")
        assert [row[1] for row in shown(app, "event-table")] == ["closed"] * 5
        app.query_one("#event-filter").value = "kind:worker_exited"
        await pilot.pause()
        assert len(events.order) == 2
        app.query_one("#event-filter").value = "ep:shop"
        await pilot.pause()
        assert [row[2] for row in shown(app, "event-table")] == ["shop-a"]
        events.focus()
        await pilot.press("enter")
        assert isinstance(app.screen, EventDetail)
        assert app.screen.event["object"]["close_reason"] == "upstream_connect_timeout"


async def test_help_and_quit_keys():
    app = app_for(FakeSource())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("x")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("q")
    assert app.return_code == 0


async def test_disconnected_then_reconnected():
    source = FakeSource()
    app = app_for(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.connected and app.snapshot, "the first snapshot")
        source.fail_connect = True
        await until(pilot, lambda: not app.connected, "the disconnect")
        status_line = app.query_one("#status-line").render()
        assert "disconnected" in str(status_line)
        assert table(app, "conn-table").order == []  # no stale connections
        source.fail_connect = False
        await until(
            pilot, lambda: app.connected and table(app, "conn-table").order, "the reconnect"
        )
        assert source.connects >= 2


async def test_works_at_80x24():
    app = app_for(FakeSource())
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: table(app, "conn-table").order, "connections")
        conn = table(app, "conn-table")
        shown_columns = [c.key for c, _ in conn._columns_for(conn.scrollable_content_region.width)]
        assert shown_columns == ["id", "endpoint", "client", "sni", "bytes_in", "bytes_out", "age"]
