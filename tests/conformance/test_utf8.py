"""UTF-8 handling (Autobahn 6.x): text must be valid UTF-8, checked across fragments."""

from __future__ import annotations

import pytest

from tests.support.checks import assert_fails_with
from tests.support.liveserver import LiveServer
from tests.support.rawclient import Ended, Frame, Opcode, close_frame

pytestmark = pytest.mark.functional

INVALID = {
    "lone-continuation-byte": b"\x80",
    "ff-byte": b"hello \xff",
    "overlong-slash": b"\xc0\xaf",
    "overlong-nul": b"\xe0\x80\x80",
    "utf16-surrogate": b"\xed\xa0\x80",
    "above-u10ffff": b"\xf4\x90\x80\x80",
    "truncated-4-byte": b"\xf0\x9f\x98",
    "truncated-at-end": b"valid then \xe2\x82",
}

VALID = {
    "ascii": "plain",
    "two-byte": "héllo",
    "three-byte": "€ and 한국어",
    "four-byte": "emoji 😀 and 𝄞",
    "nul": "a\x00b",
    "max-code-point": "\U0010ffff",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid_utf8_text_is_echoed_byte_for_byte(server: LiveServer, text: str) -> None:
    with server.connect() as ws:
        ws.send_text(text)
        ws.send_close(1000)
        assert ws.read_until_closed() == ([Frame(Opcode.TEXT, text.encode()), close_frame(1000)], Ended.EOF)


@pytest.mark.parametrize("payload", INVALID.values(), ids=INVALID.keys())
def test_invalid_utf8_in_a_text_frame_closes_with_1007(server: LiveServer, payload: bytes) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.TEXT, payload)
        assert_fails_with(ws, 1007)


@pytest.mark.parametrize("payload", INVALID.values(), ids=INVALID.keys())
def test_invalid_utf8_in_a_binary_frame_is_echoed(server: LiveServer, payload: bytes) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.BINARY, payload)
        ws.send_close(1000)
        assert ws.read_until_closed() == ([Frame(Opcode.BINARY, payload), close_frame(1000)], Ended.EOF)


def test_valid_character_split_across_fragments_is_echoed(server: LiveServer) -> None:
    encoded = "κόσμε 😀".encode()
    with server.connect() as ws:
        # Every byte its own frame, so each multi-byte character is split.
        for index, byte in enumerate(encoded):
            opcode = Opcode.TEXT if index == 0 else Opcode.CONTINUATION
            ws.send_frame(opcode, bytes([byte]), fin=index == len(encoded) - 1)
        ws.send_close(1000)
        assert ws.read_until_closed() == ([Frame(Opcode.TEXT, encoded), close_frame(1000)], Ended.EOF)


@pytest.mark.parametrize(
    "pieces",
    [
        [b"valid ", b"\xff", b" rest"],
        [b"\xed", b"\xa0\x80"],
        [b"ok \xf0\x9f", b"\x98"],
    ],
    ids=["invalid-byte-in-middle-fragment", "surrogate-split", "truncated-in-last-fragment"],
)
def test_invalid_utf8_split_across_fragments_closes_with_1007(server: LiveServer, pieces: list[bytes]) -> None:
    with server.connect() as ws:
        for index, piece in enumerate(pieces):
            opcode = Opcode.TEXT if index == 0 else Opcode.CONTINUATION
            ws.send_frame(opcode, piece, fin=index == len(pieces) - 1)
        assert_fails_with(ws, 1007)


def test_invalid_utf8_after_a_valid_message_closes_with_1007_after_its_echo(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_text("fine")
        ws.send_frame(Opcode.TEXT, b"\xff")
        assert_fails_with(ws, 1007, before=(Frame(Opcode.TEXT, b"fine"),))
