"""Run a real `tlsgate start` process for integration tests, and talk to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import tomli_w


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Gateway:
    """A `tlsgate start -c FILE` subprocess with its config, log and events file."""

    def __init__(self, tmp_path: Path, config: dict, workers: int = 2, env: dict | None = None):
        self.dir = tmp_path
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = dict(config)
        gateway = {"listen": [f"127.0.0.1:{self.port}"], "workers": workers, "state_dir": str(tmp_path / "state")}
        gateway.update(config.get("gateway", {}))
        config["gateway"] = gateway
        config.setdefault("events", {"file": str(tmp_path / "events.jsonl")})
        self.workers = gateway["workers"]
        self.config = config
        self.config_path = tmp_path / "tlsgate.toml"
        self.write_config(config)
        self.events_path = Path(config["events"]["file"])
        self.log_path = tmp_path / "tlsgate.log"
        self.proc: subprocess.Popen | None = None
        self.env = {**os.environ, **(env or {})}

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(tomli_w.dumps(config))

    def start(self, wait: bool = True) -> Gateway:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tlsgate", "start", "-c", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            env=self.env,
        )
        if wait:
            self.wait_serving(self.workers)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, count: int, timeout: float = 20.0) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            return self.log().count(" serving (generation") >= count

        wait_for(ready, timeout, what=f"{count} workers serving\n")

    def worker_pids(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children() if c.status() != psutil.STATUS_ZOMBIE]

    def send_signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.proc is None:
            return 0
        try:
            if self.proc.poll() is not None:
                return self.proc.returncode
            self.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"gateway did not stop within {timeout}s:\n{self.log()}") from None
        finally:
            self._log.close()

    def events(self) -> list[dict]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines() if line]

    def wait_events(self, count: int, timeout: float = 15.0) -> list[dict]:
        def enough():
            events = self.events()
            return events if len(events) >= count else None

        return wait_for(enough, timeout, what=f"{count} events")


def client_context(ca_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    return ctx


def tls_connect(port: int, sni: str | None, ca_file: Path, host: str = "127.0.0.1", timeout: float = 10.0):
    """A TLS client connection through the gateway; returns the ssl socket after the greeting line."""
    ctx = client_context(ca_file)
    if sni is None:
        ctx.check_hostname = False
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def read_line(sock) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode()


def greeting(port: int, sni: str, ca_file: Path) -> str:
    """Connect, read the upstream's greeting, close cleanly."""
    with tls_connect(port, sni, ca_file) as s:
        line = read_line(s)
        s.sendall(b"ECHO\n")
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass
        return line.strip()
