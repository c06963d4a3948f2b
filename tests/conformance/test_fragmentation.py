"""Fragmentation (Autobahn 5.x): continuation frames, interleaved control frames, broken sequences."""

from __future__ import annotations

import pytest

from tests.support.checks import TOO_BIG, assert_fails_with
from tests.support.liveserver import LiveServer
from tests.support.rawclient import Ended, Frame, Opcode, RawWebsocket, close_frame
from wsframe.config import MIB

pytestmark = pytest.mark.functional


def _send_fragments(ws: RawWebsocket, opcode: int, pieces: list[bytes]) -> None:
    for index, piece in enumerate(pieces):
        ws.send_frame(opcode if index == 0 else Opcode.CONTINUATION, piece, fin=index == len(pieces) - 1)


@pytest.mark.parametrize(
    "pieces",
    [
        [b"frag", b"mented"],
        [b"one", b" two", b" three"],
        [b"", b"empty ", b"", b"pieces", b""],
        [bytes([c]) for c in b"one byte per frame"],
    ],
    ids=["two", "three", "with-empty", "per-byte"],
)
def test_text_split_across_continuation_frames_is_echoed_as_one_message(
    server: LiveServer, pieces: list[bytes]
) -> None:
    with server.connect() as ws:
        _send_fragments(ws, Opcode.TEXT, pieces)
        ws.send_close(1000)
        assert ws.read_until_closed() == ([Frame(Opcode.TEXT, b"".join(pieces)), close_frame(1000)], Ended.EOF)


def test_binary_split_across_continuation_frames_is_echoed_as_one_message(server: LiveServer) -> None:
    with server.connect() as ws:
        _send_fragments(ws, Opcode.BINARY, [b"\x00\x01", b"\xff", b"\x80\x81"])
        ws.send_close(1000)
        assert ws.read_until_closed() == ([Frame(Opcode.BINARY, b"\x00\x01\xff\x80\x81"), close_frame(1000)], Ended.EOF)


def test_ping_between_fragments_is_answered_before_the_message(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.TEXT, b"before ", fin=False)
        ws.send_frame(Opcode.PING, b"in between")
        ws.send_frame(Opcode.CONTINUATION, b"after")
        ws.send_close(1000)
        assert ws.read_until_closed() == (
            [Frame(Opcode.PONG, b"in between"), Frame(Opcode.TEXT, b"before after"), close_frame(1000)],
            Ended.EOF,
        )


def test_pings_and_pongs_between_every_fragment_are_handled(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.TEXT, b"a", fin=False)
        ws.send_frame(Opcode.PONG, b"ignored")
        ws.send_frame(Opcode.PING, b"1")
        ws.send_frame(Opcode.CONTINUATION, b"b", fin=False)
        ws.send_frame(Opcode.PING, b"2")
        ws.send_frame(Opcode.CONTINUATION, b"c")
        ws.send_close(1000)
        assert ws.read_until_closed() == (
            [Frame(Opcode.PONG, b"1"), Frame(Opcode.PONG, b"2"), Frame(Opcode.TEXT, b"abc"), close_frame(1000)],
            Ended.EOF,
        )


def test_close_between_fragments_is_answered_and_the_partial_message_dropped(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.TEXT, b"never finished", fin=False)
        ws.send_close(1000)
        assert ws.read_until_closed() == ([close_frame(1000)], Ended.EOF)


@pytest.mark.parametrize("fin", [True, False])
def test_continuation_without_a_started_message_closes_with_1002(server: LiveServer, fin: bool) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.CONTINUATION, b"orphan", fin=fin)
        assert_fails_with(ws, 1002)


def test_continuation_after_a_finished_message_closes_with_1002(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_text("complete")
        ws.send_frame(Opcode.CONTINUATION, b"orphan")
        assert_fails_with(ws, 1002, before=(Frame(Opcode.TEXT, b"complete"),))


@pytest.mark.parametrize("second_opcode", [Opcode.TEXT, Opcode.BINARY])
@pytest.mark.parametrize("second_fin", [True, False])
def test_new_message_before_the_previous_one_finished_closes_with_1002(
    server: LiveServer, second_opcode: int, second_fin: bool
) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.TEXT, b"unfinished", fin=False)
        ws.send_frame(second_opcode, b"interrupting", fin=second_fin)
        assert_fails_with(ws, 1002)


def test_new_message_after_an_empty_unfinished_fragment_closes_with_1002(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.TEXT, b"", fin=False)
        ws.send_frame(Opcode.TEXT, b"interrupting")
        assert_fails_with(ws, 1002)


def test_fragments_adding_up_to_more_than_1_mib_close_with_1009(server: LiveServer) -> None:
    half = b"h" * (MIB // 2)
    with server.connect() as ws:
        ws.send_frame(Opcode.BINARY, half, fin=False)
        ws.send_frame(Opcode.CONTINUATION, half, fin=False)
        ws.send_frame(Opcode.CONTINUATION, b"!")
        # Refused at the last frame's length field: its payload byte may be unread.
        assert_fails_with(ws, 1009, reason=TOO_BIG, ended=frozenset({Ended.EOF, Ended.RESET}))


def test_fragments_adding_up_to_exactly_1_mib_are_echoed(server: LiveServer) -> None:
    half = b"h" * (MIB // 2)
    with server.connect() as ws:
        ws.send_frame(Opcode.BINARY, half, fin=False)
        ws.send_frame(Opcode.CONTINUATION, half)
        ws.send_close(1000)
        assert ws.read_until_closed() == ([Frame(Opcode.BINARY, half + half), close_frame(1000)], Ended.EOF)
