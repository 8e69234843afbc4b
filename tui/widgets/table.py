"""`KeyedTable`: a virtual table that renders only the rows on screen.

Textual's DataTable removes a row in O(rows) (500 removals from 10,000 rows
took 9 s when measured), so a table of 10,000 live connections with churn
cannot be one. This widget is a Line API `ScrollView`: the rows live in a dict
keyed by id (the model's keyed diff hands in only what changed) plus an order
list, and `render_line` formats the few visible lines. Updating costs nothing
per row; drawing costs the screen's height.

The cursor follows its row's key across updates, so a connection stays
selected while others come and go. Columns narrower screens cannot hold are
dropped by priority; the one flexible column takes the spare width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    priority: int = 0
    """Lower stays longer when the screen is narrow; 0 is never dropped."""
    right: bool = False
    flex: bool = False
    """Takes the spare width (at most one column)."""


class KeyedTable(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    KeyedTable { height: 1fr; overflow-x: hidden; }
    KeyedTable > .keyed-table--header { text-style: bold; background: $panel; }
    KeyedTable > .keyed-table--cursor { background: $accent 40%; }
    KeyedTable:focus > .keyed-table--cursor { background: $accent; color: $text; }
    KeyedTable > .keyed-table--empty { color: $text-muted; }
    """
    COMPONENT_CLASSES = {"keyed-table--header", "keyed-table--cursor", "keyed-table--empty"}
    BINDINGS = [
        Binding("up", "cursor(-1)", "up", show=False),
        Binding("down", "cursor(1)", "down", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "edge(0)", show=False),
        Binding("end", "edge(1)", show=False),
        Binding("enter", "select", "details", show=False),
    ]

    cursor_row = reactive(0, repaint=False)

    class Selected(Message):
        """Enter on a row."""

        def __init__(self, table: KeyedTable, key: str):
            super().__init__()
            self.table = table
            self.key = key

    class HeaderClicked(Message):
        def __init__(self, table: KeyedTable, column: str):
            super().__init__()
            self.table = table
            self.column = column

    def __init__(self, columns: Sequence[Column], empty_text: str = "nothing to show", **kwargs):
        super().__init__(**kwargs)
        self.columns = tuple(columns)
        self.empty_text = empty_text
        self.rows: Mapping[str, Sequence[str]] = {}
        self.order: list[str] = []
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._cursor_key: str | None = None
        self._layout: list[tuple[Column, int]] = []
        self._layout_width = -1

    # -- data ------------------------------------------------------------------------

    def show(self, rows: Mapping[str, Sequence[str]], order: list[str]) -> None:
        """Display ``order`` (keys into ``rows``); the cursor stays on its key if still shown."""
        self.rows = rows
        self.order = order
        self.virtual_size = Size(self._width, len(order) + 1)
        if self._cursor_key is not None:
            try:
                index = order.index(self._cursor_key)
            except ValueError:
                index = min(self.cursor_row, max(0, len(order) - 1))
            self.set_reactive(KeyedTable.cursor_row, index)
        self._cursor_key = order[self.cursor_row] if order else None
        self.refresh()

    @property
    def cursor_key(self) -> str | None:
        return self._cursor_key

    def move_to(self, key: str) -> None:
        if key in self.order:
            self.cursor_row = self.order.index(key)

    def watch_cursor_row(self, row: int) -> None:
        self._cursor_key = self.order[row] if 0 <= row < len(self.order) else None
        self._scroll_to_cursor()
        self.refresh()

    # -- actions ---------------------------------------------------------------------

    def action_cursor(self, delta: int) -> None:
        if self.order:
            self.cursor_row = max(0, min(len(self.order) - 1, self.cursor_row + delta))

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.size.height - 2))

    def action_edge(self, end: int) -> None:
        if self.order:
            self.cursor_row = len(self.order) - 1 if end else 0

    def action_select(self) -> None:
        if self._cursor_key is not None:
            self.post_message(self.Selected(self, self._cursor_key))

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            x = 0
            for column, width in self._columns_for(self._width):
                if x <= event.x < x + width + 1:
                    self.post_message(self.HeaderClicked(self, column.key))
                    return
                x += width + 1
            return
        row = int(self.scroll_offset.y) + event.y - 1
        if 0 <= row < len(self.order):
            self.cursor_row = row

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.size.height - 1)
        top = int(self.scroll_offset.y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)

    # -- rendering -------------------------------------------------------------------

    def _columns_for(self, width: int) -> list[tuple[Column, int]]:
        if width == self._layout_width:
            return self._layout
        chosen = sorted(self.columns, key=lambda c: c.priority)
        while (
            chosen
            and sum(c.width for c in chosen) + len(chosen) - 1 > width
            and chosen[-1].priority > 0
        ):
            chosen.pop()
        keep = {c.key for c in chosen}
        ordered = [c for c in self.columns if c.key in keep]
        spare = width - (sum(c.width for c in ordered) + len(ordered) - 1)
        layout = [(c, c.width + (spare if c.flex and spare > 0 else 0)) for c in ordered]
        self._layout, self._layout_width = layout, width
        return layout

    @property
    def _width(self) -> int:
        """The width rows are drawn in: the widget's, less the vertical scrollbar."""
        return self.scrollable_content_region.width

    def render_line(self, y: int) -> Strip:
        width = self._width
        layout = self._columns_for(width)
        if y == 0:
            cells = []
            for column, w in layout:
                mark = ""
                if column.key == self.sort_column:
                    mark = "▼" if self.sort_reverse else "▲"
                cells.append(_fit(column.label + mark, w, column.right))
            style = self.get_component_rich_style("keyed-table--header")
            return Strip([Segment(" ".join(cells).ljust(width)[:width], style)], width)
        index = int(self.scroll_offset.y) + y - 1
        base = self.rich_style
        if not self.order:
            if y == 1:
                style = self.get_component_rich_style("keyed-table--empty")
                return Strip([Segment(self.empty_text[:width].ljust(width), style)], width)
            return Strip.blank(width, base)
        if index >= len(self.order):
            return Strip.blank(width, base)
        key = self.order[index]
        row = self.rows.get(key, ())
        positions = {c.key: i for i, c in enumerate(self.columns)}
        cells = [
            _fit(row[positions[c.key]] if positions[c.key] < len(row) else "", w, c.right)
            for c, w in layout
        ]
        text = " ".join(cells).ljust(width)[:width]
        style: Style = base
        if index == self.cursor_row:
            style = self.get_component_rich_style("keyed-table--cursor")
        return Strip([Segment(text, style)], width)

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(self._width, len(self.order) + 1)
        self._scroll_to_cursor()


def _fit(text: str, width: int, right: bool) -> str:
    if len(text) > width:
        return text[: max(0, width - 1)] + "…" if width > 1 else text[:width]
    return text.rjust(width) if right else text.ljust(width)
