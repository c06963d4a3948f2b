"""Reserved bits and reserved opcodes (Autobahn 3.x and 4.x)."""

from __future__ import annotations

import pytest

from tests.support.checks import assert_fails_with
from tests.support.liveserver import LiveServer
from tests.support.rawclient import Frame, Opcode

pytestmark = pytest.mark.functional

RSV1, RSV2, RSV3 = 4, 2, 1


@pytest.mark.parametrize("rsv", range(1, 8))
def test_reserved_bits_on_a_text_frame_close_with_1002(server: LiveServer, rsv: int) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.TEXT, b"reserved", rsv=rsv)
        assert_fails_with(ws, 1002)


@pytest.mark.parametrize("opcode", [Opcode.BINARY, Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_rsv1_on_other_frames_closes_with_1002(server: LiveServer, opcode: int) -> None:
    payload = b"\x03\xe8" if opcode == Opcode.CLOSE else b"reserved"
    with server.connect() as ws:
        ws.send_frame(opcode, payload, rsv=RSV1)
        assert_fails_with(ws, 1002)


def test_reserved_bits_after_a_valid_message_close_with_1002_after_its_echo(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_text("valid first")
        ws.send_frame(Opcode.TEXT, b"then reserved", rsv=RSV2)
        assert_fails_with(ws, 1002, before=(Frame(Opcode.TEXT, b"valid first"),))


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_reserved_opcode_closes_with_1002(server: LiveServer, opcode: int) -> None:
    with server.connect() as ws:
        ws.send_frame(opcode, b"reserved opcode")
        assert_fails_with(ws, 1002)


@pytest.mark.parametrize("opcode", [3, 11])
def test_reserved_opcode_with_empty_payload_closes_with_1002(server: LiveServer, opcode: int) -> None:
    with server.connect() as ws:
        ws.send_frame(opcode, b"")
        assert_fails_with(ws, 1002)


def test_rsv1_on_the_deflate_route_without_negotiation_closes_with_1002(server: LiveServer) -> None:
    # The handler offers compression, but this client did not ask for it.
    with server.connect("/ws/deflate/") as ws:
        assert not ws.deflate
        ws.send_frame(Opcode.TEXT, b"not compressed", rsv=RSV1)
        assert_fails_with(ws, 1002)


@pytest.mark.parametrize("rsv", [RSV2, RSV3])
def test_rsv2_and_rsv3_close_with_1002_even_with_deflate_negotiated(server: LiveServer, rsv: int) -> None:
    with server.connect("/ws/deflate/", deflate=True) as ws:
        assert ws.deflate
        ws.send_frame(Opcode.TEXT, b"reserved", rsv=rsv)
        assert_fails_with(ws, 1002)


def test_rsv1_on_a_continuation_frame_closes_with_1002_with_deflate_negotiated(server: LiveServer) -> None:
    # RFC 7692 6.1: only the first frame of a message carries the "compressed" bit.
    with server.connect("/ws/deflate/", deflate=True) as ws:
        ws.send_frame(Opcode.TEXT, b"first", fin=False)
        ws.send_frame(Opcode.CONTINUATION, b"second", rsv=RSV1)
        assert_fails_with(ws, 1002)


def test_rsv1_on_a_ping_closes_with_1002_with_deflate_negotiated(server: LiveServer) -> None:
    with server.connect("/ws/deflate/", deflate=True) as ws:
        ws.send_frame(Opcode.PING, b"compressed?", rsv=RSV1)
        assert_fails_with(ws, 1002)
