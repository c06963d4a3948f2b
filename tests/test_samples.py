"""Every sample runs: the book echo and the chat rooms, served for real."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import WSMsgType

from samples.book.urls import urls as book_urls
from samples.chat.urls import urls as chat_urls
from tests.support.rawclient import TIMEOUT
from tests.support.servers import Serve
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


async def test_chat_room_named_as_users_type_works(serve: Serve) -> None:
    client = await serve(create_app(chat_urls))
    ada = await client.ws_connect("/ws/chat/" + quote("café * [2]?", safe="") + "/?name=ada")
    assert await receive_json(ada) == {"type": "joined", "name": "ada"}
    assert await receive_json(ada) == {"type": "presence", "count": 1}
    await ada.send_str('{"type":"say","text":"salut"}')
    assert await receive_json(ada) == {"type": "said", "name": "ada", "text": "salut"}
    await ada.close()


async def test_chat_closes_a_room_name_too_long_for_a_group_with_4400(serve: Serve) -> None:
    client = await serve(create_app(chat_urls))
    ws = await client.ws_connect("/ws/chat/" + "r" * 252 + "/?name=ada")
    msg = await ws.receive(timeout=TIMEOUT)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4400, "Room names are at most 251 characters.")


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


async def test_cluster_sample_delivers_a_tick_to_listeners_on_every_worker() -> None:
    import contextlib
    import secrets

    from tests.support.redis_server import SHARED_REDIS_URL, require_shared_redis
    from wsframe.testing import WebsocketTestCluster

    require_shared_redis()
    channel = f"test-{secrets.token_hex(4)}"
    cluster = WebsocketTestCluster(
        "samples.cluster.app:app",
        workers=2,
        env={"WSFRAME_REDIS": SHARED_REDIS_URL},
        gunicorn_args=["-c", "samples/cluster/gunicorn.conf.py"],  # the recipe's settings load and apply
        timeout=5.0,
    )
    async with cluster, contextlib.AsyncExitStack() as stack:
        # Until both workers answer, the first one to boot takes every connection.
        answered: set[int] = set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
            for _ in range(300):
                async with fresh.get(f"{cluster.url}/health/") as response:
                    answered.add((await response.json())["worker"])
                if len(answered) == 2:
                    break
                await asyncio.sleep(0.05)
        listeners = []
        workers: set[int] = set()
        for _ in range(40):  # until the kernel has put listeners on both workers
            listener = await stack.enter_async_context(cluster.connect(f"/ws/ticker/{channel}/"))
            welcome = await listener.receive_json()
            listeners.append(listener)
            workers.add(welcome["worker"])
            if len(workers) == 2 and len(listeners) >= 4:
                break
        assert len(workers) == 2
        response = await cluster.post(f"/publish/{channel}/", json={"price": 42})
        assert (await response.json())["listeners"] == len(listeners)
        for listener in listeners:
            tick = await listener.receive_json()
            assert (tick["type"], tick["tick"]) == ("tick", {"price": 42})
        bad = await cluster.post(f"/publish/{channel}/", data=b"[1, 2]")
        assert bad.status == 400
