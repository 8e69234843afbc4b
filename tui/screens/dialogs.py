"""Modal screens: key help, kill confirmation, event details, reload problems."""

from __future__ import annotations

import json

from rich.json import JSON
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]tlsgate dashboard[/b]

[b]1[/b]-[b]5[/b]   connections, endpoints, workers, limits, events
[b]/[/b]     filter: ep:NAME sni:TEXT client:IP state:S (connections)
      type:closed kind:worker_exited reason:R (events); words match any
[b]esc[/b]   back from the filter to the table
[b]s[/b] / [b]S[/b] sort connections by the next column / reverse
[b]k[/b]     kill the selected connection (asks first)
[b]enter[/b] event details as JSON (events tab)
[b]p[/b]     pause / resume the events tail
[b]r[/b]     reload the gateway's config (shows its problems if invalid)
[b]?[/b]     this help        [b]q[/b] quit

Press any key to close."""


class _Dialog(ModalScreen):
    DEFAULT_CSS = """
    _Dialog { align: center middle; }
    _Dialog > Vertical {
        width: 90%; max-width: 100; height: auto; max-height: 90%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    _Dialog VerticalScroll { height: auto; max-height: 30; }
    """


class HelpScreen(_Dialog):
    """Any key closes it."""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(HELP)

    def on_key(self, event) -> None:
        event.stop()
        self.dismiss()


class ConfirmKill(_Dialog):
    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, conn_id: str, description: str):
        super().__init__()
        self.conn_id = conn_id
        self.description = description

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"Kill connection [b]{self.conn_id}[/b]?\n{self.description}\n\n[b]y[/b] kill   [b]n[/b] keep"
            )

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class EventDetail(_Dialog):
    BINDINGS = [Binding("escape,enter,q", "dismiss", "close")]

    def __init__(self, event: dict):
        super().__init__()
        self.event = event

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"[b]{self.event.get('event_type')}[/b]  {self.event.get('event_id', '')}  (esc closes)"
            )
            with VerticalScroll():
                yield Static(JSON(json.dumps(self.event, sort_keys=True), indent=2))


class ReloadProblems(_Dialog):
    BINDINGS = [Binding("escape,enter,q", "dismiss", "close")]

    def __init__(self, message: str, problems: list[dict]):
        super().__init__()
        self.message = message
        self.problems = problems

    def compose(self) -> ComposeResult:
        lines = "\n".join(f"• {p.get('text') or p}" for p in self.problems) or "(no details)"
        with Vertical():
            yield Static(f"[b red]{self.message}[/]")
            with VerticalScroll():
                yield Static(lines, markup=False)
