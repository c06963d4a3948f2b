"""permessage-deflate on a handler with ``compression = True`` (Autobahn 12.x/13.x), and compression bombs."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.checks import TOO_BIG, assert_closes_cleanly, assert_closes_with, assert_fails_with
from tests.support.liveserver import LiveServer
from tests.support.rawclient import Ended, Opcode, RawWebsocket, close_frame, deflate_message
from wsframe.config import MIB

pytestmark = pytest.mark.functional

RSV1 = 4


@pytest.fixture(scope="module")
def app_deflate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The same routes served by ``create_app(compression=True)``."""
    live = LiveServer(
        Path(tmp_path_factory.mktemp("deflate-app")) / "server.log", "tests.apps.conformance_app:deflate_app"
    )
    live.wait_ready()
    yield live
    assert live.stop() == 0, live.log_path.read_text(errors="replace")


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def _zero_bomb(mebibytes: int) -> bytes:
    """A raw DEFLATE stream of *mebibytes* MiB of zeros, about 1 KiB per MiB.

    A full flush resets the compressor, so each MiB compresses to the same
    bytes and the stream is one block repeated: cheap to build at any size.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(b"\0" * MIB) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * mebibytes


def _inflated(ws: RawWebsocket) -> tuple[list[tuple[int, int, bytes]], Ended]:
    """Every frame until the end as (opcode, rsv, payload inflated when compressed)."""
    frames, ended = ws.read_until_closed()
    return [(f.opcode, f.rsv, ws.inflate(f)) for f in frames], ended


def test_handler_with_compression_negotiates_permessage_deflate(server: LiveServer) -> None:
    with server.connect("/ws/deflate/", deflate=True) as ws:
        assert ws.response.headers["sec-websocket-extensions"] == "permessage-deflate"
        ws.send_close(1000)
        assert ws.read_until_closed() == ([close_frame(1000)], Ended.EOF)


def test_handler_without_compression_does_not_negotiate_permessage_deflate(server: LiveServer) -> None:
    with server.connect("/ws/echo/", deflate=True) as ws:
        assert "sec-websocket-extensions" not in ws.response.headers
        ws.send_frame(Opcode.TEXT, deflate_message(b"compressed anyway"), rsv=RSV1)
        assert_fails_with(ws, 1002)


def test_compressed_messages_are_echoed_compressed_with_context_takeover(server: LiveServer) -> None:
    with server.connect("/ws/deflate/", deflate=True) as ws:
        for text in (b"hello", b"hello", b"hello again"):
            ws.send_deflated(Opcode.TEXT, text)
        ws.send_close(1000)
        assert _inflated(ws) == (
            [
                (Opcode.TEXT, RSV1, b"hello"),
                (Opcode.TEXT, RSV1, b"hello"),
                (Opcode.TEXT, RSV1, b"hello again"),
                (Opcode.CLOSE, 0, b"\x03\xe8"),
            ],
            Ended.EOF,
        )


def test_uncompressed_message_on_a_deflate_connection_is_echoed(server: LiveServer) -> None:
    # RFC 7692 6: compression is per message; RSV1 clear means "not compressed".
    with server.connect("/ws/deflate/", deflate=True) as ws:
        ws.send_frame(Opcode.BINARY, b"\x00plain\xff")
        ws.send_close(1000)
        assert _inflated(ws) == ([(Opcode.BINARY, RSV1, b"\x00plain\xff"), (Opcode.CLOSE, 0, b"\x03\xe8")], Ended.EOF)


def test_compressed_message_split_across_continuation_frames_is_echoed(server: LiveServer) -> None:
    compressed = deflate_message(b"fragmented and compressed " * 50)
    third = len(compressed) // 3
    with server.connect("/ws/deflate/", deflate=True) as ws:
        ws.send_frame(Opcode.TEXT, compressed[:third], rsv=RSV1, fin=False)
        ws.send_frame(Opcode.CONTINUATION, compressed[third : 2 * third], fin=False)
        ws.send_frame(Opcode.CONTINUATION, compressed[2 * third :])
        ws.send_close(1000)
        assert _inflated(ws) == (
            [(Opcode.TEXT, RSV1, b"fragmented and compressed " * 50), (Opcode.CLOSE, 0, b"\x03\xe8")],
            Ended.EOF,
        )


def test_compressed_message_inflating_to_exactly_1_mib_is_echoed(server: LiveServer) -> None:
    with server.connect("/ws/deflate/", deflate=True) as ws:
        ws.send_deflated(Opcode.BINARY, b"a" * MIB)
        ws.send_close(1000)
        assert _inflated(ws) == ([(Opcode.BINARY, RSV1, b"a" * MIB), (Opcode.CLOSE, 0, b"\x03\xe8")], Ended.EOF)


def test_compressed_message_inflating_past_1_mib_closes_with_1009(server: LiveServer) -> None:
    with server.connect("/ws/deflate/", deflate=True) as ws:
        ws.send_deflated(Opcode.BINARY, b"a" * (MIB + 2))
        assert_fails_with(ws, 1009, reason=TOO_BIG)


def test_compressed_message_inflating_to_1_mib_plus_one_byte_closes_with_1009(server: LiveServer) -> None:
    with server.connect("/ws/deflate/", deflate=True) as ws:
        ws.send_deflated(Opcode.BINARY, b"a" * (MIB + 1))
        assert_closes_with(ws, 1009, reason=TOO_BIG)


def test_compression_bomb_closes_with_1009_without_inflating_it(server: LiveServer) -> None:
    bomb = _zero_bomb(512)  # 512 MiB of zeros in about half a MiB, under the frame size limit
    assert len(bomb) < MIB
    peak_before = _peak_rss_kib(server.process.pid)
    with server.connect("/ws/deflate/", deflate=True) as ws:
        ws.send_frame(Opcode.BINARY, bomb, rsv=RSV1)
        assert_fails_with(ws, 1009, reason=TOO_BIG, ended=frozenset({Ended.EOF, Ended.RESET}))
    grown_mib = (_peak_rss_kib(server.process.pid) - peak_before) / 1024
    # Inflation stops one byte past the limit: the peak grows by a few MiB, not by 512.
    assert grown_mib < 64


def test_compression_bomb_split_across_fragments_closes_with_1009(server: LiveServer) -> None:
    bomb = _zero_bomb(64)
    with server.connect("/ws/deflate/", deflate=True) as ws:
        pieces = [bomb[i : i + 4096] for i in range(0, len(bomb), 4096)]
        for index, piece in enumerate(pieces):
            opcode = Opcode.BINARY if index == 0 else Opcode.CONTINUATION
            ws.send_frame(opcode, piece, rsv=RSV1 if index == 0 else 0, fin=index == len(pieces) - 1)
        assert_fails_with(ws, 1009, reason=TOO_BIG, ended=frozenset({Ended.EOF, Ended.RESET}))


def test_bomb_after_valid_compressed_messages_closes_with_1009_after_their_echoes(server: LiveServer) -> None:
    with server.connect("/ws/deflate/", deflate=True) as ws:
        ws.send_deflated(Opcode.TEXT, b"first")
        assert ws.recv_message().payload == b"first"
        ws.send_deflated(Opcode.BINARY, b"\0" * (8 * MIB))
        assert_fails_with(ws, 1009, reason=TOO_BIG, ended=frozenset({Ended.EOF, Ended.RESET}))


def test_corrupt_compressed_payload_closes_with_1007(server: LiveServer) -> None:
    with server.connect("/ws/deflate/", deflate=True) as ws:
        ws.send_frame(Opcode.BINARY, b"\xff\xff\xff\xff not deflate", rsv=RSV1)
        assert_fails_with(ws, 1007)


def test_app_wide_compression_negotiates_permessage_deflate_on_every_handler(app_deflate_server: LiveServer) -> None:
    with app_deflate_server.connect("/ws/echo/", deflate=True) as ws:
        assert ws.response.headers["sec-websocket-extensions"] == "permessage-deflate"
        ws.send_deflated(Opcode.TEXT, b"app-wide")
        ws.send_close(1000)
        assert _inflated(ws) == ([(Opcode.TEXT, RSV1, b"app-wide"), (Opcode.CLOSE, 0, b"\x03\xe8")], Ended.EOF)


def test_compression_bomb_with_app_wide_compression_closes_with_1009(app_deflate_server: LiveServer) -> None:
    peak_before = _peak_rss_kib(app_deflate_server.process.pid)
    with app_deflate_server.connect("/ws/echo/", deflate=True) as ws:
        ws.send_frame(Opcode.BINARY, _zero_bomb(512), rsv=RSV1)
        assert_fails_with(ws, 1009, reason=TOO_BIG, ended=frozenset({Ended.EOF, Ended.RESET}))
    assert (_peak_rss_kib(app_deflate_server.process.pid) - peak_before) / 1024 < 64
    with app_deflate_server.connect("/ws/echo/", deflate=True) as other:
        ws_text = b"still served"
        other.send_deflated(Opcode.TEXT, ws_text)
        assert other.recv_message().payload == ws_text
        other.send_close(1000)
        assert other.read_until_closed() == ([close_frame(1000)], Ended.EOF)
    assert app_deflate_server.wait_registry_size(0) == 0


@pytest.mark.parametrize("negotiated", [False, True], ids=["deflate-not-negotiated", "deflate-negotiated"])
def test_plain_message_of_exactly_1_mib_on_a_compression_handler_is_echoed(
    server: LiveServer, negotiated: bool
) -> None:
    with server.connect("/ws/deflate/", deflate=negotiated) as ws:
        assert ws.deflate is negotiated
        ws.send_frame(Opcode.BINARY, b"p" * MIB)
        echo = ws.recv_message()
        assert (echo.opcode, echo.payload) == (Opcode.BINARY, b"p" * MIB)
        assert_closes_cleanly(ws)
