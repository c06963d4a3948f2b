"""The end of a connection's life and of the server's: what the registry waits for and closes.

Handlers cancelled or still finishing at shutdown must still count as finished and leave the
registry; a handshake that accepts while shutdown drains must be closed with 1001; shutdown waits
for a disconnect() that is still running. Real sockets; aiohttp's own runner where TestServer
would cancel handlers differently.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.rawclient import CLOSE, TEXT, TIMEOUT, Frame, RawWebsocket, raw_connect
from tests.support.servers import Serve
from wsframe import GenericWebsocket, create_app
from wsframe.registry import REGISTRY_KEY


async def settled(task: asyncio.Task[object] | asyncio.Future[object]) -> None:
    """Wait (bounded) for an aiohttp handler task to end, however it ends."""
    await asyncio.wait([task], timeout=TIMEOUT)
    assert task.done(), "the handler did not end"


# ------------------------------------------------------------ finish counter


class _Rejects(GenericWebsocket):
    async def connect(self) -> None:
        pass  # 403, nothing registered


class _ClosesFirst(GenericWebsocket):
    async def connect(self) -> None:
        await self.close(4001, "no")  # upgrade, then close: never accepted


class _TooSlow(GenericWebsocket):
    handshake_timeout = 0.05

    async def connect(self) -> None:
        await asyncio.sleep(30)  # 408 when the handshake timer fires


@pytest.mark.parametrize("handler", [_Rejects, _ClosesFirst, _TooSlow], ids=["403", "close-first", "408"])
async def test_a_connection_that_was_never_accepted_leaves_no_unfinished_handler(
    serve: Serve, handler: type[GenericWebsocket]
) -> None:
    app = create_app({"ws/": handler})
    client = await serve(app)
    response = await client.get("/ws/", headers=_UPGRADE)
    await response.read()
    registry = app[REGISTRY_KEY]
    assert (registry.unfinished, registry.connections) == (0, {})


_UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


async def test_a_handler_cancelled_while_in_disconnect_still_counts_as_finished(serve: Serve) -> None:
    handlers: list[asyncio.Task[object]] = []
    in_disconnect = asyncio.Event()

    class Stuck(GenericWebsocket):
        async def connect(self) -> None:
            handlers.append(asyncio.current_task())  # type: ignore[arg-type]
            await self.accept()
            await self.send("accepted")

        async def disconnect(self, code: int) -> None:
            in_disconnect.set()
            await asyncio.Event().wait()  # a cleanup that never returns

    app = create_app({"ws/": Stuck})
    client = await serve(app)
    ws = await raw_connect(client, "/ws/")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"accepted")
    ws.send_close(1000)
    await asyncio.wait_for(in_disconnect.wait(), TIMEOUT)
    handlers[0].cancel()  # what aiohttp does when its shutdown timeout runs out
    await settled(handlers[0])
    assert app[REGISTRY_KEY].unfinished == 0


# Failed before d0e4483: Registry.on_shutdown waits for unfinished handlers only when some connection is still
# registered, so a disconnect() that is running (its connection already discarded) is cut off by the backend
# stopping.
async def test_shutdown_waits_for_a_disconnect_that_is_still_running() -> None:
    events: list[str] = []
    in_disconnect = asyncio.Event()

    class SlowCleanup(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.send("accepted")

        async def disconnect(self, code: int) -> None:
            in_disconnect.set()
            await asyncio.sleep(0.2)  # e.g. telling other workers, through the backend, that a user left
            events.append("disconnect() done")

    async def after_wsframe_shutdown(app: web.Application) -> None:
        events.append("shutdown done, backend stopped")

    app = create_app({"ws/": SlowCleanup})
    app.on_shutdown.append(after_wsframe_shutdown)
    # aiohttp's own runner, as in production (TestServer would cancel the handler when the client leaves).
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ws = await RawWebsocket.connect("127.0.0.1", port, "/ws/")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"accepted")
    ws.send_close(1000)
    await ws.frames_until_eof(TIMEOUT, answer_close=False)
    await asyncio.wait_for(in_disconnect.wait(), TIMEOUT)
    await runner.cleanup()
    assert events == ["disconnect() done", "shutdown done, backend stopped"]


# Failed before d0e4483: a handler cancelled inside connect() after accept() skips _finish(): it stays in the
# registry, disconnect() never runs and registry.unfinished stays 1, so every later shutdown waits
# FINISH_SECONDS.
async def test_a_handler_cancelled_in_connect_after_accept_leaves_the_registry_and_runs_disconnect(
    serve: Serve,
) -> None:
    handlers: list[asyncio.Task[object]] = []
    codes: list[int] = []

    class SlowConnect(GenericWebsocket):
        async def connect(self) -> None:
            handlers.append(asyncio.current_task())  # type: ignore[arg-type]
            await self.accept()
            await self.send("accepted")
            await asyncio.Event().wait()  # e.g. loading the user's state after accepting

        async def disconnect(self, code: int) -> None:
            codes.append(code)

    app = create_app({"ws/": SlowConnect})
    client = await serve(app)
    ws = await raw_connect(client, "/ws/")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"accepted")
    ws.abort()  # the client vanishes; aiohttp cancels the handler (handler_cancellation, on in TestServer)
    await settled(handlers[0])
    registry = app[REGISTRY_KEY]
    assert (codes, registry.connections, registry.unfinished) == ([1006], {}, 0)


async def test_a_handler_cancelled_while_closing_after_connect_failed_leaves_the_registry_and_runs_disconnect(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    handlers: list[asyncio.Task[object]] = []
    codes: list[int] = []

    class FailsAfterAccept(GenericWebsocket):
        async def connect(self) -> None:
            handlers.append(asyncio.current_task())  # type: ignore[arg-type]
            await self.accept()
            raise RuntimeError("a bug after accept")  # closes with 1011 and waits for the client's reply

        async def disconnect(self, code: int) -> None:
            codes.append(code)

    app = create_app({"ws/": FailsAfterAccept}, close_timeout=30)
    client = await serve(app)
    ws = await raw_connect(client, "/ws/")
    frame = await ws.read_frame(TIMEOUT)
    assert frame is not None
    assert frame.close_code == 1011
    ws.abort()  # the client vanishes instead of answering; aiohttp cancels the handler
    await settled(handlers[0])
    registry = app[REGISTRY_KEY]
    assert (codes, registry.connections, registry.unfinished) == ([1011], {}, 0)


# Failed before d0e4483: a handshake that accepts after shutdown took its snapshot of connections is never
# sent 1001: shutdown waits FINISH_SECONDS for it, stops the backend and leaves it open.
async def test_a_connection_accepted_while_shutdown_drains_is_closed_with_1001() -> None:
    gate = asyncio.Event()

    class Gated(GenericWebsocket):
        async def connect(self) -> None:
            if "wait" in self.query_params:
                await gate.wait()  # e.g. an auth lookup still running when SIGTERM arrives
            await self.accept()

    app = create_app({"ws/": Gated})
    server = TestServer(app, shutdown_timeout=1.0)
    await server.start_server()
    port = int(server.port or 0)
    first = await RawWebsocket.connect("127.0.0.1", port, "/ws/")
    late_handshake = asyncio.ensure_future(RawWebsocket.connect("127.0.0.1", port, "/ws/?wait=1"))
    await asyncio.sleep(0.05)  # the late handshake is inside connect(), before accept()
    closing = asyncio.ensure_future(server.close())
    late: RawWebsocket | None = None
    try:
        first_close = await first.read_frame(TIMEOUT)  # shutdown is draining: it closed the first one
        assert first_close is not None
        assert first_close.close_code == 1001
        gate.set()
        late = await late_handshake
        first.send_close(1001)
        frames = await late.frames_until_eof(TIMEOUT)
        assert [(f.opcode, f.close_code) for f in frames] == [(CLOSE, 1001)]
    finally:
        gate.set()
        if late is not None:
            late.abort()
        await asyncio.wait([closing, late_handshake], timeout=10)
