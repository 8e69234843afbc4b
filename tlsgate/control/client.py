"""A blocking client for the control socket: the CLI's and the tests' way in.

`ControlClient` sends one request at a time and waits for its answer; the
dashboard uses its own asyncio client (tui/client.py) over the same protocol
module. Failing to reach the socket raises `GatewayNotRunning` (the CLI turns
it into one line and exit status 1); an error answer raises `ControlError`.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from typing import Any

from tlsgate.control.protocol import (
    FrameDecoder,
    ProtocolError,
    build_request,
    encode_message,
)
from tlsgate.errors import TlsgateError

_NOT_RUNNING_ERRNOS = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK})


class GatewayNotRunning(TlsgateError):
    """Nothing answers at the control socket path."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"no gateway is running at {path} ({reason})")
        self.path = path
        self.reason = reason


class ControlError(TlsgateError):
    """The gateway answered a request with an error."""

    def __init__(self, code: str, message: str, problems: list[dict] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = problems or []


class ControlClient:
    """One connection to a gateway's control socket."""

    def __init__(self, path: str | os.PathLike[str], timeout: float | None = 30.0):
        self.path = os.fspath(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder()
        self._inbox: list[dict] = []
        self._next_id = 1

    def __enter__(self) -> ControlClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            if e.errno in _NOT_RUNNING_ERRNOS:
                raise GatewayNotRunning(self.path, e.strerror or str(e)) from e
            if e.errno == errno.EACCES:
                raise GatewayNotRunning(
                    self.path, "permission denied: run as the gateway's user or root"
                ) from e
            raise
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(self, request_type: str, **args: Any) -> Any:
        """Send one request and return its result; `ControlError` for an error answer."""
        request_id = self._send(request_type, args)
        while True:
            message = self._receive()
            if message.get("id") != request_id or "event" in message:
                continue  # a stream item of an earlier subscription
            return _result_of(message)

    def subscribe(self, backlog: int = 100, follow: bool = False) -> Iterator[dict]:
        """The recent events (up to ``backlog``), then, with ``follow``, every new one as it comes."""
        request_id = self._send("events.subscribe", {"backlog": backlog, "follow": follow})
        while True:
            message = self._receive()
            if message.get("id") == request_id and "event" not in message:
                yield from _result_of(message)["backlog"]
                break
        if not follow:
            return
        assert self._sock is not None
        self._sock.settimeout(None)
        while True:
            message = self._receive()
            if message.get("id") == request_id and "event" in message:
                yield message["event"]

    def _send(self, request_type: str, args: dict[str, Any]) -> int:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        request_id = self._next_id
        self._next_id += 1
        try:
            self._sock.sendall(encode_message(build_request(request_id, request_type, args)))
        except (BrokenPipeError, ConnectionResetError) as e:
            raise GatewayNotRunning(self.path, "the gateway closed the connection") from e
        return request_id

    def _receive(self) -> dict:
        assert self._sock is not None
        while not self._inbox:
            try:
                data = self._sock.recv(1 << 20)
            except ConnectionResetError as e:
                raise GatewayNotRunning(self.path, "the gateway closed the connection") from e
            if not data:
                try:
                    self._decoder.check_eof()
                except ProtocolError as e:
                    raise GatewayNotRunning(self.path, str(e)) from e
                raise GatewayNotRunning(self.path, "the gateway closed the connection")
            self._inbox.extend(self._decoder.feed(data))
        return self._inbox.pop(0)


def _result_of(message: dict) -> Any:
    if message.get("ok"):
        return message.get("result")
    error = message.get("error") or {}
    raise ControlError(
        error.get("code", "error"), error.get("message", "unknown error"), error.get("problems")
    )
