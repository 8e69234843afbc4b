"""Structured values drawn from fuzzer bytes, deterministically and without atheris.

atheris' FuzzedDataProvider would do, but then a stored crash could only be
replayed where atheris is installed; this small reader lets CI replay the
structured targets (PROXY round trip, config dicts) from the same bytes. Running
out of bytes is not an error: every draw then returns its smallest value, so any
input, however short, is a complete test case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class ByteSource:
    """Consumes ``data`` from the front; each draw takes only the bytes it needs."""

    def __init__(self, data: bytes):
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, count: int) -> bytes:
        chunk = self._data[self._pos : self._pos + count]
        self._pos += len(chunk)
        return chunk

    def uint(self, byte_count: int) -> int:
        return int.from_bytes(self.take(byte_count).ljust(byte_count, b"\0"), "big")

    def int_in(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``, using as few bytes as the range needs."""
        span = high - low
        if span <= 0:
            return low
        return low + self.uint((span.bit_length() + 7) // 8) % (span + 1)

    def boolean(self) -> bool:
        return bool(self.uint(1) & 1)

    def pick(self, options: Sequence[T]) -> T:
        return options[self.int_in(0, len(options) - 1)]

    def blob(self, max_length: int) -> bytes:
        return self.take(self.int_in(0, max_length))

    def text(self, max_length: int) -> str:
        """Text from UTF-8 bytes; undecodable bytes become U+FFFD (never a surrogate)."""
        return self.blob(max_length).decode("utf-8", "replace")
