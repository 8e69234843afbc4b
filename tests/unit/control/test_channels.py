"""The master's non-blocking framed sockets, driven by a real selector over a real socketpair."""

from __future__ import annotations

import selectors
import socket

from tlsgate.control.protocol import FrameDecoder, encode_message
from tlsgate.master.channels import FramedStream


def _pump(selector: selectors.BaseSelector, rounds: int = 50) -> None:
    for _ in range(rounds):
        for key, mask in selector.select(0):
            key.data(mask)


def test_messages_in_and_out_and_close_at_eof():
    selector = selectors.DefaultSelector()
    ours, peer = socket.socketpair()
    received, closed = [], []
    stream = FramedStream(ours, selector, lambda s, m: received.append(m), closed.append)
    peer.sendall(encode_message({"n": 1}) + encode_message({"n": 2})[:3])
    _pump(selector)
    assert received == [{"n": 1}]
    peer.sendall(encode_message({"n": 2})[3:])
    stream.send({"reply": True})
    _pump(selector)
    assert received == [{"n": 1}, {"n": 2}]
    assert FrameDecoder().feed(peer.recv(1000)) == [{"reply": True}]
    peer.close()
    _pump(selector)
    assert closed == [stream] and stream.closed
    selector.close()


def test_a_peer_that_does_not_read_is_dropped_not_waited_for():
    selector = selectors.DefaultSelector()
    ours, peer = socket.socketpair()
    closed = []
    stream = FramedStream(ours, selector, lambda s, m: None, closed.append, max_output=256 * 1024)
    for _ in range(2000):  # far more than the socket buffer plus max_output
        stream.send({"data": "x" * 1000})
        if stream.closed:
            break
    assert closed == [stream]
    peer.close()
    selector.close()


def test_close_after_flush_delivers_the_last_words():
    selector = selectors.DefaultSelector()
    ours, peer = socket.socketpair()
    closed = []
    stream = FramedStream(ours, selector, lambda s, m: None, closed.append)
    stream.send({"error": "bye"})
    stream.close_after_flush()
    _pump(selector)
    assert closed == [stream]
    data = b""
    while chunk := peer.recv(1000):
        data += chunk
    assert FrameDecoder().feed(data) == [{"error": "bye"}]
    peer.close()
    selector.close()
