"""Snapshots of every panel with fixed data (reviewed by eye; update with --snapshot-update)."""

from __future__ import annotations

import pytest

from tests.tui.fakes import FakeSource, fixed_clock, rates, usage
from tests.tui.helpers import table, until
from tui.app import make_app


def dashboard(source: FakeSource | None = None):
    return make_app(
        source or FakeSource(),
        clock=fixed_clock,
        poll_interval=0.05,
        rates=rates(),
        usage=usage,
        timer=lambda: 0.0,
    )


def loaded(*keys: str):
    async def run_before(pilot) -> None:
        app = pilot.app
        await until(
            pilot,
            lambda: table(app, "conn-table").order and len(table(app, "event-table").order) == 7,
            "data",
        )
        for key in keys:
            await pilot.press(key)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize(
    "keys",
    [(), ("2",), ("3",), ("4",), ("5",)],
    ids=["connections", "endpoints", "workers", "limits", "events"],
)
def test_panels_at_80x24(snap_compare, keys):
    assert snap_compare(dashboard(), terminal_size=(80, 24), run_before=loaded(*keys))


@pytest.mark.parametrize("keys", [(), ("2",)], ids=["connections", "endpoints"])
def test_panels_at_160x50(snap_compare, keys):
    assert snap_compare(dashboard(), terminal_size=(160, 50), run_before=loaded(*keys))


def test_help(snap_compare):
    assert snap_compare(dashboard(), terminal_size=(80, 24), run_before=loaded("question_mark"))


def test_kill_confirmation(snap_compare):
    assert snap_compare(dashboard(), terminal_size=(80, 24), run_before=loaded("down", "k"))


def test_event_detail(snap_compare):
    assert snap_compare(
        dashboard(), terminal_size=(80, 24), run_before=loaded("5", "up", "up", "enter")
    )


def test_filtered_connections(snap_compare):
    assert snap_compare(
        dashboard(), terminal_size=(80, 24), run_before=loaded("slash", *"ep:app", "enter")
    )


def test_disconnected(snap_compare):
    source = FakeSource()
    source.fail_connect = True

    async def run_before(pilot) -> None:
        await until(
            pilot,
            lambda: "disconnected" in str(pilot.app.query_one("#status-line").render()),
            "disconnect",
        )

    assert snap_compare(dashboard(source), terminal_size=(80, 24), run_before=run_before)
