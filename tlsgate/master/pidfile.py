"""The master's pid file, `<state_dir>/tlsgate.pid`, for scripts and service managers."""

from __future__ import annotations

import os
from pathlib import Path

NAME = "tlsgate.pid"


def write(state_dir: Path) -> None:
    path = state_dir / NAME
    tmp = path.with_suffix(".pid.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove(state_dir: Path) -> None:
    path = state_dir / NAME
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except FileNotFoundError:
        pass  # never written, or already removed by a newer master
