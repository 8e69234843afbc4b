"""Turning control-protocol results into text for people: tables, sizes, ages, event lines.

Pure; shared by the CLI (tlsgate/cli_control.py) and the dashboard (tui/model.py).
"""

from __future__ import annotations

from typing import Any


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[("-" if v is None or v == "" else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TB"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def describe_event(event: dict) -> str:
    """One line for a human: time, type, and what happened."""
    ts = event.get("event_timestamp", "")
    obj = event.get("object", {})
    if event.get("event_type") == "tcp_connection_closed.v0":
        conn = obj.get("conn", {})
        endpoint = (obj.get("endpoint") or {}).get("name", "-")
        what = (
            f"{obj.get('id')} {conn.get('client_ip')}:{conn.get('client_port')} sni={conn.get('server_name') or '-'} "
            f"endpoint={endpoint} in={conn.get('bytes_in')} out={conn.get('bytes_out')} "
            f"close_reason={obj.get('close_reason')}"
        )
        return f"{ts} closed  {what}"
    return f"{ts} {obj.get('level', 'info'):<7} {obj.get('kind', 'log')}: {obj.get('message', '')}"
