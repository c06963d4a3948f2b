"""Every sample runs: the book echo and the chat rooms, served for real."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import WSMsgType

from samples.book.urls import urls as book_urls
from samples.chat.urls import urls as chat_urls
from tests.conftest import TIMEOUT, Serve
from wsframe import create_app


async def test_book_sample_echoes_and_serves_its_page(serve: Serve) -> None:
    client = await serve(create_app(book_urls))
    page = await client.get("/")
    assert "new WebSocket(" in await page.text()
    async with client.ws_connect("/ws/book/") as ws:
        await ws.send_str("Hello, server!")
        assert (await ws.receive(timeout=TIMEOUT)).data == "Hello, server!"


async def receive_json(ws: Any) -> dict[str, Any]:
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.TEXT, msg
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def test_chat_members_see_each_other_join_speak_and_leave(serve: Serve) -> None:
    client = await serve(create_app(chat_urls))
    ada = await client.ws_connect("/ws/chat/lobby/?name=ada")
    assert await receive_json(ada) == {"type": "joined", "name": "ada"}
    assert await receive_json(ada) == {"type": "presence", "count": 1}
    bob = await client.ws_connect("/ws/chat/lobby/?name=bob")
    assert await receive_json(ada) == {"type": "joined", "name": "bob"}
    assert await receive_json(ada) == {"type": "presence", "count": 2}
    assert await receive_json(bob) == {"type": "joined", "name": "bob"}
    assert await receive_json(bob) == {"type": "presence", "count": 2}
    await bob.send_str('{"type":"say","text":"hi ada"}')
    assert await receive_json(ada) == {"type": "said", "name": "bob", "text": "hi ada"}
    assert await receive_json(bob) == {"type": "said", "name": "bob", "text": "hi ada"}
    await bob.close()
    assert await receive_json(ada) == {"type": "left", "name": "bob"}
    assert await receive_json(ada) == {"type": "presence", "count": 1}
    await ada.close()


async def test_chat_rooms_are_separate(serve: Serve) -> None:
    client = await serve(create_app(chat_urls))
    ada = await client.ws_connect("/ws/chat/one/?name=ada")
    await receive_json(ada)
    await receive_json(ada)
    bob = await client.ws_connect("/ws/chat/two/?name=bob")
    await receive_json(bob)
    await receive_json(bob)
    await bob.send_str('{"type":"say","text":"only room two"}')
    assert await receive_json(bob) == {"type": "said", "name": "bob", "text": "only room two"}
    await ada.send_str('{"type":"who"}')
    assert await receive_json(ada) == {"type": "presence", "count": 1}  # nothing from room two came first
    await ada.close()
    await bob.close()


async def test_chat_rejects_a_malformed_message_with_1007(serve: Serve) -> None:
    client = await serve(create_app(chat_urls))
    ws = await client.ws_connect("/ws/chat/lobby/?name=eve")
    await receive_json(ws)
    await receive_json(ws)
    await ws.send_str('{"type":"say"}')
    msg = await ws.receive(timeout=TIMEOUT)
    assert (msg.type, msg.data, msg.extra) == (
        WSMsgType.CLOSE,
        1007,
        "Invalid message: Object missing required field `text`",
    )
