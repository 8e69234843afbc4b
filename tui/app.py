"""The tlsgate dashboard: `Dashboard(App)`, its factory `make_app`, and `run_dashboard` for the CLI.

Fetching is separate from rendering: one `Poller` worker (tui/poller.py) owns
the gateway client and posts messages; the handlers here feed the pure models
(tui/model.py) and hand the widgets the rows to draw. Commands the operator
gives (kill, reload) run as short workers over the same client, so the UI
never waits on the socket.

Tests build the app with `make_app(FakeSource(...), clock=..., poll_interval=...)`
(tests/tui/); `tlsgate dashboard` calls `run_dashboard(socket_path)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from tlsgate.control.client import ControlError, GatewayNotRunning
from tui.client import GatewayClient, GatewaySource
from tui.columns import (
    CONNECTION_COLUMNS,
    ENDPOINT_COLUMNS,
    EVENT_COLUMNS,
    LIMIT_COLUMNS,
    SORTABLE,
    TABS,
    WORKER_COLUMNS,
)
from tui.messages import EventsReceived, GatewayConnected, GatewayDisconnected, SnapshotReceived
from tui.model import (
    CONNECTION_FILTER_FIELDS,
    EVENT_FILTER_FIELDS,
    ConnectionsModel,
    EventsModel,
    RateHistory,
    Snapshot,
    human_age,
    human_bytes,
    parse_filter,
)
from tui.poller import Poller
from tui.screens.dialogs import ConfirmKill, EventDetail, HelpScreen, ReloadProblems
from tui.widgets.status import StatusBar
from tui.widgets.table import KeyedTable


class Dashboard(App):
    CSS_PATH = "dashboard.tcss"
    TITLE = "tlsgate"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
        Binding("r", "reload", "reload"),
        Binding("slash", "filter", "filter"),
        Binding("k", "kill", "kill"),
        Binding("s", "sort(False)", "sort"),
        Binding("S", "sort(True)", "reverse", show=False),
        Binding("p", "pause", "pause events"),
        Binding("escape", "leave_filter", show=False),
        *[Binding(str(i + 1), f"tab('{name}')", name, show=False) for i, name in enumerate(TABS)],
    ]

    def __init__(
        self,
        source: GatewaySource,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 1.0,
        rates: RateHistory | None = None,
        usage: Callable[[list[int]], dict[int, tuple[float, int]]] | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ):
        super().__init__()
        self.source = source
        self.clock = clock
        self.timer = timer
        self.poller = Poller(
            source, self.post_message, poll_interval, clock=clock, usage=usage,
            want_connections=lambda: self._active_tab() == "connections",
        )  # fmt: skip
        self.rates = rates or RateHistory()
        self.connections = ConnectionsModel()
        self.events_model = EventsModel()
        self.snapshot: Snapshot | None = None
        self.connected = False
        self.sort_column = "age"
        self.sort_reverse = True
        self.events_paused = False
        self.unseen_events = 0
        self.refresh_seconds = 0.0
        """Time the last snapshot took to apply: models, diff and table updates (not the drawing)."""

    def compose(self) -> ComposeResult:
        yield StatusBar()
        with TabbedContent(id="tabs", initial="connections"):
            with TabPane("Connections", id="connections"):
                with Vertical():
                    yield Input(
                        placeholder="/ filter: ep:NAME sni:TEXT client:IP state:S or words",
                        id="conn-filter",
                        compact=True,
                    )
                    yield KeyedTable(CONNECTION_COLUMNS, "no open connections", id="conn-table")
                    yield Static("", id="conn-info", classes="info")
            with TabPane("Endpoints", id="endpoints"):
                yield KeyedTable(ENDPOINT_COLUMNS, "no endpoints", id="endpoint-table")
            with TabPane("Workers", id="workers"):
                yield KeyedTable(WORKER_COLUMNS, "no workers", id="worker-table")
            with TabPane("Limits", id="limits"):
                yield KeyedTable(LIMIT_COLUMNS, "no limits", id="limit-table")
            with TabPane("Events", id="events"):
                with Vertical():
                    yield Input(
                        placeholder="/ filter: type:closed kind:KIND ep:NAME reason:R or words",
                        id="event-filter",
                        compact=True,
                    )
                    yield KeyedTable(EVENT_COLUMNS, "no events yet", id="event-table")
                    yield Static("", id="event-info", classes="info")
        yield Footer()

    def on_mount(self) -> None:
        for input_ in self.query(Input):
            input_.cursor_blink = False
        table = self.query_one("#conn-table", KeyedTable)
        table.sort_column, table.sort_reverse = self.sort_column, self.sort_reverse
        table.focus()
        self._poll()

    @work(exclusive=True, group="poller")
    async def _poll(self) -> None:
        await self.poller.run()

    # -- messages from the poller -------------------------------------------------------

    def on_gateway_connected(self, message: GatewayConnected) -> None:
        self.connected = True
        self.sub_title = message.path

    def on_gateway_disconnected(self, message: GatewayDisconnected) -> None:
        self.connected = False
        self.rates.reset()
        with _unless_closing():
            self.query_one(StatusBar).show_disconnected(message.path, message.reason)
            self.connections.update([], self.clock())
            self._show_connections()

    def on_snapshot_received(self, message: SnapshotReceived) -> None:
        started = self.timer()
        with _unless_closing():
            self.apply_snapshot(message.snapshot)
            self.refresh_seconds = self.timer() - started
            self._show_connection_info()

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        now = self.clock()
        status = snapshot.status
        self.rates.add(snapshot.fetched_at, status["totals"])
        self.query_one(StatusBar).show_status(status, self.rates)
        if snapshot.connections is not None:
            self.connections.update(snapshot.connections, now)
            self._show_connections()
        self._show_endpoints(snapshot)
        self._show_workers(snapshot)
        self._show_limits(snapshot)

    def on_events_received(self, message: EventsReceived) -> None:
        added = self.events_model.add(message.events)
        with _unless_closing():
            if self.events_paused:
                self.unseen_events += added
                self._show_event_info()
                return
            self._show_events()

    # -- rendering -------------------------------------------------------------------------

    def _show_connections(self) -> None:
        text = self.query_one("#conn-filter", Input).value
        predicate = parse_filter(text, CONNECTION_FILTER_FIELDS, ("endpoint", "sni", "client"))
        order = self.connections.view(predicate, self.sort_column, self.sort_reverse)
        self.query_one("#conn-table", KeyedTable).show(self.connections.rows, order)

    def _show_connection_info(self) -> None:
        table = self.query_one("#conn-table", KeyedTable)
        total = len(self.connections.rows)
        arrow = "▼" if self.sort_reverse else "▲"
        self.query_one("#conn-info", Static).update(
            f"{len(table.order)} of {total} connections · sort {self.sort_column}{arrow} · "
            f"refresh {self.refresh_seconds * 1000:.1f} ms"
        )

    def _show_endpoints(self, snapshot: Snapshot) -> None:
        rows = {}
        for e in snapshot.endpoints:
            error = e.get("last_error")
            rows[e["name"]] = (
                e["name"], e["url"], e["termination"], e["upstream"]["url"], str(e["pool_size"]),
                str(e["active"]), str(e["total"]), e["source"],
                f"{error['reason']} {human_age(self.clock() - error['ts'])} ago" if error else "",
            )  # fmt: skip
        self.query_one("#endpoint-table", KeyedTable).show(rows, list(rows))

    def _show_workers(self, snapshot: Snapshot) -> None:
        rows = {}
        for w in snapshot.status["workers"]:
            key = str(w["pid"] or f"slot{w['slot']}")
            cpu, rss = snapshot.worker_usage.get(w["pid"] or 0, (0.0, 0))
            rows[key] = (
                str(w["pid"] or "-"), str(w["generation"]), w["state"], str(w["connections"]),
                f"{cpu:.1f}", human_bytes(rss) if rss else "-", human_age(w["age"]),
                str(w["restarts"]), str(w["slot"]),
            )  # fmt: skip
        self.query_one("#worker-table", KeyedTable).show(rows, list(rows))

    def _show_limits(self, snapshot: Snapshot) -> None:
        rows = {
            r["name"]: (r["name"], r["value"], str(r["hits"]), r["description"])
            for r in snapshot.limits
        }
        self.query_one("#limit-table", KeyedTable).show(rows, list(rows))

    def _show_events(self) -> None:
        text = self.query_one("#event-filter", Input).value
        predicate = parse_filter(text, EVENT_FILTER_FIELDS, ("type", "kind", "endpoint", "summary"))
        table = self.query_one("#event-table", KeyedTable)
        following = table.cursor_key is None or table.cursor_row >= len(table.order) - 1
        order = self.events_model.view(predicate)
        table.show(self.events_model.rows, order)
        if following and order:
            table.move_to(order[-1])
        self.unseen_events = 0
        self._show_event_info()

    def _show_event_info(self) -> None:
        shown = len(self.query_one("#event-table", KeyedTable).order)
        state = (
            f"[yellow]paused[/] · {self.unseen_events} new" if self.events_paused else "following"
        )
        self.query_one("#event-info", Static).update(
            f"{state} · {shown} of {len(self.events_model.events)} events · p pause · enter details"
        )

    # -- input -----------------------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "conn-filter":
            self._show_connections()
            self._show_connection_info()
        elif event.input.id == "event-filter":
            self._show_events()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_leave_filter()

    def on_keyed_table_selected(self, message: KeyedTable.Selected) -> None:
        if message.table.id == "event-table":
            self.push_screen(EventDetail(self.events_model.events[message.key]))

    def on_keyed_table_header_clicked(self, message: KeyedTable.HeaderClicked) -> None:
        if message.table.id == "conn-table" and message.column in SORTABLE:
            if message.column == self.sort_column:
                self.sort_reverse = not self.sort_reverse
            else:
                self.sort_column, self.sort_reverse = message.column, False
            self._apply_sort()

    def _active_tab(self) -> str:
        try:
            return self.query_one(TabbedContent).active
        except NoMatches:
            return "connections"  # not mounted yet, or already closing

    def action_tab(self, name: str) -> None:
        self.query_one(TabbedContent).active = name
        table = {
            "connections": "#conn-table",
            "endpoints": "#endpoint-table",
            "workers": "#worker-table",
            "limits": "#limit-table",
            "events": "#event-table",
        }[name]
        self.query_one(table, KeyedTable).focus()

    def action_filter(self) -> None:
        tab = self._active_tab()
        if tab in ("connections", "events"):
            self.query_one(
                "#conn-filter" if tab == "connections" else "#event-filter", Input
            ).focus()

    def action_leave_filter(self) -> None:
        if isinstance(self.focused, Input):
            self.query_one(
                "#conn-table" if self.focused.id == "conn-filter" else "#event-table", KeyedTable
            ).focus()

    def action_sort(self, reverse: bool) -> None:
        if reverse:
            self.sort_reverse = not self.sort_reverse
        else:
            index = SORTABLE.index(self.sort_column)
            self.sort_column, self.sort_reverse = SORTABLE[(index + 1) % len(SORTABLE)], False
        self._apply_sort()

    def _apply_sort(self) -> None:
        table = self.query_one("#conn-table", KeyedTable)
        table.sort_column, table.sort_reverse = self.sort_column, self.sort_reverse
        self._show_connections()
        self._show_connection_info()

    def action_pause(self) -> None:
        self.events_paused = not self.events_paused
        if not self.events_paused:
            self._show_events()
        else:
            self._show_event_info()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_kill(self) -> None:
        if self._active_tab() != "connections":
            return
        key = self.query_one("#conn-table", KeyedTable).cursor_key
        conn = self.connections.raw.get(key) if key else None
        if conn is None:
            self.notify("no connection selected", severity="warning")
            return
        description = (
            f"{conn.get('client')} → {conn.get('endpoint') or '-'} (sni {conn.get('sni') or '-'})"
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self._kill(conn["id"])

        self.push_screen(ConfirmKill(conn["id"], description), answered)

    @work(group="commands")
    async def _kill(self, conn_id: str) -> None:
        try:
            await self.source.request("connections.kill", id=conn_id)
        except (ControlError, GatewayNotRunning) as e:
            self.notify(f"kill {conn_id}: {e}", severity="error")
            return
        self.notify(f"killed {conn_id}")

    def action_reload(self) -> None:
        self._reload()

    @work(group="commands")
    async def _reload(self) -> None:
        try:
            result = await self.source.request("reload")
        except ControlError as e:
            self.push_screen(ReloadProblems(e.message, e.problems))
            return
        except GatewayNotRunning as e:
            self.notify(f"reload: {e}", severity="error")
            return
        self.notify(f"reloaded: generation {result['generation']}")


@contextmanager
def _unless_closing():
    """Messages still queued when the app exits find their widgets gone: nothing to draw then."""
    try:
        yield
    except NoMatches:
        pass


def make_app(source: GatewaySource, **kwargs) -> Dashboard:
    return Dashboard(source, **kwargs)


def run_dashboard(socket_path: str) -> int:
    make_app(GatewayClient(socket_path)).run()
    return 0
