"""Sending to and closing connections by id, from every place an app sends from."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from aiohttp import web

from tests.support.rawclient import TEXT, TIMEOUT, Frame, raw_connect
from tests.support.servers import Serve
from wsframe import (
    ApplicationNotFoundError,
    GenericWebsocket,
    close_websocket_connection,
    create_app,
    send_message_to_websocket,
)
from wsframe.registry import REGISTRY_KEY, get_registry


class Announce(GenericWebsocket):
    """Tells the client its own connection id, then relays 'to <id> <text>' commands."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(self.connection_id)

    async def receive(self, data: str | bytes) -> None:
        assert isinstance(data, str)
        _, target, text = data.split(" ", 2)
        await send_message_to_websocket(target, text)


async def notify(request: web.Request) -> web.Response:
    await send_message_to_websocket(request.match_info["connection_id"], await request.json())
    return web.json_response({"sent": True})


async def kick(request: web.Request) -> web.Response:
    await close_websocket_connection(request.match_info["connection_id"], 4009, "kicked")
    return web.json_response({"closed": True})


def app_with_endpoints() -> web.Application:
    return create_app({"ws/": Announce, "notify/<connection_id>/": notify, "kick/<connection_id>/": kick})


async def test_send_from_http_handler_reaches_exactly_that_connection(serve: Serve) -> None:
    client = await serve(app_with_endpoints())
    sockets = [await raw_connect(client, "/ws/") for _ in range(20)]
    ids = [(await ws.read_frame(TIMEOUT)).text for ws in sockets]  # type: ignore[union-attr]
    target = 13
    response = await client.post(f"/notify/{ids[target]}/", json={"n": 1})
    assert await response.json() == {"sent": True}
    assert await sockets[target].read_frame(TIMEOUT) == Frame(TEXT, b'{"n":1}')
    # Nobody else got anything: each of them next sees the close of app shutdown, not a message.
    for ws in sockets:
        ws.send_close(1000)
    for index, ws in enumerate(sockets):
        frames = await ws.frames_until_eof(TIMEOUT, answer_close=False)
        assert [f.opcode for f in frames] == [0x8], index


async def test_send_from_another_websocket_handler(serve: Serve) -> None:
    client = await serve(app_with_endpoints())
    alice, bob = await raw_connect(client, "/ws/"), await raw_connect(client, "/ws/")
    await alice.read_frame(TIMEOUT)
    bob_id = (await bob.read_frame(TIMEOUT)).text  # type: ignore[union-attr]
    alice.send_text(f"to {bob_id} hello bob")
    assert await bob.read_frame(TIMEOUT) == Frame(TEXT, b"hello bob")


async def test_send_from_a_background_task_started_at_startup(serve: Serve) -> None:
    inbox: asyncio.Queue[str] = asyncio.Queue()

    class Register(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            inbox.put_nowait(self.connection_id)

    async def pusher(app: web.Application) -> None:
        # Started from on_startup: no request context, the fallback finds the one running app.
        connection_id = await inbox.get()
        await send_message_to_websocket(connection_id, {"pushed": True})

    app = create_app({"ws/": Register})
    tasks: list[asyncio.Task[None]] = []

    async def start(app: web.Application) -> None:
        tasks.append(asyncio.ensure_future(pusher(app)))

    app.on_startup.append(start)
    client = await serve(app)
    ws = await raw_connect(client, "/ws/")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b'{"pushed":true}')
    await tasks[0]


async def test_close_by_id_from_http_handler_delivers_code_and_reason(serve: Serve) -> None:
    client = await serve(app_with_endpoints())
    ws = await raw_connect(client, "/ws/")
    connection_id = (await ws.read_frame(TIMEOUT)).text  # type: ignore[union-attr]
    kick_task = asyncio.ensure_future(client.post(f"/kick/{connection_id}/"))
    frames = await ws.frames_until_eof(TIMEOUT)
    assert [(f.close_code, f.close_reason) for f in frames] == [(4009, "kicked")]
    assert await (await kick_task).json() == {"closed": True}


async def test_close_by_id_runs_disconnect_with_that_code(serve: Serve) -> None:
    codes: list[int] = []

    class Watch(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.send(self.connection_id)

        async def disconnect(self, code: int) -> None:
            codes.append(code)

    app = create_app({"ws/": Watch})
    client = await serve(app)
    ws = await raw_connect(client, "/ws/")
    connection_id = (await ws.read_frame(TIMEOUT)).text  # type: ignore[union-attr]
    closing = asyncio.ensure_future(close_websocket_connection(connection_id, 4010, "bye", app=app))
    await ws.frames_until_eof(TIMEOUT)
    await closing
    for _ in range(50):
        if codes:
            break
        await asyncio.sleep(0.01)
    assert codes == [4010]
    assert app[REGISTRY_KEY].connections == {}


@pytest.mark.parametrize(
    "connection_id",
    ["0" * 32, "not-an-id", "", "f" * 64],
    ids=["unknown-node", "malformed", "empty", "too-long"],
)
async def test_unknown_ids_are_not_an_error_for_the_caller(
    serve: Serve, caplog: pytest.LogCaptureFixture, connection_id: str
) -> None:
    caplog.set_level(logging.DEBUG, "wsframe")
    app = app_with_endpoints()
    await serve(app)
    await send_message_to_websocket(connection_id, "lost", app=app)
    await close_websocket_connection(connection_id, 1000, app=app)
    assert [r.levelno for r in caplog.records if r.name.startswith("wsframe")] == [logging.DEBUG] * 2


async def test_id_of_a_closed_connection_is_not_an_error(serve: Serve) -> None:
    app = app_with_endpoints()
    client = await serve(app)
    ws = await raw_connect(client, "/ws/")
    connection_id = (await ws.read_frame(TIMEOUT)).text  # type: ignore[union-attr]
    ws.send_close(1000)
    await ws.frames_until_eof(TIMEOUT, answer_close=False)
    for _ in range(50):
        if not app[REGISTRY_KEY].connections:
            break
        await asyncio.sleep(0.01)
    await send_message_to_websocket(connection_id, "too late", app=app)
    response = await client.post(f"/notify/{connection_id}/", json=1)
    assert response.status == 200


async def test_close_by_id_with_a_code_that_cannot_be_sent_raises(serve: Serve) -> None:
    app = app_with_endpoints()
    await serve(app)
    with pytest.raises(ValueError, match="1006 is not a close code that can be sent"):
        await close_websocket_connection("0" * 32, 1006, app=app)


async def test_unencodable_data_raises_type_error(serve: Serve) -> None:
    app = app_with_endpoints()
    await serve(app)
    with pytest.raises(TypeError):
        await send_message_to_websocket("0" * 32, object(), app=app)


async def test_without_a_running_app_the_error_says_to_pass_app() -> None:
    with pytest.raises(ApplicationNotFoundError, match=r"No wsframe application is running"):
        await send_message_to_websocket("0" * 32, "x")


async def test_with_two_running_apps_the_error_says_to_pass_app(serve: Serve) -> None:
    await serve(app_with_endpoints())
    await serve(app_with_endpoints())
    with pytest.raises(ApplicationNotFoundError, match="2 wsframe applications are running"):
        await send_message_to_websocket("0" * 32, "x")


def test_plain_aiohttp_app_is_rejected_with_the_fix() -> None:
    with pytest.raises(ApplicationNotFoundError, match=r"not made by wsframe\.create_app"):
        get_registry(web.Application())


async def test_node_id_is_drawn_again_at_every_startup(serve: Serve) -> None:
    app = app_with_endpoints()
    before = app[REGISTRY_KEY].node_id
    await serve(app)
    after = app[REGISTRY_KEY].node_id
    assert re.fullmatch(r"[0-9a-f]{8}", after)
    assert after != before
    assert app[REGISTRY_KEY].new_connection_id().startswith(after)
