"""The IPC wire format without sockets: frames, headers, and the acknowledgement parser fed in pieces."""

from __future__ import annotations

import msgspec
import pytest

from wsframe.backends.base import Envelope, decode_envelope, encode_envelope
from wsframe.backends.ipc._wire import (
    ACK_BAD,
    ACK_OK,
    HEADER,
    MAX_FRAME,
    AckReader,
    Control,
    FrameTooLarge,
    control_frame,
    decode_control,
    decode_members,
    envelope_frame,
    read_header,
    reply_frame,
)


def test_an_envelope_frame_is_its_length_then_the_envelope() -> None:
    data = encode_envelope(Envelope("send", "deadbeef" + "0" * 24, payload=b"hi"))
    frame = envelope_frame(data)
    assert read_header(frame[: HEADER.size]) == (len(data), False)
    assert decode_envelope(frame[HEADER.size :]) == Envelope("send", "deadbeef" + "0" * 24, payload=b"hi")


def test_a_control_frame_is_marked_in_its_header_and_decodes_back() -> None:
    frame = control_frame(Control("members", group="room:1"))
    size, control = read_header(frame[: HEADER.size])
    assert control is True
    assert size == len(frame) - HEADER.size
    assert decode_control(frame[HEADER.size :]) == Control("members", group="room:1")


def test_a_header_announcing_more_than_the_limit_raises_frame_too_large() -> None:
    with pytest.raises(FrameTooLarge) as caught:
        read_header(HEADER.pack(MAX_FRAME + 1))
    assert caught.value.size == MAX_FRAME + 1


def test_garbage_in_a_control_body_raises_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_control(b"\xc1")


def test_one_byte_acknowledgements_become_taken_or_refused_in_order() -> None:
    assert AckReader().feed(ACK_OK + ACK_BAD + ACK_OK) == [True, False, True]


def test_a_reply_becomes_its_body_between_acknowledgements() -> None:
    reply = reply_frame(["deadbeef" + "1" * 24])
    answers = AckReader().feed(ACK_OK + reply + ACK_BAD)
    assert len(answers) == 3
    assert answers[0] is True
    assert isinstance(answers[1], bytes)
    assert decode_members(answers[1]) == ["deadbeef" + "1" * 24]
    assert answers[2] is False


def test_a_reply_split_byte_by_byte_is_answered_once_its_last_byte_arrives() -> None:
    reply = reply_frame(["deadbeef" + "2" * 24, "deadbeef" + "3" * 24])
    acks = AckReader()
    answers = [answer for byte in reply[:-1] for answer in acks.feed(bytes((byte,)))]
    assert answers == []
    [answer] = acks.feed(reply[-1:])
    assert isinstance(answer, bytes)
    assert decode_members(answer) == ["deadbeef" + "2" * 24, "deadbeef" + "3" * 24]


def body_of(reply: bytes) -> bytes:
    """The body a reply frame carries: after its marker byte and header."""
    return reply[1 + HEADER.size :]


def test_acknowledgements_after_a_split_reply_follow_it() -> None:
    reply = reply_frame([])
    acks = AckReader()
    assert acks.feed(ACK_OK + reply[:3]) == [True]
    assert acks.feed(reply[3:] + ACK_OK) == [body_of(reply), True]


def test_a_reply_announcing_more_than_the_limit_stops_the_reader_after_the_answers_before_it() -> None:
    acks = AckReader()
    oversized = bytes((2,)) + HEADER.pack(MAX_FRAME + 1)
    assert acks.feed(ACK_OK + oversized + ACK_OK) == [True]
    assert acks.too_large == MAX_FRAME + 1
    assert acks.feed(ACK_OK) == []
