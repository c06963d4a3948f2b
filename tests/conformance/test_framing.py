"""Framing (Autobahn 1.x, 9.x sizes): payload length encodings, size limit, masking, chopped frames."""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.support.checks import TOO_BIG, assert_closes_cleanly, assert_fails_with
from tests.support.liveserver import LiveServer
from tests.support.rawclient import (
    Ended,
    Frame,
    Opcode,
    RawWebsocket,
    close_frame,
    encode_frame,
    handshake_request,
    open_handshake,
)
from wsframe.config import MIB

pytestmark = pytest.mark.functional

# 125/126/127 cross the 7-bit -> 16-bit length encoding; 65535/65536 the 16-bit -> 64-bit one.
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 64 * 1024 + 1, MIB - 1, MIB]


def _payload(size: int) -> bytes:
    return bytes(i % 251 for i in range(size)) if size < 4096 else (b"abcdefghij" * (size // 10 + 1))[:size]


@pytest.mark.parametrize("size", SIZES)
def test_text_message_of_each_length_encoding_is_echoed(server: LiveServer, size: int) -> None:
    payload = (b"text " * (size // 5 + 1))[:size]
    with server.connect() as ws:
        ws.send_frame(Opcode.TEXT, payload)
        ws.send_close(1000)
        assert ws.read_until_closed() == ([Frame(Opcode.TEXT, payload), close_frame(1000)], Ended.EOF)


@pytest.mark.parametrize("size", SIZES)
def test_binary_message_of_each_length_encoding_is_echoed(server: LiveServer, size: int) -> None:
    payload = _payload(size)
    with server.connect() as ws:
        ws.send_frame(Opcode.BINARY, payload)
        ws.send_close(1000)
        assert ws.read_until_closed() == ([Frame(Opcode.BINARY, payload), close_frame(1000)], Ended.EOF)


def test_message_one_byte_over_the_1_mib_default_closes_with_1009(server: LiveServer) -> None:
    with server.connect() as ws:
        # The server refuses at the length field and stops reading, so the
        # rest of our payload is unread when it closes: the kernel may reset,
        # even while we are still sending it.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            ws.send_frame(Opcode.BINARY, _payload(MIB + 1))
        assert_fails_with(ws, 1009, reason=TOO_BIG, ended=frozenset({Ended.EOF, Ended.RESET}))


def test_declared_length_over_the_limit_closes_with_1009_before_the_payload_arrives(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.BINARY, b"", length=MIB + 1)
        assert_fails_with(ws, 1009, reason=TOO_BIG)


def test_declared_64_bit_length_with_the_top_bit_set_closes_with_1009(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.BINARY, b"", length=2**63, length_form=127)
        assert_fails_with(ws, 1009, reason=TOO_BIG)


@pytest.mark.parametrize("form", [126, 127])
def test_non_minimal_length_encoding_is_accepted(server: LiveServer, form: int) -> None:
    # RFC 6455 5.2 asks senders for the minimal encoding but gives receivers no
    # duty to fail on a longer one; aiohttp (like Autobahn's expectations) accepts it.
    with server.connect() as ws:
        ws.send_frame(Opcode.TEXT, b"short", length_form=form)
        ws.send_close(1000)
        assert ws.read_until_closed() == ([Frame(Opcode.TEXT, b"short"), close_frame(1000)], Ended.EOF)


def test_frame_sent_one_byte_at_a_time_is_echoed(server: LiveServer) -> None:
    with server.connect() as ws:
        for byte in encode_frame(Opcode.TEXT, b"chopped into single bytes"):
            ws.send_raw(bytes([byte]))
            time.sleep(0.001)
        assert ws.recv_message() == Frame(Opcode.TEXT, b"chopped into single bytes")
        assert_closes_cleanly(ws)


def test_many_frames_in_one_write_are_echoed_in_order(server: LiveServer) -> None:
    messages = [f"message {i}".encode() for i in range(100)]
    with server.connect() as ws:
        ws.send_raw(b"".join(encode_frame(Opcode.TEXT, m) for m in messages) + encode_frame(Opcode.CLOSE, b"\x03\xe8"))
        frames, ended = ws.read_until_closed()
    assert frames == [*(Frame(Opcode.TEXT, m) for m in messages), close_frame(1000)]
    assert ended is Ended.EOF


def test_unmasked_client_frame_closes_with_1002(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.TEXT, b"not masked", mask=False)
        assert_fails_with(ws, 1002)


def open_with_frames_in_the_request(server: LiveServer, frames: bytes) -> RawWebsocket:
    """An upgrade to /ws/echo/ sent in one write with *frames* right behind it, before any 101."""
    raw = handshake_request("/ws/echo/", f"{server.host}:{server.port}") + frames
    ws = open_handshake(server.host, server.port, raw)
    assert isinstance(ws, RawWebsocket), ws
    return ws


def test_an_unmasked_frame_sent_with_the_upgrade_request_closes_with_1002(server: LiveServer) -> None:
    with open_with_frames_in_the_request(server, encode_frame(Opcode.TEXT, b"early", mask=False)) as ws:
        assert_fails_with(ws, 1002)


def test_a_frame_sent_with_the_upgrade_request_is_echoed(server: LiveServer) -> None:
    with open_with_frames_in_the_request(server, encode_frame(Opcode.TEXT, b"early")) as ws:
        assert ws.recv_frame() == Frame(Opcode.TEXT, b"early")
        assert_closes_cleanly(ws)


def test_server_frames_are_never_masked(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.TEXT, b"x" * 300)
        frame = ws.recv_frame()
        assert (frame.masked, frame.rsv, frame.fin) == (False, 0, True)
        assert_closes_cleanly(ws)
