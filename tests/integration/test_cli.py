"""The `tlsgate` command: check, config show, exit statuses, quick mode, the default config."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tomllib

import pytest

from tests.support.gateway import accepts, free_port, greeting, wait_for

pytestmark = pytest.mark.integration


def tlsgate(*args, cwd=None, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "tlsgate", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


BAD = """\
[gateway]
listen = ["127.0.0.1:99999"]
wokers = 2

[limits]
client_hello_timeout = "soon"

[[endpoints]]
name = "a"
url = "http://a.example.test"
[endpoints.upstream]
url = "127.0.0.1:9443"
proxy_protocol = 3
"""


def test_check_lists_every_problem_and_exits_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    result = tlsgate("check", "-c", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    for key in ("gateway.listen[0]", "gateway.wokers", "limits.client_hello_timeout", "endpoints[0].url", "endpoints[0].upstream.proxy_protocol"):
        assert any(line.startswith(f"{path}: {key}: ") for line in lines), (key, result.stderr)
    assert "did you mean 'workers'" in result.stderr
    assert "Traceback" not in result.stderr


def test_start_with_bad_config_starts_nothing(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    result = tlsgate("start", "-c", str(path))
    assert result.returncode == 2
    assert "nothing started" in result.stderr


def test_config_show_prints_effective_toml_with_defaults(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('[[endpoints]]\nname = "a"\nurl = "tls://A.example.test"\nupstream = { url = 9443 }\n')
    result = tlsgate("config", "show", "-c", str(path))
    assert result.returncode == 0, result.stderr
    shown = tomllib.loads(result.stdout)
    assert shown["limits"]["client_hello_timeout"] == "3s"
    assert shown["limits"]["max_handshake_message"] == "64KB"
    assert shown["endpoints"][0]["url"] == "tls://a.example.test"
    assert shown["endpoints"][0]["upstream"]["url"] == "127.0.0.1:9443"
    # What `config show` prints is itself a valid config.
    again = tmp_path / "again.toml"
    again.write_text(result.stdout)
    assert tlsgate("check", "-c", str(again)).returncode == 0


def test_port_in_use_exits_1_naming_the_address(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "g.toml"
        path.write_text(f'[gateway]\nlisten = ["127.0.0.1:{port}"]\nstate_dir = "{tmp_path}/s"\n')
        result = tlsgate("start", "-c", str(path))
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_quick_mode_forwards_one_endpoint(tmp_path, upstreams, pki):
    app = upstreams("app", proxy_protocol=True)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlsgate", "tls", app.address, "--url", "tls://app.example.test",
         "--listen", f"127.0.0.1:{port}", "--upstream-proxy-protocol", "2", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    try:
        first = proc.stdout.readline()
        assert first.strip() == f"Forwarding tls://app.example.test -> {app.address} (listening on 127.0.0.1:{port}; TLS ends at the upstream)"
        wait_for(lambda: accepts(port), what="quick mode listening")
        assert greeting(port, "app.example.test", pki.files.cert) == "hello from app"
        assert app.proxy_headers[0].version == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        proc.stdout.close()
    assert code == 0


def test_check_and_show_work_on_the_embedded_default():
    assert tlsgate("check").returncode == 0
    shown = tomllib.loads(tlsgate("config", "show").stdout)
    assert shown["gateway"]["listen"] == ["127.0.0.1:8443"]
    assert shown["endpoints"], "the default config documents at least one endpoint"
