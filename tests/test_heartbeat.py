"""wsframe's heartbeat (wsframe._heartbeat): pings quiet peers, drops dead ones with 1006, any traffic counts."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.support.rawclient import PING, PONG, TEXT, TIMEOUT, Frame, RawWebsocket, raw_connect
from tests.support.servers import Serve
from wsframe import GenericWebsocket, create_app, status
from wsframe.registry import REGISTRY_KEY

HEARTBEAT = 0.2
"""Seconds: a dead peer is dropped 0.3 to 0.35 s after its last frame."""

CODES = web.AppKey("codes", dict[str, list[int]])


class Echo(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        await self.send(data)

    async def disconnect(self, code: int) -> None:
        self.app[CODES].setdefault(self.request.path, []).append(code)


class Fast(Echo):
    heartbeat = HEARTBEAT


class Slow(Echo):
    """A tenth of Fast's rate: a peer that sends every 0.1 s is never quiet for long enough."""

    heartbeat = HEARTBEAT * 5


class Silent(Echo):
    heartbeat = 0


def app_of(**options: object) -> web.Application:
    app = create_app({"fast/": Fast, "slow/": Slow, "silent/": Silent}, **options)  # type: ignore[arg-type]
    app[CODES] = {}
    return app


async def ended(app: web.Application, path: str, timeout: float = 5 * TIMEOUT) -> list[int]:
    """The disconnect() codes of *path*'s connections, once there is one (fails after *timeout*)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not app[CODES].get(path):
        assert loop.time() < deadline, f"no connection of {path} ended within {timeout} s"
        await asyncio.sleep(0.01)
    return app[CODES][path]


async def echo(ws: RawWebsocket, text: str) -> list[Frame]:
    """Send *text*; the frames the server sends until its first text frame (or until it ends the connection)."""
    ws.send_text(text)
    frames = []
    while (frame := await ws.read_frame(TIMEOUT)) is not None:
        frames.append(frame)
        if frame.opcode == TEXT:
            break
    return frames


async def test_a_peer_that_never_answers_pings_is_dropped_with_1006(serve: Serve) -> None:
    app = app_of()
    client = await serve(app)
    ws = await raw_connect(client, "/fast/")
    frames: list[Frame] = []
    while (frame := await ws.read_frame(5 * TIMEOUT)) is not None:
        frames.append(frame)
    assert await ended(app, "/fast/") == [status.WS_1006_ABNORMAL_CLOSURE]
    # One ping, then the TCP connection ended without a close frame: a dead peer is not closed politely.
    assert frames == [Frame(PING, b"")]
    assert app[REGISTRY_KEY].connections == {}


async def test_a_peer_that_answers_pings_stays_open(serve: Serve) -> None:
    app = app_of()
    client = await serve(app)
    ws = await raw_connect(client, "/fast/")
    pings = 0
    while pings < 4:  # each ping came after a heartbeat of silence; a dead peer goes after one
        frame = await ws.read_frame(5 * TIMEOUT)
        assert frame == Frame(PING, b"")
        ws.send_frame(PONG, frame.payload)
        pings += 1
    assert await echo(ws, "still here") == [Frame(TEXT, b"still here")]
    assert app[CODES] == {}
    await ws.aclose()


async def test_a_peer_that_sends_data_but_never_answers_pings_stays_open(serve: Serve) -> None:
    """Any traffic counts: a peer sending every 0.1 s with a 1 s heartbeat is alive, pongs or not."""
    app = app_of()
    client = await serve(app)
    ws = await raw_connect(client, "/slow/")
    loop = asyncio.get_running_loop()
    until = loop.time() + 2.0  # longer than 1.5 heartbeats: a silent peer would have gone
    sent = 0
    while loop.time() < until:
        ws.send_text(str(sent))
        sent += 1
        await asyncio.sleep(0.1)
    frames = []
    while len([f for f in frames if f.opcode == TEXT]) < sent:
        frame = await ws.read_frame(TIMEOUT)
        assert frame is not None, "the server ended the connection"
        frames.append(frame)
    assert [f.payload for f in frames if f.opcode == TEXT] == [str(i).encode() for i in range(sent)]
    assert app[CODES] == {}
    await ws.aclose()


async def test_a_handler_without_heartbeat_is_neither_pinged_nor_dropped_beside_one_with_it(serve: Serve) -> None:
    app = app_of()
    client = await serve(app)
    silent = await raw_connect(client, "/silent/")
    fast = await raw_connect(client, "/fast/")
    assert await ended(app, "/fast/") == [status.WS_1006_ABNORMAL_CLOSURE]
    # The silent one was as quiet for as long, and is open and was sent nothing.
    assert await echo(silent, "no pings") == [Frame(TEXT, b"no pings")]
    assert "/silent/" not in app[CODES]
    await silent.aclose()
    await fast.aclose()


async def test_a_ping_goes_through_the_outbound_bound_so_a_peer_that_stopped_reading_gets_1013(
    serve: Serve,
) -> None:
    """The ping is a write like any other: past max_outbound_buffer it closes (slow_consumer='close') with 1013."""

    class Flooding(Fast):
        async def connect(self) -> None:
            await self.accept()
            # One write past the bound is let through (the bound is checked before a
            # write); the client reads nothing, so most of it stays in our buffer.
            await self.send("x" * (16 * 1024 * 1024))

    app = create_app({"fast/": Flooding}, max_outbound_buffer=1024, close_timeout=0.5)
    app[CODES] = {}
    client = await serve(app)
    ws = await raw_connect(client, "/fast/")  # and never reads
    assert await ended(app, "/fast/") == [status.WS_1013_TRY_AGAIN_LATER]
    assert app[REGISTRY_KEY].tally.slow_closed == 1
    ws.abort()


async def test_a_ping_past_the_bound_in_drop_mode_is_not_written_nor_counted_as_a_dropped_message(
    serve: Serve,
) -> None:
    class Flooding(Fast):
        async def connect(self) -> None:
            await self.accept()
            await self.send("x" * (16 * 1024 * 1024))

    app = create_app({"fast/": Flooding}, max_outbound_buffer=1024, slow_consumer="drop")
    app[CODES] = {}
    client = await serve(app)
    ws = await raw_connect(client, "/fast/")  # and never reads
    registry = app[REGISTRY_KEY]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5 * TIMEOUT
    while not registry.connections:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    (connection,) = registry.connections.values()
    assert connection.transport is not None
    buffered = connection.transport.get_write_buffer_size()
    assert buffered > 1024
    # Quiet past the ping and past the drop: dropped as a dead peer, the buffer never grew.
    assert await ended(app, "/fast/") == [status.WS_1006_ABNORMAL_CLOSURE]
    assert connection.sent_bytes == 16 * 1024 * 1024 + 10  # the flood's frame (10 bytes of header), no ping
    assert (registry.tally.messages_dropped, registry.tally.slow_dropped) == (0, 0)
    ws.abort()


# ---------------------------------------------------- the sweep, one step at a time


class Patient(Echo):
    """A heartbeat so long that its timer never sweeps during a test: the test sweeps by hand."""

    heartbeat = 1000.0


async def open_patient(serve: Serve) -> tuple[web.Application, RawWebsocket]:
    app = create_app({"patient/": Patient})
    app[CODES] = {}
    client = await serve(app)
    ws = await raw_connect(client, "/patient/")
    assert await echo(ws, "hello") == [Frame(TEXT, b"hello")]  # open, and registered
    return app, ws


async def test_the_fourth_quiet_sweep_pings_and_the_sixth_drops_with_1006(serve: Serve) -> None:
    """Sweeps come every quarter heartbeat: a ping after one heartbeat of silence, the drop half of one later."""
    app, ws = await open_patient(serve)
    heartbeat = app[REGISTRY_KEY].heartbeat
    heartbeat.sweep()  # sees the "hello": alive
    for _ in range(3):
        heartbeat.sweep()
    assert await echo(ws, "marker") == [Frame(TEXT, b"marker")]  # three quiet sweeps: no ping yet
    heartbeat.sweep()  # saw the marker: alive again; quiet from here
    for _ in range(3):
        heartbeat.sweep()
    assert app[CODES] == {}
    heartbeat.sweep()  # the fourth quiet one
    assert await ws.read_frame() == Frame(PING, b"")
    heartbeat.sweep()
    assert app[CODES] == {}
    heartbeat.sweep()  # the sixth
    assert await ended(app, "/patient/") == [status.WS_1006_ABNORMAL_CLOSURE]
    assert await ws.read_frame() is None


async def test_a_pong_after_the_ping_keeps_the_connection_and_starts_the_count_again(serve: Serve) -> None:
    app, ws = await open_patient(serve)
    heartbeat = app[REGISTRY_KEY].heartbeat
    for _ in range(5):  # alive (the hello), then four quiet: pinged
        heartbeat.sweep()
    frame = await ws.read_frame()
    assert frame == Frame(PING, b"")
    ws.send_frame(PONG, frame.payload)
    assert await echo(ws, "after the pong") == [Frame(TEXT, b"after the pong")]
    for _ in range(4):  # sees the pong (and the message), then three quiet: not even pinged yet
        heartbeat.sweep()
    assert await echo(ws, "still open") == [Frame(TEXT, b"still open")]
    assert app[CODES] == {}
    await ws.aclose()
