"""Clients that never finish their HTTP request: a deadline at the protocol level, a cap per address.

Real sockets against a real server (pytest-aiohttp's, built by an AppRunner as
``wsframe run`` and gunicorn's worker build theirs).
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiohttp import web

from tests.support.rawclient import TIMEOUT, RawWebsocket, raw_connect
from tests.support.servers import Serve
from wsframe import GenericWebsocket, create_app

PARTIAL_REQUEST = b"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"


class Echo(GenericWebsocket):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, data: str | bytes) -> None:
        await self.send(data)


def echo_app(**options: object) -> web.Application:
    return create_app({"ws/": Echo}, **options)  # type: ignore[arg-type]


async def open_slow(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has sent the start of a request and none of its end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(PARTIAL_REQUEST)
    await writer.drain()
    return reader, writer


async def dribble(writers: list[asyncio.StreamWriter]) -> None:
    """Keep every slow connection busy: one more header byte each 0.2 s, never the blank line."""
    while True:
        await asyncio.sleep(0.2)
        for writer in writers:
            if not writer.is_closing():
                writer.write(b"X")


async def read_to_eof(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """What the server sent until it closed (EOF or reset); TimeoutError if it keeps the connection."""
    chunks = []
    try:
        while chunk := await asyncio.wait_for(reader.read(4096), timeout):
            chunks.append(chunk)
    except ConnectionResetError:
        # Closing a socket with unread bytes (the client was dribbling) makes the kernel reset it.
        pass
    return b"".join(chunks)


async def echo_once(client: object) -> str | None:
    ws = await raw_connect(client, "/ws/")  # type: ignore[arg-type]
    ws.send_text("still served")
    frame = await ws.read_frame(TIMEOUT)
    await ws.aclose()
    return frame.text if frame is not None else None


async def test_200_slowloris_sockets_are_closed_with_408_after_the_handshake_timeout(serve: Serve) -> None:
    client = await serve(echo_app(handshake_timeout=1.0, max_handshakes_per_ip=None))
    port = int(client.server.port or 0)
    started = time.monotonic()
    slow = [await open_slow(port) for _ in range(200)]
    writers = [writer for _, writer in slow]
    keep_busy = asyncio.create_task(dribble(writers))
    try:
        # A client that sends its request at once is served meanwhile.
        assert await echo_once(client) == "still served"
        answers = await asyncio.gather(*(read_to_eof(reader, 5.0) for reader, _ in slow))
        elapsed = time.monotonic() - started
    finally:
        keep_busy.cancel()
        await asyncio.gather(keep_busy, return_exceptions=True)
        for writer in writers:
            writer.close()
    # Every one was closed; a socket whose last dribbled byte was unread is reset, so its 408 may be lost.
    assert {answer.split(b"\r\n", 1)[0] for answer in answers} <= {b"HTTP/1.1 408 Request Timeout", b""}
    assert any(answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n") for answer in answers)
    # handshake_timeout + 1 s, measured from the first socket's connect: generous under load.
    assert elapsed < 2.0 + 1.0


async def test_a_connection_past_max_handshakes_per_ip_gets_429_and_other_addresses_still_connect(
    serve: Serve,
) -> None:
    client = await serve(echo_app(handshake_timeout=30, max_handshakes_per_ip=5))
    port = int(client.server.port or 0)
    slow = [await open_slow(port) for _ in range(5)]
    try:
        refused_reader, refused_writer = await open_slow(port)
        answer = await read_to_eof(refused_reader, TIMEOUT)
        refused_writer.close()
        assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 429 Too Many Requests"
        # Another address is counted apart (every 127.x address is this machine).
        other = await RawWebsocket.connect("127.0.0.1", port, "/ws/", local_addr=("127.0.0.2", 0))
        other.send_text("from elsewhere")
        frame = await other.read_frame(TIMEOUT)
        await other.aclose()
        assert frame is not None
        assert frame.text == "from elsewhere"
    finally:
        for _, writer in slow:
            writer.close()


async def test_an_address_is_admitted_again_once_its_unfinished_connections_complete(serve: Serve) -> None:
    client = await serve(echo_app(handshake_timeout=30, max_handshakes_per_ip=2))
    port = int(client.server.port or 0)
    slow = [await open_slow(port) for _ in range(2)]
    for reader, writer in slow:
        writer.write(b"Connection: close\r\n\r\n")  # complete now: a plain GET, answered, then closed
        await writer.drain()
        await read_to_eof(reader, TIMEOUT)
        writer.close()
    assert await echo_once(client) == "still served"


async def test_a_64_kib_header_line_is_answered_400_and_logged_as_one_line_without_traceback(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    client = await serve(echo_app())
    reader, writer = await asyncio.open_connection("127.0.0.1", int(client.server.port or 0))
    caplog.set_level(logging.DEBUG)
    writer.write(b"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 65536 + b"\r\n\r\n")
    answer = await read_to_eof(reader, TIMEOUT)
    writer.close()
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    server_records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [(r.levelname, r.exc_info) for r in server_records] == [("INFO", None)]
    (line,) = server_records
    assert "LineTooLong" in line.getMessage()
    assert "\n" not in line.getMessage()


async def test_non_http_bytes_are_logged_as_one_debug_line_without_traceback(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    client = await serve(echo_app())
    reader, writer = await asyncio.open_connection("127.0.0.1", int(client.server.port or 0))
    caplog.set_level(logging.DEBUG)
    writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not HTTP, a TLS hello\r\n\r\n")
    answer = await read_to_eof(reader, TIMEOUT)
    writer.close()
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    server_records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [(r.levelname, r.exc_info) for r in server_records] == [("DEBUG", None)]
