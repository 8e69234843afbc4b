"""Ten reloads under a steady stream of new connections: no attempt fails, no open connection is cut."""

from __future__ import annotations

import threading

import pytest

from tests.integration.test_control import app_config, control
from tests.support.gateway import greeting, read_line, tls_connect

pytestmark = pytest.mark.integration

RELOADS = 10
LOAD_THREADS = 3


def test_ten_reloads_under_load_lose_nothing(gateway, upstreams, pki):
    ca = pki.files.cert
    app = upstreams("app")
    gw = gateway(app_config(app, gateway={"drain_timeout": "60s"}))
    done = threading.Event()
    failures: list[BaseException] = []
    completed = [0] * LOAD_THREADS

    def load(index: int) -> None:
        while not done.is_set():
            try:
                assert greeting(gw.port, "app.example.test", ca) == "hello from app"
                completed[index] += 1
            except BaseException as e:  # noqa: BLE001 - every failure is reported below
                failures.append(e)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    held = []
    per_reload = []
    try:
        with control(gw) as c:
            for n in range(RELOADS):
                # One more long-lived connection per generation, echoing across every later reload.
                conn = tls_connect(gw.port, "app.example.test", ca)
                assert read_line(conn) == "hello from app\n"
                conn.sendall(b"ECHO\n")
                held.append(conn)
                config = app_config(app, gateway=gw.config["gateway"], events=gw.config["events"])
                config["endpoints"][0]["description"] = f"reload {n + 1}"
                gw.write_config(config)
                before = sum(completed)
                result = c.request("reload")
                assert result == {"generation": n + 2, "ready": True, "warnings": []}
                per_reload.append(sum(completed) - before)
                for i, conn in enumerate(held):
                    message = f"held {i} after reload {n + 1}".encode()
                    conn.sendall(message)
                    assert _read_exactly(conn, len(message)) == message
            status = c.request("status")
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:3]
    assert sum(completed) >= RELOADS, completed  # the stream really ran through the reloads
    assert status["generation"] == RELOADS + 1
    serving = [w for w in status["workers"] if w["state"] == "serving"]
    assert len(serving) == gw.workers and {w["generation"] for w in serving} == {RELOADS + 1}
    draining = [w for w in status["workers"] if w["state"] == "draining"]
    assert draining, "old generations keep draining while their connections are open"
    for conn in held:
        conn.close()
    total = sum(completed) + len(held)
    events = gw.wait_events(total)
    reasons = {e["object"]["close_reason"] for e in events}
    assert reasons <= {"eof", "client_reset"}, reasons
    assert "reload failed" not in gw.log()


def _read_exactly(conn, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data
