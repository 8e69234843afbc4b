"""The control protocol's framing and message shapes, shared by every party.

Used by the master's control socket (tlsgate/master/control.py), the master's
per-worker channels (tlsgate/master/channels.py, tlsgate/worker/reporter.py),
the blocking client (tlsgate/control/client.py, for the CLI and tests) and the
dashboard's async client (tui/client.py). Pure: no sockets here, so every
party drives the same `FrameDecoder` from its own I/O loop.

A frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON
holding one object::

    +--------+--------+--------+--------+------------------------------+
    |        payload length (uint32, network order)  | payload (JSON)  |
    +--------+--------+--------+--------+------------------------------+

Messages on the control socket (full description: docs/control-protocol.md):

- request   ``{"v": 1, "id": 7, "type": "status", "args": {}}``
- response  ``{"v": 1, "id": 7, "ok": true, "result": {...}}``
            ``{"v": 1, "id": 7, "ok": false, "error": {"code": ..., "message": ..., "problems": [...]}}``
- stream    ``{"v": 1, "id": 7, "event": {...}}``  (after an ``events.subscribe`` with ``follow``)

A length above the receiver's limit, a truncated frame, or a payload that is not
a JSON object raises `ProtocolError`; the receiver answers with an error when it
still can and never trusts the rest of that stream.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from tlsgate.errors import ProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_MESSAGE_SIZE",
    "MAX_REQUEST_SIZE",
    "ProtocolError",
    "FrameTooLarge",
    "FrameDecoder",
    "RequestError",
    "encode_message",
    "decode_payload",
    "build_request",
    "build_response",
    "build_error",
    "build_stream_item",
    "parse_request",
]

PROTOCOL_VERSION = 1
"""Bumped only for incompatible changes; new request types and new fields are compatible."""
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
"""Largest payload any party accepts: a ``connections.list`` of 100,000 connections fits."""
MAX_REQUEST_SIZE = 1024 * 1024
"""Largest request the gateway reads from a control client; requests are small."""

_HEADER = struct.Struct("!I")
HEADER_SIZE = _HEADER.size


class FrameTooLarge(ProtocolError):
    """The length prefix announces more than the receiver accepts."""

    def __init__(self, length: int, limit: int):
        super().__init__(f"message of {length} bytes exceeds the limit of {limit} bytes")
        self.length = length
        self.limit = limit


class RequestError(Exception):
    """A request the gateway will not carry out; becomes an error response."""

    def __init__(self, code: str, message: str, problems: list[dict] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = problems or []


def encode_message(message: dict[str, Any], max_size: int = MAX_MESSAGE_SIZE) -> bytes:
    """One frame for ``message``; `FrameTooLarge` if its JSON exceeds ``max_size``."""
    payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(payload) > max_size:
        raise FrameTooLarge(len(payload), max_size)
    return _HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes | memoryview) -> dict[str, Any]:
    """The object in one frame's payload; `ProtocolError` if it is not a JSON object."""
    try:
        message = json.loads(bytes(payload))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"payload is not UTF-8 JSON: {e}") from e
    if not isinstance(message, dict):
        raise ProtocolError(f"payload is a JSON {type(message).__name__}, not an object")
    return message


class FrameDecoder:
    """Turns a byte stream into frames; feed it whatever the socket returned.

    `feed_frames` only checks framing, so a receiver can answer a bad payload
    and go on with the next frame; `feed` also decodes and is strict. After a
    `FrameTooLarge` the decoder is poisoned (the stream cannot be
    resynchronised): every later call raises it again.
    """

    __slots__ = ("max_size", "_buffer", "_error")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE):
        self.max_size = max_size
        self._buffer = bytearray()
        self._error: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back; non-zero at EOF means truncation."""
        return len(self._buffer)

    def feed_frames(self, data: bytes) -> list[bytes]:
        """The payload of every frame completed by ``data``, oldest first."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        payloads: list[bytes] = []
        offset = 0
        while len(buffer) - offset >= HEADER_SIZE:
            (length,) = _HEADER.unpack_from(buffer, offset)
            if length > self.max_size:
                self._error = FrameTooLarge(length, self.max_size)
                del buffer[:]
                raise self._error
            end = offset + HEADER_SIZE + length
            if len(buffer) < end:
                break
            payloads.append(bytes(buffer[offset + HEADER_SIZE : end]))
            offset = end
        del buffer[:offset]
        return payloads

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Every complete message so far; `ProtocolError` for bad framing or a bad payload."""
        return [decode_payload(payload) for payload in self.feed_frames(data)]

    def check_eof(self) -> None:
        """Call at EOF: `ProtocolError` if the peer stopped in the middle of a frame."""
        if self._buffer:
            raise ProtocolError(
                f"connection closed in the middle of a frame ({len(self._buffer)} bytes held)"
            )


def build_request(request_id: int, request_type: str, args: dict[str, Any] | None = None) -> dict:
    return {"v": PROTOCOL_VERSION, "id": request_id, "type": request_type, "args": args or {}}


def build_response(request_id: int | None, result: Any) -> dict:
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result}


def build_error(
    request_id: int | None, code: str, message: str, problems: list[dict] | None = None
) -> dict:
    error: dict[str, Any] = {"code": code, "message": message}
    if problems:
        error["problems"] = problems
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": error}


def build_stream_item(request_id: int, event: dict) -> dict:
    return {"v": PROTOCOL_VERSION, "id": request_id, "event": event}


def parse_request(message: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """``(id, type, args)`` of a request; `RequestError` naming what is wrong with it."""
    request_id = message.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise RequestError("bad_request", 'a request needs an integer "id"')
    version = message.get("v")
    if version != PROTOCOL_VERSION:
        raise RequestError(
            "unsupported_version",
            f"protocol version {version!r} is not supported; this gateway speaks version {PROTOCOL_VERSION}",
        )
    request_type = message.get("type")
    if not isinstance(request_type, str) or not request_type:
        raise RequestError("bad_request", 'a request needs a string "type"')
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise RequestError("bad_request", '"args" must be an object')
    return request_id, request_type, args
