"""Gateway-wide connection limits and running workers as an unprivileged user."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from tests.support.gateway import greeting, read_line, tls_connect, wait_for

pytestmark = pytest.mark.integration


def app_endpoint(upstream):
    return {"name": "app", "url": "tls://app.example.test", "upstream": {"url": upstream.address}}


def hold(gw, pki, count, source="127.0.0.1"):
    """Open relayed connections and keep them; returns the sockets."""
    held = []
    ctx = ssl.create_default_context(cafile=str(pki.files.cert))
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=10, source_address=(source, 0))
        s = ctx.wrap_socket(raw, server_hostname="app.example.test")
        assert read_line(s) == "hello from app\n"
        s.sendall(b"ECHO\n")
        held.append(s)
    return held


def refused_by_gateway(gw, source="127.0.0.1") -> bool:
    """The gateway accepts, then closes at once without a byte (no TLS alert: nothing was read)."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10, source_address=(source, 0)) as s:
        s.settimeout(10)
        try:
            return s.recv(100) == b""
        except ConnectionResetError:
            return True


def test_max_connections_holds_for_the_whole_gateway_not_per_worker(gateway, upstreams, pki):
    app = upstreams("app")
    gw = gateway({"limits": {"max_connections": 4}, "endpoints": [app_endpoint(app)]}, workers=2)
    held = hold(gw, pki, 4)
    try:
        events_before = len(gw.events())
        for _ in range(6):
            assert refused_by_gateway(gw)
        refused = gw.wait_events(events_before + 6)[events_before:]
        assert {e["object"]["close_reason"] for e in refused} == {"max_connections"}
        assert {e["object"]["endpoint"] is None for e in refused} == {True}
        # Existing connections are untouched.
        for s in held:
            s.sendall(b"still")
            assert s.recv(5) == b"still"
        # With 2 workers, a per-worker limit of 4 would have let up to 4 more in.
    finally:
        for s in held:
            s.close()
    # Closing frees the places again.
    wait_for(lambda: _accepted(gw, pki), what="a free place after closing")
    # A probe while the held connections were still closing may have been refused too.
    refusals = sum(e["object"]["close_reason"] == "max_connections" for e in gw.events())
    assert refusals >= 6

    def limits_row():
        rows = json.loads(_cli("limits", "--json", "-c", str(gw.config_path)).stdout)["limits"]
        row = next(r for r in rows if r["name"] == "max_connections")
        return row if row["hits"] == refusals else None  # workers report once a second

    assert wait_for(limits_row, what="the refusals counted by `tlsgate limits`")["value"] == "4"


def _accepted(gw, pki) -> bool:
    try:
        return greeting(gw.port, "app.example.test", pki.files.cert) == "hello from app"
    except OSError:
        return False


def test_max_connections_per_ip(gateway, upstreams, pki):
    app = upstreams("app")
    gw = gateway({"limits": {"max_connections_per_ip": 2}, "endpoints": [app_endpoint(app)]}, workers=2)
    held = hold(gw, pki, 2, source="127.0.0.1")
    try:
        assert refused_by_gateway(gw, source="127.0.0.1")
        # Another client IP is not affected.
        other = hold(gw, pki, 2, source="127.0.0.2")
        for s in other:
            s.close()
        event = next(e for e in gw.wait_events(3) if e["object"]["close_reason"] == "max_connections_per_ip")
        assert event["object"]["conn"]["client_ip"] == "127.0.0.1"
    finally:
        for s in held:
            s.close()


def test_a_killed_workers_connections_stop_counting(gateway, upstreams, pki):
    app = upstreams("app")
    gw = gateway({"limits": {"max_connections": 3}, "endpoints": [app_endpoint(app)]}, workers=1)
    held = hold(gw, pki, 3)
    victim = gw.worker_pids()[0]
    os.kill(victim, 9)
    for s in held:
        s.close()
    gw.wait_serving(2)
    wait_for(lambda: _accepted(gw, pki), what="the replacement worker admitting connections")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tlsgate", *args], capture_output=True, text=True, timeout=30)


def test_workers_run_as_the_configured_user(gateway, upstreams, pki):
    if os.geteuid() != 0:
        pytest.skip("dropping privileges needs root (CI runs as root)")
    plain = upstreams("plain", tls=False)
    # pytest's own tmp directories are private to root: give the workers a place they can reach.
    shared = Path(tempfile.mkdtemp(prefix="tlsgate-user-"))
    os.chmod(shared, 0o755)
    try:
        gw = gateway(
            {
                "gateway": {"user": "nobody", "state_dir": str(shared / "state")},
                "events": {"file": str(shared / "events.jsonl")},
                "endpoints": [
                    app_endpoint(upstreams("app")),
                    {
                        "name": "term",
                        "url": "tls://term.example.test",
                        "upstream": {"url": plain.address},
                        "traffic_policy": {"on_tcp_connect": [{"actions": [{"type": "terminate-tls"}]}]},
                    },
                ],
            }
        )
        master = psutil.Process(gw.proc.pid)
        assert master.uids().real == 0
        nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
        for pid in gw.worker_pids():
            assert psutil.Process(pid).uids() == (nobody, nobody, nobody)
        assert greeting(gw.port, "app.example.test", pki.files.cert) == "hello from app"
        # Termination uses the local CA's files from a worker: state_dir belongs to the user.
        ca = _cli("ca", "path", "-c", str(gw.config_path)).stdout.strip()
        for sni in ("term.example.test", "TERM.example.test"):
            with tls_connect(gw.port, sni, Path(ca)) as s:
                assert read_line(s) == "hello from plain\n"
        state = shared / "state"
        assert state.stat().st_uid == nobody
        assert (state / "ca" / "ca.key").stat().st_uid == nobody
        assert (shared / "events.jsonl").stat().st_uid == nobody
        assert len(gw.wait_events(3)) == 3
        # The control socket belongs to the user, and root may still use it.
        assert (state / "control.sock").stat().st_uid == nobody
        assert _cli("status", "-c", str(gw.config_path)).returncode == 0
        gw.stop()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
