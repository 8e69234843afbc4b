"""The control protocol's framing: round trips, truncation, oversize, malformed payloads."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tlsgate.control.protocol import (
    MAX_REQUEST_SIZE,
    PROTOCOL_VERSION,
    FrameDecoder,
    FrameTooLarge,
    ProtocolError,
    RequestError,
    build_error,
    build_request,
    build_response,
    decode_payload,
    encode_message,
    parse_request,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
messages = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


@given(st.lists(messages, min_size=1, max_size=5), st.integers(1, 64))
def test_any_messages_survive_any_chunking(items, chunk):
    stream = b"".join(encode_message(m) for m in items)
    decoder = FrameDecoder()
    received = []
    for i in range(0, len(stream), chunk):
        received += decoder.feed(stream[i : i + chunk])
    assert received == items
    assert decoder.pending == 0
    decoder.check_eof()


def test_frame_layout_is_a_big_endian_length_then_json():
    frame = encode_message({"a": 1})
    assert frame == struct.pack("!I", 7) + b'{"a":1}'
    assert encode_message({"x": "é"})[4:] == '{"x":"é"}'.encode()


def test_every_truncation_yields_nothing_and_fails_at_eof():
    frame = encode_message(build_request(3, "status"))
    for cut in range(1, len(frame)):
        decoder = FrameDecoder()
        assert decoder.feed(frame[:cut]) == []
        assert decoder.pending == cut
        with pytest.raises(ProtocolError, match="middle of a frame"):
            decoder.check_eof()
        assert decoder.feed(frame[cut:]) == [build_request(3, "status")]


def test_oversized_length_is_refused_before_the_body_arrives_and_poisons_the_stream():
    decoder = FrameDecoder(max_size=MAX_REQUEST_SIZE)
    with pytest.raises(FrameTooLarge) as error:
        decoder.feed(struct.pack("!I", MAX_REQUEST_SIZE + 1))
    assert error.value.length == MAX_REQUEST_SIZE + 1 and error.value.limit == MAX_REQUEST_SIZE
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_message({"fine": True}))


def test_a_frame_at_the_limit_is_accepted():
    payload = b'"' + b"x" * 98 + b'"'
    decoder = FrameDecoder(max_size=100)
    with pytest.raises(ProtocolError, match="not an object"):
        decoder.feed(struct.pack("!I", 100) + payload)
    assert FrameDecoder(max_size=100).feed_frames(struct.pack("!I", 100) + payload) == [payload]


def test_encode_refuses_what_the_receiver_would_refuse():
    with pytest.raises(FrameTooLarge):
        encode_message({"data": "x" * 200}, max_size=100)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b"42", "JSON int, not an object"),
    ],
)
def test_malformed_payloads(payload, message):
    with pytest.raises(ProtocolError, match=message):
        decode_payload(payload)
    # feed_frames only frames: a receiver can answer the bad frame and read the next one.
    decoder = FrameDecoder()
    stream = struct.pack("!I", len(payload)) + payload + encode_message({"next": 1})
    frames = decoder.feed_frames(stream)
    assert frames[0] == payload and decode_payload(frames[1]) == {"next": 1}


def test_request_parsing():
    assert parse_request(build_request(7, "limits", {"x": 1})) == (7, "limits", {"x": 1})
    assert parse_request({"v": PROTOCOL_VERSION, "id": 1, "type": "status"}) == (1, "status", {})
    for bad, code in [
        ({"v": 1, "type": "status"}, "bad_request"),
        ({"v": 1, "id": True, "type": "status"}, "bad_request"),
        ({"v": 2, "id": 1, "type": "status"}, "unsupported_version"),
        ({"id": 1, "type": "status"}, "unsupported_version"),
        ({"v": 1, "id": 1, "type": ""}, "bad_request"),
        ({"v": 1, "id": 1, "type": "status", "args": []}, "bad_request"),
    ]:
        with pytest.raises(RequestError) as error:
            parse_request(bad)
        assert error.value.code == code, bad


def test_response_shapes():
    assert build_response(4, {"a": 1}) == {"v": 1, "id": 4, "ok": True, "result": {"a": 1}}
    assert build_error(4, "invalid", "no", [{"text": "x"}]) == {
        "v": 1, "id": 4, "ok": False, "error": {"code": "invalid", "message": "no", "problems": [{"text": "x"}]},
    }  # fmt: skip
    assert "problems" not in build_error(None, "bad_request", "no")["error"]
