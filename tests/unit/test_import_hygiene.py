"""Import rules, checked in fresh interpreters: the master never loads gevent, the pure core
loads neither gevent, OpenSSL nor textual."""

from __future__ import annotations

import subprocess
import sys

import pytest

FORBIDDEN_IN_CORE = ("gevent", "OpenSSL", "textual")


def loaded_after(imports: str) -> set[str]:
    code = f"import sys\n{imports}\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize(
    "module",
    [
        "tlsgate.config.load",
        "tlsgate.config.dump",
        "tlsgate.proto.clienthello",
        "tlsgate.proto.ja4",
        "tlsgate.proto.proxy_protocol",
        "tlsgate.routing",
        "tlsgate.events",
        "tlsgate.policy",
    ],
)
def test_pure_core_loads_no_io_framework(module):
    loaded = loaded_after(f"import {module}")
    assert not loaded & set(FORBIDDEN_IN_CORE), loaded & set(FORBIDDEN_IN_CORE)


def test_master_and_cli_never_load_gevent():
    loaded = loaded_after("import tlsgate.cli, tlsgate.master.arbiter, tlsgate.master.sockets")
    assert "gevent" not in loaded
    assert "textual" not in loaded
