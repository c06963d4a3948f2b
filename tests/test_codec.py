"""What a handler's send() puts on the wire: the payload and opcode of each value, and the frame bytes.

``str`` is text as UTF-8, bytes-like is binary, anything else is compact msgspec JSON text; a
server frame is final, unmasked and uncompressed, with the shortest length encoding. The values a
handler sends end to end are tested in tests/test_websocket.py; these pin down the module.
"""

from __future__ import annotations

import pytest
from aiohttp import WSMsgType

from tests.support.rawclient import BINARY, CLOSE, TEXT, Frame, parse_frame
from wsframe.codec import build_close_frame, build_frame, encode_frame

# ------------------------------------------------------------ encode_frame


def test_a_str_is_a_text_payload_of_its_utf8_bytes() -> None:
    assert encode_frame("héllo") == (b"h\xc3\xa9llo", WSMsgType.TEXT)


def test_bytes_are_a_binary_payload_unchanged() -> None:
    assert encode_frame(b"\x00\xff") == (b"\x00\xff", WSMsgType.BINARY)


def test_a_bytearray_is_copied_so_changing_it_afterwards_leaves_the_payload_alone() -> None:
    data = bytearray(b"abc")
    payload, opcode = encode_frame(data)
    data[0] = ord("z")
    assert (payload, opcode) == (b"abc", WSMsgType.BINARY)


def test_a_memoryview_is_a_binary_payload_of_the_bytes_it_shows() -> None:
    assert encode_frame(memoryview(b"abcdef")[1:4]) == (b"bcd", WSMsgType.BINARY)


def test_any_other_value_is_compact_json_text() -> None:
    assert encode_frame({"a": [1, None], "b": True}) == (b'{"a":[1,null],"b":true}', WSMsgType.TEXT)


def test_json_keeps_non_ascii_text_as_utf8_instead_of_escaping_it() -> None:
    assert encode_frame({"name": "é"}) == ('{"name":"é"}'.encode(), WSMsgType.TEXT)


def test_a_value_json_cannot_encode_raises_type_error_naming_its_type() -> None:
    with pytest.raises(TypeError, match="type object is unsupported"):
        encode_frame(object())


# ------------------------------------------------------------- build_frame


def test_a_short_payload_has_a_two_byte_header_with_fin_set() -> None:
    assert build_frame(b"hi", TEXT) == b"\x81\x02hi"


def test_an_empty_payload_is_a_two_byte_frame() -> None:
    assert build_frame(b"", BINARY) == b"\x82\x00"


def test_125_bytes_is_the_longest_payload_with_a_7_bit_length() -> None:
    frame = build_frame(b"x" * 125, TEXT)
    assert (frame[:2], len(frame)) == (b"\x81\x7d", 2 + 125)


def test_126_bytes_take_a_16_bit_length() -> None:
    frame = build_frame(b"x" * 126, TEXT)
    assert (frame[:4], len(frame)) == (b"\x81\x7e\x00\x7e", 4 + 126)


def test_65535_bytes_is_the_longest_payload_with_a_16_bit_length() -> None:
    frame = build_frame(b"x" * 65535, BINARY)
    assert (frame[:4], len(frame)) == (b"\x82\x7e\xff\xff", 4 + 65535)


def test_65536_bytes_take_a_64_bit_length() -> None:
    frame = build_frame(b"x" * 65536, BINARY)
    assert (frame[:10], len(frame)) == (b"\x82\x7f" + (65536).to_bytes(8, "big"), 10 + 65536)


def test_a_built_frame_parses_back_as_one_final_unmasked_uncompressed_frame() -> None:
    payload = bytes(range(256)) * 300
    assert parse_frame(build_frame(payload, BINARY)) == Frame(BINARY, payload, fin=True, rsv=0, masked=False)


# ------------------------------------------------------- build_close_frame


def test_a_close_frame_carries_the_code_big_endian_then_the_reason() -> None:
    assert build_close_frame(1001, b"bye") == b"\x88\x05\x03\xe9bye"


def test_a_close_frame_without_a_reason_carries_only_the_code() -> None:
    assert parse_frame(build_close_frame(4000, b"")) == Frame(CLOSE, b"\x0f\xa0")


def test_a_close_frame_with_a_123_byte_reason_still_has_a_7_bit_length() -> None:
    frame = build_close_frame(1000, b"r" * 123)
    assert (frame[:2], parse_frame(frame).close_code, len(frame)) == (b"\x88\x7d", 1000, 2 + 125)
