"""The top bar: gateway status on one line, connection and byte rates as sparklines below."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static

from tui.model import RateHistory, human_age, human_bytes

BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int) -> str:
    """The last ``width`` values as bars scaled from zero to their peak, newest on the right.

    Zero-based on purpose: a steady 5 conn/s must look steady, not like the noise
    of a min-to-max scale.
    """
    values = values[-width:] if width > 0 else []
    peak = max(values, default=0) or 1
    return "".join(BARS[round(v / peak * 8)] for v in values).rjust(width, BARS[0])


class RateSpark(Widget):
    DEFAULT_CSS = "RateSpark { width: 1fr; height: 1; color: $accent; background: $boost; }"

    data: reactive[tuple[float, ...]] = reactive(())

    def render(self) -> str:
        return sparkline(list(self.data), self.size.width)


class StatusBar(Vertical):
    DEFAULT_CSS = """
    StatusBar { height: 2; }
    StatusBar #status-line { height: 1; }
    StatusBar .rates { height: 1; }
    StatusBar .rate-label { width: auto; min-width: 16; padding: 0 1 0 0; }
    StatusBar RateSpark { margin: 0 2 0 0; }
    """

    def compose(self) -> ComposeResult:
        yield Static("connecting…", id="status-line")
        with Horizontal(classes="rates"):
            yield Static("conn/s      -", id="conn-rate", classes="rate-label")
            yield RateSpark(id="conn-spark")
            yield Static("B/s      -", id="byte-rate", classes="rate-label")
            yield RateSpark(id="byte-spark")

    def show_status(self, status: dict, rates: RateHistory) -> None:
        t = status["totals"]
        serving = sum(1 for w in status["workers"] if w["state"] == "serving")
        draining = sum(1 for w in status["workers"] if w["state"] == "draining")
        state = status["state"]
        mark = "[green]●[/]" if state == "running" else "[yellow]●[/]"
        parts = [
            f"{mark} tlsgate {status['version']}",
            f"{state} {human_age(status['uptime'])}",
            f"gen {status['generation']}",
            f"workers {serving}" + (f"+{draining} draining" if draining else ""),
            f"conns {t['connections_active']}/{t['connections_total']}",
            f"restarts {t['worker_restarts']}",
            status["config_file"],
        ]
        self.query_one("#status-line", Static).update("  ".join(parts))
        self.query_one("#conn-rate", Static).update(f"conn/s {rates.connection_rate:7.1f}")
        self.query_one("#byte-rate", Static).update(f"B/s {human_bytes(rates.byte_rate):>8}")
        self.query_one("#conn-spark", RateSpark).data = tuple(rates.connections)
        self.query_one("#byte-spark", RateSpark).data = tuple(rates.bytes)

    def show_disconnected(self, path: str, reason: str) -> None:
        self.query_one("#conn-spark", RateSpark).data = ()
        self.query_one("#byte-spark", RateSpark).data = ()
        self.query_one("#conn-rate", Static).update("conn/s      -")
        self.query_one("#byte-rate", Static).update("B/s      -")
        self.query_one("#status-line", Static).update(
            f"[red]○ disconnected[/] · {reason} · retrying"
        )
