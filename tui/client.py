"""The dashboard's one async client for the control socket.

One asyncio connection carries every request of the dashboard and its event
subscription: requests are matched to answers by ``id``, stream items of the
subscription go to the ``on_event`` callback. Uses the gateway's own protocol
module (tlsgate/control/protocol.py), so framing and limits are the same as
the CLI's. The app's poller (tui/poller.py) is the only caller; widgets never
see the client.

`GatewaySource` is the interface the poller needs; tests hand the app a fake
with canned answers instead (tests/tui/fakes.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from typing import Any, Protocol

from tlsgate.control.client import ControlError, GatewayNotRunning
from tlsgate.control.protocol import FrameDecoder, ProtocolError, build_request, encode_message

__all__ = ["GatewayClient", "GatewaySource", "ControlError", "GatewayNotRunning"]


class GatewaySource(Protocol):
    path: str

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def request(self, request_type: str, **args: Any) -> Any: ...

    async def subscribe(self, backlog: int, on_event: Callable[[dict], None]) -> list[dict]: ...


class GatewayClient:
    """Requests and one event stream over one Unix socket connection."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 10.0):
        self.path = os.fspath(path)
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._stream_id: int | None = None
        self._on_event: Callable[[dict], None] | None = None
        self._read_task: asyncio.Task | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        await self.close()
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path, limit=1 << 20), self.timeout
            )
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise GatewayNotRunning(self.path, e.strerror or str(e)) from e
        except PermissionError as e:
            raise GatewayNotRunning(self.path, "permission denied") from e
        except TimeoutError as e:
            raise GatewayNotRunning(self.path, "no answer") from e
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())

    async def close(self) -> None:
        if self._read_task is not None:
            self._read_task.cancel()
            try:
                await self._read_task
            except asyncio.CancelledError:
                pass  # we cancelled it
            self._read_task = None
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass  # the gateway already went away; nothing left to flush
            self._writer = None
        self._fail_pending("connection closed")

    async def request(self, request_type: str, **args: Any) -> Any:
        """The request's result; `ControlError` for an error answer, `GatewayNotRunning` if the connection drops."""
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._send(request_id, request_type, args)
        try:
            message = await asyncio.wait_for(future, self.timeout)
        finally:
            self._pending.pop(request_id, None)
        if message.get("ok"):
            return message.get("result")
        error = message.get("error") or {}
        raise ControlError(
            error.get("code", "error"), error.get("message", "error"), error.get("problems")
        )

    async def subscribe(self, backlog: int, on_event: Callable[[dict], None]) -> list[dict]:
        """Follow the gateway's events: returns the backlog; later events go to ``on_event``."""
        self._on_event = on_event
        request_id = next(self._ids)
        self._stream_id = request_id
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._send(request_id, "events.subscribe", {"backlog": backlog, "follow": True})
        message = await asyncio.wait_for(future, self.timeout)
        if not message.get("ok"):
            raise ControlError("error", str(message.get("error")))
        return message["result"]["backlog"]

    def _send(self, request_id: int, request_type: str, args: dict) -> None:
        if not self.connected:
            raise GatewayNotRunning(self.path, "not connected")
        assert self._writer is not None
        self._writer.write(encode_message(build_request(request_id, request_type, args)))

    async def _read_loop(self) -> None:
        assert self._reader is not None
        decoder = FrameDecoder()
        reason = "the gateway closed the connection"
        try:
            while True:
                data = await self._reader.read(1 << 20)
                if not data:
                    break
                for message in decoder.feed(data):
                    self._dispatch(message)
        except (ConnectionError, ProtocolError) as e:
            reason = str(e)
        if self._writer is not None:
            self._writer.close()
        self._fail_pending(reason)

    def _dispatch(self, message: dict) -> None:
        request_id = message.get("id")
        if "event" in message and request_id == self._stream_id:
            if self._on_event is not None:
                self._on_event(message["event"])
            return
        future = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if future is not None and not future.done():
            future.set_result(message)

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(GatewayNotRunning(self.path, reason))
