"""Import rules of the control plane, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(imports: str) -> set[str]:
    code = f"import sys\n{imports}\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "module",
    [
        "tlsgate.control.protocol",
        "tlsgate.control.schema",
        "tlsgate.control.counters",
        "tlsgate.control.client",
    ],
)
def test_shared_protocol_modules_are_pure(module):
    assert not loaded_after(f"import {module}") & {"gevent", "OpenSSL", "textual"}


def test_master_control_plane_loads_neither_gevent_nor_textual():
    loaded = loaded_after("import tlsgate.master.plane, tlsgate.cli_control, tlsgate.metrics")
    assert not loaded & {"gevent", "textual"}


def test_dashboard_never_loads_gevent():
    loaded = loaded_after("import tui.app, tui.bench")
    assert "textual" in loaded and "gevent" not in loaded
