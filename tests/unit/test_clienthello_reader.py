"""`ClientHelloReader` does linear work however the hello is cut into records and reads."""

from __future__ import annotations

from tests.unit.test_clienthello import load_capture, refragment_records
from tlsgate.proto.clienthello import ClientHelloReader, _Walk, parse_client_hello


class CountingWalk(_Walk):
    """Counts every committed record: a re-walk from the start would count records again."""

    __slots__ = ("_pos", "moves")

    def __init__(self):
        self.moves = 0
        super().__init__()

    @property
    def pos(self):
        return self._pos

    @pos.setter
    def pos(self, value):
        self.moves += 1
        self._pos = value


def one_byte_records() -> bytes:
    """A real captured hello (python ssl, TLS 1.3) re-cut into 1-byte records of 6 bytes each."""
    return refragment_records(load_capture("python_tls13_sni_alpn"), 1)


def test_each_record_is_walked_once_when_fed_one_record_per_read():
    wire = one_byte_records()
    reader = ClientHelloReader()
    walk = CountingWalk()
    reader._walk = walk
    result = None
    for i in range(0, len(wire), 6):
        result = reader.feed(wire[i : i + 6])
    records = len(wire) // 6
    assert result == parse_client_hello(wire)
    # One move per record (plus the initial position): quadratic re-walking would need
    # records * (records + 1) / 2 moves.
    assert walk.moves <= records + 2, (walk.moves, records)


def test_feeding_byte_by_byte_gives_the_same_hello():
    wire = one_byte_records()
    reader = ClientHelloReader()
    results = [reader.feed(wire[i : i + 1]) for i in range(len(wire))]
    assert all(r is None for r in results[:-1])
    assert results[-1] == parse_client_hello(wire)
    assert bytes(reader.buffer) == wire
