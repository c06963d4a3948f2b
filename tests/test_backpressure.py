"""Slow consumers: a client that stops reading never delays anyone else."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket

from aiohttp import web

from tests.support.rawclient import TIMEOUT, HttpResponse, RawWebsocket, raw_connect
from tests.support.servers import Serve
from wsframe import ConnectionClosed, GenericWebsocket, create_app, send_message_to_group, send_message_to_websocket
from wsframe.registry import REGISTRY_KEY

PAYLOAD = "x" * 16 * 1024
SMALL = "y" * 1024


class Member(GenericWebsocket):
    codes: list[int]

    async def connect(self) -> None:
        await self.accept()
        await self.send(self.connection_id)

    async def disconnect(self, code: int) -> None:
        self.app[CODES].append(code)


CODES = web.AppKey("codes", list[int])


async def stalled_client(port: int, path: str) -> RawWebsocket:
    """A client that completes the handshake and then never reads, with tiny socket buffers."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    ws = RawWebsocket((reader, writer), HttpResponse(101, {}, b""))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    return ws


def member_app(**options: object) -> web.Application:
    app = create_app({"ws/": Member}, max_outbound_buffer=64 * 1024, **options)  # type: ignore[arg-type]
    app[CODES] = []
    return app


async def test_stalled_client_is_closed_1013_and_others_get_every_message(serve: Serve) -> None:
    app = member_app(close_timeout=0.5)  # a client that never reads is cut off after close_timeout
    client = await serve(app)
    port = int(client.server.port or 0)
    stalled = await stalled_client(port, "/ws/")
    healthy = await raw_connect(client, "/ws/")
    healthy_id = (await healthy.read_frame(TIMEOUT)).text  # type: ignore[union-attr]
    stalled_id = next(cid for cid in app[REGISTRY_KEY].connections if cid != healthy_id)

    async def read_all() -> int:
        count = 0
        while count < 1000:
            frame = await healthy.read_frame(TIMEOUT)
            assert frame is not None
            assert frame.text == SMALL
            count += 1
        return count

    reader = asyncio.ensure_future(read_all())
    for _ in range(1000):
        # Neither call may wait on the stalled client: each returns at once.
        await send_message_to_websocket(stalled_id, PAYLOAD, app=app)
        await send_message_to_websocket(healthy_id, SMALL, app=app)
        await asyncio.sleep(0)
    assert await asyncio.wait_for(reader, TIMEOUT * 5) == 1000
    for _ in range(100):
        if app[CODES]:
            break
        await asyncio.sleep(0.05)
    assert app[CODES] == [1013]
    assert stalled_id not in app[REGISTRY_KEY].connections
    await stalled.aclose()


async def test_stalled_client_send_buffer_stays_bounded(serve: Serve) -> None:
    app = member_app(close_timeout=30)
    client = await serve(app)
    await stalled_client(int(client.server.port or 0), "/ws/")
    await asyncio.sleep(0.05)
    (connection,) = app[REGISTRY_KEY].connections.values()
    transport = connection.transport
    assert transport is not None
    sizes = []
    for _ in range(300):
        await send_message_to_websocket(connection.connection_id, PAYLOAD, app=app)
        sizes.append(transport.get_write_buffer_size())
    # The buffer never holds more than the bound plus the one message that crossed it, plus the close frame.
    assert max(sizes) <= 64 * 1024 + len(PAYLOAD) + 16 + 64


async def test_self_send_to_a_stalled_client_raises_connection_closed_1013(serve: Serve) -> None:
    errors: list[ConnectionClosed] = []

    class Flood(GenericWebsocket):
        max_outbound_buffer = 32 * 1024

        async def connect(self) -> None:
            await self.accept()
            try:
                for _ in range(10_000):
                    await self.send(PAYLOAD)
                    await asyncio.sleep(0)
            except ConnectionClosed as exc:
                errors.append(exc)

    client = await serve(create_app({"ws/": Flood}))
    stalled = await stalled_client(int(client.server.port or 0), "/ws/")
    for _ in range(200):
        if errors:
            break
        await asyncio.sleep(0.02)
    assert [(e.code, e.reason) for e in errors] == [(1013, "Slow consumer")]
    await stalled.aclose()


async def test_drop_mode_counts_dropped_messages_and_keeps_the_connection(serve: Serve) -> None:
    app = member_app(slow_consumer="drop")
    client = await serve(app)
    stalled = await stalled_client(int(client.server.port or 0), "/ws/")
    await asyncio.sleep(0.05)
    (connection,) = app[REGISTRY_KEY].connections.values()
    for _ in range(500):
        await send_message_to_websocket(connection.connection_id, PAYLOAD, app=app)
        await asyncio.sleep(0)
    assert connection.dropped_messages > 0
    assert connection.connection_id in app[REGISTRY_KEY].connections
    assert app[CODES] == []
    await stalled.aclose()


class RoomMember(GenericWebsocket):
    async def connect(self) -> None:
        await self.accept()
        if "small" in self.query_params:
            # A small kernel buffer, so that what piles up for the stalled reader
            # piles up in wsframe's buffer (bounded) rather than the kernel's (megabytes).
            sock = self.request.transport.get_extra_info("socket") if self.request.transport else None
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        await self.join_group("room")
        await self.send(self.connection_id)

    async def disconnect(self, code: int) -> None:
        self.app[CODES].append(code)


async def test_group_burst_reaches_99_readers_while_the_stalled_member_is_closed_1013(serve: Serve) -> None:
    app = create_app({"ws/": RoomMember}, max_outbound_buffer=64 * 1024, close_timeout=0.5)
    app[CODES] = []
    client = await serve(app)
    stalled = await stalled_client(int(client.server.port or 0), "/ws/?small=1")
    readers = [await raw_connect(client, "/ws/") for _ in range(99)]
    for ws in readers:
        await ws.read_frame(TIMEOUT)  # its connection id
    largest_buffer = 0

    async def read_burst(ws: RawWebsocket) -> int:
        count = 0
        for n in range(1000):
            frame = await ws.read_frame(TIMEOUT)
            assert frame is not None
            assert frame.text == f"{n:04d}" + SMALL[4:]
            count += 1
        return count

    tasks = [asyncio.ensure_future(read_burst(ws)) for ws in readers]
    for n in range(1000):
        await send_message_to_group("room", f"{n:04d}" + SMALL[4:], app=app)
        for connection in app[REGISTRY_KEY].connections.values():
            transport = connection.transport
            if transport is not None:
                largest_buffer = max(largest_buffer, transport.get_write_buffer_size())
        if n % 10 == 0:
            await asyncio.sleep(0)
    assert await asyncio.gather(*tasks) == [1000] * 99
    for _ in range(100):
        if app[CODES]:
            break
        await asyncio.sleep(0.05)
    assert app[CODES] == [1013]
    assert len(app[REGISTRY_KEY].groups["room"]) == 99
    # No connection's send buffer ever held more than the bound plus one message and a close frame.
    assert largest_buffer <= 64 * 1024 + len(SMALL) + 64
    await stalled.aclose()


class SmallBufferFlood(GenericWebsocket):
    """Sends until it is told the client is too slow, through a small kernel buffer."""

    max_outbound_buffer = 64 * 1024
    close_timeout = 0.1

    async def connect(self) -> None:
        await self.accept()
        sock = self.request.transport.get_extra_info("socket") if self.request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        with contextlib.suppress(ConnectionClosed):
            for _ in range(10_000):
                await self.send(PAYLOAD)
                await asyncio.sleep(0)


async def test_a_slow_but_reading_client_receives_the_1013_close_frame(serve: Serve) -> None:
    client = await serve(create_app({"ws/": SmallBufferFlood}))
    slow = await stalled_client(int(client.server.port or 0), "/ws/")
    frames = []
    # Reading one frame each 0.05 s: the server fills the buffer faster and closes with 1013;
    # draining what was queued before the close frame takes several close_timeouts at this pace.
    while (frame := await slow.read_frame(TIMEOUT)) is not None:
        frames.append(frame)
        if frame.opcode == 0x8:
            break
        await asyncio.sleep(0.05)
    await slow.aclose()
    assert [(f.close_code, f.close_reason) for f in frames if f.opcode == 0x8] == [(1013, "Slow consumer")]
    assert len(frames) > 4  # it came after the data queued before it
