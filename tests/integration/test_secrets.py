"""Private keys never leave their files: not in logs, events, `config show` or the control API."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from tests.support.certs import TestCA
from tests.support.gateway import read_line, tls_connect

pytestmark = pytest.mark.integration


def test_private_keys_appear_nowhere(gateway, upstreams, tmp_path):
    own = TestCA(tmp_path / "own", "own CA")
    inline = own.issue("inline", ["inline.example.test"])
    stored = own.issue("stored", ["stored.example.test"])
    plain = upstreams("plain", tls=False)
    policy = {
        "on_tcp_connect": [
            {
                "actions": [
                    {
                        "type": "terminate-tls",
                        "config": {
                            "server_certificate": inline.cert_pem.decode(),
                            "server_private_key": inline.key_pem.decode(),
                        },
                    }
                ]
            }
        ]
    }
    gw = gateway(
        {
            "certificates": [{"cert": str(stored.cert), "key": str(stored.key)}],
            "endpoints": [
                {"name": "inline", "url": "tls://inline.example.test", "upstream": {"url": plain.address}, "traffic_policy": policy},
                {
                    "name": "stored",
                    "url": "tls://stored.example.test",
                    "upstream": {"url": plain.address},
                    "traffic_policy": {"on_tcp_connect": [{"actions": [{"type": "terminate-tls"}]}]},
                },
            ],
        }
    )
    for name in ("inline", "stored"):
        with tls_connect(gw.port, f"{name}.example.test", own.files.cert) as s:
            assert read_line(s) == "hello from plain\n"
    gw.wait_events(2)
    config = str(gw.config_path)
    outputs = {
        "config show": _cli("config", "show", "-c", config),
        "check": _cli("check", "-c", config),
        "endpoints list": _cli("endpoints", "list", "--json", "-c", config),
        "status": _cli("status", "--json", "-c", config),
        "events": _cli("events", "--json", "-c", config),
    }
    gw.stop()
    outputs["log"] = gw.log()
    outputs["events file"] = gw.events_path.read_text()
    key_lines = [line for key in (inline, stored) for line in key.key_pem.decode().splitlines()[1:-1]]
    for where, text in outputs.items():
        assert "PRIVATE KEY" not in text, where
        assert not any(line in text for line in key_lines), where
    shown = outputs["config show"]
    assert "[private key redacted]" in shown
    # The local CA's key and every leaf are 0600.
    state = tmp_path / "gw0" / "state"
    for path in state.rglob("*"):
        if path.is_file() and (path.suffix in (".key", ".pem")):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    json.loads(outputs["endpoints list"])


def _cli(*args) -> str:
    result = subprocess.run([sys.executable, "-m", "tlsgate", *args], capture_output=True, text=True, timeout=30)
    return result.stdout + result.stderr
