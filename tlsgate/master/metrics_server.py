"""A tiny non-blocking HTTP/1.0 server for ``GET /metrics``, inside the master's loop.

Enabled by ``[metrics] listen``. Every request gets one response and the
connection is closed, which is all Prometheus needs. The body comes from a
callable (tlsgate/master/plane.py renders it with tlsgate/metrics.py), so the
numbers are current at the time of the scrape. A client that does not finish
its request within `REQUEST_TIMEOUT` seconds, or sends more than
`MAX_REQUEST_HEAD` bytes of head, is dropped.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Callable

from tlsgate.config.model import HostPort
from tlsgate.master.channels import accept_ready
from tlsgate.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT = 10.0


class _HttpClient:
    __slots__ = ("sock", "head", "output", "deadline")

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.head = bytearray()
        self.output = bytearray()
        self.deadline = deadline


class MetricsServer:
    def __init__(
        self, address: HostPort, selector: selectors.BaseSelector, render: Callable[[], str]
    ):
        self.address = address
        self.selector = selector
        self.render = render
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((address.host, address.port))
            self.sock.listen(64)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.clients: dict[int, _HttpClient] = {}
        selector.register(self.sock, selectors.EVENT_READ, self._accept)

    def fds(self) -> list[int]:
        return [self.sock.fileno(), *self.clients]

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        try:
            self.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()

    def expire(self, now: float) -> None:
        for client in list(self.clients.values()):
            if now >= client.deadline:
                self._drop(client)

    def next_deadline(self) -> float | None:
        return min((c.deadline for c in self.clients.values()), default=None)

    def _accept(self, mask: int) -> None:
        for sock in accept_ready(self.sock, "metrics"):
            sock.setblocking(False)
            client = _HttpClient(sock, time.monotonic() + REQUEST_TIMEOUT)
            self.clients[sock.fileno()] = client
            self.selector.register(
                sock, selectors.EVENT_READ, lambda m, c=client: self._ready(c, m)
            )

    def _ready(self, client: _HttpClient, mask: int) -> None:
        if mask & selectors.EVENT_READ and not client.output:
            self._read(client)
        elif mask & selectors.EVENT_WRITE:
            self._write(client)

    def _read(self, client: _HttpClient) -> None:
        try:
            data = client.sock.recv(MAX_REQUEST_HEAD)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.head += data
        end = client.head.find(b"\r\n\r\n")
        if end < 0:
            end = client.head.find(b"\n\n")
        if end < 0:
            if len(client.head) > MAX_REQUEST_HEAD:
                self._respond(client, 431, "text/plain", "request head too large\n")
            return
        request_line = bytes(client.head.split(b"\n", 1)[0]).decode("latin-1").strip()
        self._respond(client, *self._answer(request_line))

    def _answer(self, request_line: str) -> tuple[int, str, str]:
        parts = request_line.split()
        if len(parts) < 2:
            return 400, "text/plain", "bad request\n"
        method, target = parts[0], parts[1]
        path = target.split("?", 1)[0]
        if path not in ("/metrics", "/metrics/"):
            return 404, "text/plain", "not found; metrics are at /metrics\n"
        if method != "GET":
            return 405, "text/plain", "method not allowed\n"
        return 200, CONTENT_TYPE, self.render()

    def _respond(self, client: _HttpClient, status: int, content_type: str, body: str) -> None:
        reasons = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            431: "Request Header Fields Too Large",
        }
        payload = body.encode()
        head = (
            f"HTTP/1.0 {status} {reasons[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        client.output += head + payload
        self.selector.modify(
            client.sock, selectors.EVENT_WRITE, lambda m, c=client: self._ready(c, m)
        )
        self._write(client)

    def _write(self, client: _HttpClient) -> None:
        while client.output:
            try:
                sent = client.sock.send(client.output)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                break
            del client.output[:sent]
        self._drop(client)

    def _drop(self, client: _HttpClient) -> None:
        if self.clients.pop(client.sock.fileno(), None) is None:
            return
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
