"""Pings and pongs (Autobahn 2.x)."""

from __future__ import annotations

import pytest

from tests.support.checks import assert_closes_cleanly, assert_fails_with
from tests.support.liveserver import LiveServer
from tests.support.rawclient import Ended, Frame, Opcode, close_frame, encode_frame

pytestmark = pytest.mark.functional


@pytest.mark.parametrize(
    "payload",
    [b"", b"hello", bytes(range(256))[:125], b"\x00\xff\xfe binary \x80"],
    ids=["empty", "text", "125-bytes", "binary"],
)
def test_ping_is_answered_by_a_pong_with_the_same_payload(server: LiveServer, payload: bytes) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.PING, payload)
        ws.send_close(1000)
        assert ws.read_until_closed() == ([Frame(Opcode.PONG, payload), close_frame(1000)], Ended.EOF)


def test_ten_pings_are_answered_by_ten_pongs_in_order(server: LiveServer) -> None:
    with server.connect() as ws:
        for i in range(10):
            ws.send_frame(Opcode.PING, f"ping {i}".encode())
        ws.send_close(1000)
        frames, ended = ws.read_until_closed()
    assert frames == [*(Frame(Opcode.PONG, f"ping {i}".encode()) for i in range(10)), close_frame(1000)]
    assert ended is Ended.EOF


@pytest.mark.parametrize("payload", [b"", b"unsolicited"])
def test_unsolicited_pong_is_ignored(server: LiveServer, payload: bytes) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.PONG, payload)
        ws.send_text("after the pong")
        ws.send_close(1000)
        assert ws.read_until_closed() == ([Frame(Opcode.TEXT, b"after the pong"), close_frame(1000)], Ended.EOF)


def test_ping_payload_of_126_bytes_closes_with_1002(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.PING, b"p" * 126)
        assert_fails_with(ws, 1002)


def test_pong_payload_of_126_bytes_closes_with_1002(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.PONG, b"p" * 126)
        assert_fails_with(ws, 1002)


def test_ping_with_a_64_bit_length_over_125_closes_with_1002(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.PING, b"", length=2**20, length_form=127)
        assert_fails_with(ws, 1002)


def test_fragmented_ping_closes_with_1002(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.PING, b"part", fin=False)
        assert_fails_with(ws, 1002)


def test_ping_after_close_is_not_answered(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_close(1000)
        ws.send_frame(Opcode.PING, b"too late")
        frames, ended = ws.read_until_closed()
    assert frames == [close_frame(1000)]
    # The server never reads what came after the close, so the kernel may reset.
    assert ended in (Ended.EOF, Ended.RESET)


def test_ping_sent_one_byte_at_a_time_is_answered(server: LiveServer) -> None:
    with server.connect() as ws:
        for byte in encode_frame(Opcode.PING, b"chopped ping"):
            ws.send_raw(bytes([byte]))
        assert ws.recv_frame() == Frame(Opcode.PONG, b"chopped ping")
        assert_closes_cleanly(ws)
