"""The control socket of a real gateway: security, robustness, status, connections, events, limits.

Also holds the helpers the other control tests import (`control`, `app_config`, `run_cli`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile

import pytest

from tests.support.gateway import greeting, read_line, tls_connect, wait_for
from tlsgate.control.client import ControlClient, ControlError, GatewayNotRunning
from tlsgate.control.protocol import FrameDecoder, build_request, encode_message

pytestmark = pytest.mark.integration


def app_config(upstream, **sections) -> dict:
    config = {
        "endpoints": [
            {"name": "app", "url": "tls://app.example.test", "upstream": {"url": upstream.address}}
        ]
    }
    config.update(sections)
    return config


def socket_of(gw) -> str:
    return str(gw.dir / "state" / "control.sock")


def control(gw) -> ControlClient:
    client = ControlClient(socket_of(gw), timeout=20)
    client.connect()
    return client


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "tlsgate", *args], capture_output=True, text=True, timeout=60
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"tlsgate {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def raw_exchange(path: str, data: bytes, read: bool = True) -> list[dict]:
    """Send raw bytes to the control socket, then read frames until the gateway closes or goes quiet."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(data)
        if not read:
            return []
        decoder, messages = FrameDecoder(), []
        s.settimeout(2)
        try:
            while chunk := s.recv(65536):
                messages += decoder.feed(chunk)
        except TimeoutError:
            pass  # the connection stays open after a recoverable error; what came is enough
        return messages


# -- security ----------------------------------------------------------------------------


def test_socket_is_0600_in_a_0700_directory(gateway, upstreams):
    gw = gateway(app_config(upstreams("app")))
    path = socket_of(gw)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def _connect_as(uid: int, path: str) -> dict:
    """Connect from a child process running as ``uid``; report what it saw."""
    code = f"""
import json, os, socket
from tlsgate.control.protocol import FrameDecoder, build_request, encode_message
request = encode_message(build_request(1, "status"))
decoder = FrameDecoder()
decoder.feed(b"")  # everything imported before the privileges go
os.setgid({uid}); os.setuid({uid})
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect({path!r})
except OSError as e:
    print(json.dumps({{"connect_error": e.strerror}})); raise SystemExit
try:
    s.sendall(encode_message(build_request(1, "status")))
except OSError:
    pass
data = b""
try:
    while chunk := s.recv(65536):
        data += chunk
except OSError:
    pass
print(json.dumps({{"messages": decoder.feed(data)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def reachable_dir():
    """A directory every user can traverse (pytest's own tmp directories are 0700 for root)."""
    path = tempfile.mkdtemp(prefix="tlsgate-ctl-", dir="/tmp")
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client under another uid")
def test_other_users_cannot_reach_the_socket_file(gateway, upstreams, reachable_dir):
    path = os.path.join(reachable_dir, "run", "control.sock")
    gateway(app_config(upstreams("app"), gateway={"control_socket": path}))
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700  # created by the gateway
    seen = _connect_as(65534, path)
    assert seen == {"connect_error": "Permission denied"}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client under another uid")
def test_peer_credentials_reject_other_uids_even_with_open_file_modes(
    gateway, upstreams, reachable_dir
):
    path = os.path.join(reachable_dir, "run", "control.sock")
    gw = gateway(app_config(upstreams("app"), gateway={"control_socket": path}))
    # Simulate an operator loosening the modes: the SO_PEERCRED check must still refuse.
    os.chmod(os.path.dirname(path), 0o755)
    os.chmod(path, 0o666)
    seen = _connect_as(65534, path)
    [reply] = seen["messages"]
    assert reply["ok"] is False and reply["error"]["code"] == "forbidden"
    assert "uid 65534" in reply["error"]["message"]
    assert "refused process" in gw.log()
    with ControlClient(path) as c:  # the owner still gets in
        assert c.request("status")["generation"] == 1


# -- robustness --------------------------------------------------------------------------


def test_malformed_requests_get_errors_and_the_connection_stays_usable(gateway, upstreams):
    gw = gateway(app_config(upstreams("app")))
    path = socket_of(gw)
    garbage = struct.pack("!I", 9) + b"not json!"
    not_object = encode_message(["a", "list"])  # type: ignore[arg-type]
    no_type = encode_message({"v": 1, "id": 5})
    old_version = encode_message({"v": 99, "id": 6, "type": "status"})
    unknown = encode_message(build_request(7, "nonsense"))
    good = encode_message(build_request(8, "status"))
    replies = raw_exchange(path, garbage + not_object + no_type + old_version + unknown + good)
    assert [r.get("id") for r in replies] == [None, None, 5, 6, 7, 8]
    codes = [r["error"]["code"] for r in replies[:5]]
    assert codes == [
        "bad_request",
        "bad_request",
        "bad_request",
        "unsupported_version",
        "unknown_request",
    ]
    assert replies[5]["ok"] is True and replies[5]["result"]["generation"] == 1


def test_oversized_and_truncated_requests_never_disturb_the_gateway(gateway, upstreams, pki):
    gw = gateway(app_config(upstreams("app")))
    path = socket_of(gw)
    replies = raw_exchange(path, struct.pack("!I", 50 * 1024 * 1024) + b"x" * 1000)
    assert len(replies) == 1 and replies[0]["error"]["code"] == "too_large"
    # A frame cut short, then the client vanishes.
    raw_exchange(path, encode_message(build_request(1, "status"))[:-3], read=False)
    raw_exchange(path, b"\x00\x00", read=False)
    with control(gw) as c:
        assert c.request("status")["state"] == "running"
    assert greeting(gw.port, "app.example.test", pki.files.cert) == "hello from app"
    assert gw.proc.poll() is None


def test_cli_without_a_gateway_says_so_and_exits_1(tmp_path):
    proc = run_cli("status", "--socket", str(tmp_path / "nothing.sock"))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "no gateway is running at" in proc.stderr and "Traceback" not in proc.stderr


# -- status, connections, kill, events ---------------------------------------------------


def test_status_lists_workers_and_totals(gateway, upstreams, pki):
    gw = gateway(app_config(upstreams("app")))
    for _ in range(3):
        greeting(gw.port, "app.example.test", pki.files.cert)
    with control(gw) as c:
        status = wait_for(
            lambda: _if(c.request("status"), lambda s: s["totals"]["connections_closed"] == 3)
        )
    assert status["config_file"] == str(gw.config_path)
    assert status["generation"] == 1 and status["state"] == "running"
    assert sorted(w["pid"] for w in status["workers"]) == sorted(gw.worker_pids())
    assert all(w["state"] == "serving" and w["restarts"] == 0 for w in status["workers"])
    assert status["totals"]["connections_total"] == 3 and status["totals"]["bytes_out"] > 0
    proc = run_cli("status", "--json", "--socket", socket_of(gw), check=True)
    assert json.loads(proc.stdout)["pid"] == gw.proc.pid
    human = run_cli("status", "-c", str(gw.config_path), check=True).stdout
    assert "generation 1" in human and "serving" in human


def _if(value, predicate):
    return value if predicate(value) else None


def test_connections_list_and_kill_with_close_reason_killed(gateway, upstreams, pki):
    gw = gateway(app_config(upstreams("app")))
    held = tls_connect(gw.port, "app.example.test", pki.files.cert)
    assert read_line(held) == "hello from app\n"
    held.sendall(b"ECHO\n")
    with control(gw) as c:
        [row] = wait_for(
            lambda: _if(c.request("connections.list")["connections"], lambda rows: rows)
        )
        assert row["endpoint"] == "app" and row["sni"] == "app.example.test"
        assert row["state"] == "relaying" and row["worker"] in gw.worker_pids()
        assert row["client"] == f"127.0.0.1:{held.getsockname()[1]}"
        assert row["bytes_in"] > 200 and row["bytes_out"] > 0
        listing = run_cli("conns", "list", "--socket", socket_of(gw), check=True).stdout
        assert row["id"] in listing and "app.example.test" in listing
        with pytest.raises(ControlError) as missing:
            c.request("connections.kill", id=f"{row['worker']:x}.999999")
        assert missing.value.code == "not_found"
        killed = run_cli("conns", "kill", row["id"], "--socket", socket_of(gw), check=True)
        assert f"killed {row['id']}" in killed.stdout
        held.settimeout(10)
        assert held.recv(100) == b""
        event = wait_for(lambda: _closed_event(c, row["id"]))
    assert event["object"]["close_reason"] == "killed"
    assert [e["object"]["close_reason"] for e in gw.wait_events(1)] == ["killed"]
    held.close()


def _closed_event(client: ControlClient, conn_id: str) -> dict | None:
    for event in client.subscribe(backlog=1000):
        if event["event_type"] == "tcp_connection_closed.v0" and event["object"]["id"] == conn_id:
            return event
    return None


def test_events_follow_streams_closes_and_gateway_log_events(gateway, upstreams, pki):
    gw = gateway(app_config(upstreams("app")))
    with control(gw) as c:
        stream = c.subscribe(backlog=0, follow=True)
        greeting(gw.port, "app.example.test", pki.files.cert)
        first = next(stream)
        assert first["event_type"] == "tcp_connection_closed.v0"
        assert first["object"]["close_reason"] == "eof"
        # The stream and the events file carry the very same event.
        assert gw.wait_events(1)[0]["event_id"] == first["event_id"]
        victim = gw.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        kinds = []
        while "worker_started" not in kinds:
            event = next(stream)
            if event["event_type"] == "gateway_log.v0":
                kinds.append(event["object"]["kind"])
        assert kinds[0] == "worker_exited"
    with control(gw) as c:
        status = c.request("status")
    assert sum(w["restarts"] for w in status["workers"]) == 1
    assert status["totals"]["worker_restarts"] == 1
    out = run_cli("events", "--socket", socket_of(gw), check=True).stdout
    assert "close_reason=eof" in out and "worker_exited" in out
    as_json = json.loads(run_cli("events", "--json", "--socket", socket_of(gw), check=True).stdout)
    assert {e["event_type"] for e in as_json} == {"tcp_connection_closed.v0", "gateway_log.v0"}


def test_limits_count_hits(gateway, upstreams, pki):
    gw = gateway(app_config(upstreams("app"), limits={"client_hello_timeout": "300ms"}))
    silent = socket.create_connection(("127.0.0.1", gw.port))
    silent.settimeout(10)
    assert silent.recv(10) == b""  # closed by the gateway once the ClientHello timeout passed
    silent.close()
    with control(gw) as c:
        limits = wait_for(
            lambda: _if(
                {row["name"]: row for row in c.request("limits")["limits"]},
                lambda rows: rows["client_hello_timeout"]["hits"] == 1,
            )
        )
    assert limits["client_hello_timeout"]["value"] == "300ms"
    assert limits["idle_timeout"]["hits"] == 0
    out = run_cli("limits", "--socket", socket_of(gw), check=True).stdout
    assert "client_hello_timeout" in out and "300ms" in out


def test_stop_through_the_cli(gateway, upstreams):
    gw = gateway(app_config(upstreams("app")))
    out = run_cli("stop", "--wait", "--socket", socket_of(gw), check=True).stdout
    assert "stopping (graceful): stopped" in out
    assert gw.proc.wait(20) == 0
    assert not os.path.exists(socket_of(gw))
    with pytest.raises(GatewayNotRunning):
        ControlClient(socket_of(gw)).connect()


def test_a_second_gateway_does_not_steal_a_live_control_socket(gateway, upstreams):
    app = upstreams("app")
    first = gateway(app_config(app))
    second = gateway(app_config(app, gateway={"control_socket": socket_of(first)}), start=False)
    second.start(wait=False)
    assert second.proc.wait(20) == 1
    assert "another gateway answers on" in second.log()
    with control(first) as c:
        assert c.request("status")["pid"] == first.proc.pid


def test_metrics_endpoint_serves_prometheus_text(gateway, upstreams, pki):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.support.gateway import free_port

    port = free_port()
    gw = gateway(app_config(upstreams("app"), metrics={"listen": f"127.0.0.1:{port}"}))
    for _ in range(2):
        greeting(gw.port, "app.example.test", pki.files.cert)
    with socket.create_connection(("127.0.0.1", gw.port)) as bad:
        bad.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not TLS
        bad.settimeout(10)
        bad.recv(10)

    def scrape() -> dict:
        body = _http_get(port, "/metrics")
        families = {f.name: f for f in text_string_to_metric_families(body)}
        return families

    def done(families):
        samples = families["tlsgate_connections"].samples
        closed = {
            (s.labels.get("endpoint"), s.labels.get("close_reason")): s.value
            for s in samples
            if s.name == "tlsgate_connections_total"
        }
        return closed.get(("app", "eof")) == 2 and closed.get(("", "not_tls")) == 1

    families = wait_for(lambda: _if(scrape(), done), what="metrics after traffic")
    by_name = {s.name: s for f in families.values() for s in f.samples if not s.labels}
    assert by_name["tlsgate_workers"].value == 2
    assert by_name["tlsgate_config_generation"].value == 1
    latency = families["tlsgate_clienthello_to_upstream_seconds"].samples
    assert [s.value for s in latency if s.name.endswith("_count")] == [2.0]
    duration = families["tlsgate_connection_duration_seconds"].samples
    assert [s.value for s in duration if s.name.endswith("_count")] == [3.0]
    failures = families["tlsgate_handshake_failures"].samples
    assert any(
        s.labels == {"alert": "none", "reason": "not_tls"} and s.value == 1 for s in failures
    )
    bytes_out = [
        s for s in families["tlsgate_bytes_out"].samples if s.labels.get("endpoint") == "app"
    ]
    assert bytes_out[0].value > 0
    assert _http_get(port, "/other", status=404)


def _http_get(port: int, path: str, status: int = 200) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split()[1] == str(status).encode(), head
    return body.decode()


def test_control_socket_answers_while_a_worker_is_stuck(gateway, upstreams):
    gw = gateway(app_config(upstreams("app")))
    stuck = gw.worker_pids()[0]
    os.kill(stuck, signal.SIGSTOP)
    try:
        with control(gw) as c:
            status = c.request("status")
            listing = c.request("connections.list")
        assert status["generation"] == 1
        assert listing["missing_workers"] == [stuck]
    finally:
        os.kill(stuck, signal.SIGCONT)
