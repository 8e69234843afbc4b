"""Waiting for the dashboard to catch up, without fixed sleeps."""

from __future__ import annotations

import time

from tui.widgets.table import KeyedTable


async def until(pilot, predicate, what: str, timeout: float = 20.0):
    """Let the app run until ``predicate()`` is truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"dashboard never showed {what}")


def table(app, table_id: str) -> KeyedTable:
    return app.query_one(f"#{table_id}", KeyedTable)


def shown(app, table_id: str) -> list[tuple[str, ...]]:
    """The rows a table displays, in order, as the cells it was given."""
    t = table(app, table_id)
    return [tuple(t.rows[key]) for key in t.order]


def screen_text(app) -> str:
    """Everything on screen as plain text (what a person would read)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())
