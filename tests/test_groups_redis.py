"""Groups across nodes through a real Redis: sends, exclusion, leaving, closing, presence, subscriptions."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.apps.redis_server import SHARED_REDIS_URL, require_shared_redis
from tests.conftest import TIMEOUT, Serve, raw_connect
from tests.rawws import CLOSE, TEXT, Frame, RawWebsocket
from wsframe import GenericWebsocket, close_group, create_app, group_members, send_message_to_group
from wsframe.backends import RedisBackend
from wsframe.backends.redis import alive_key, group_channel, members_key

WsClient = TestClient[web.Request, web.Application]


class Member(GenericWebsocket):
    async def connect(self, group: str) -> None:
        await self.accept()
        await self.join_group(group)
        await self.send(self.connection_id)

    async def receive(self, data: str | bytes) -> None:
        if data == "leave":
            for group in self.groups:
                await self.leave_group(group)
            await self.send("left")


@pytest.fixture
def prefix() -> str:
    require_shared_redis()
    return f"wsframe-test-{secrets.token_hex(4)}:"


def node(prefix: str, **options: float) -> web.Application:
    return create_app({"ws/<group>/": Member}, backend=RedisBackend(SHARED_REDIS_URL, prefix=prefix, **options))


async def member(client: WsClient, group: str) -> tuple[RawWebsocket, str]:
    ws = await raw_connect(client, f"/ws/{group}/")
    frame = await ws.read_frame(TIMEOUT)
    assert frame is not None
    return ws, frame.text


async def silent(ws: RawWebsocket) -> bool:
    """True when nothing more arrives before our own close is answered."""
    ws.send_close(1000)
    return [f.opcode for f in await ws.frames_until_eof(TIMEOUT, answer_close=False)] == [CLOSE]


async def test_group_send_reaches_members_on_every_node_once(serve: Serve, prefix: str) -> None:
    a, b = await serve(node(prefix)), await serve(node(prefix))
    members = [await member(a, "red"), await member(b, "red"), await member(b, "red")]
    outsider, _ = await member(b, "blue")
    await send_message_to_group("red", {"n": 1}, app=a.app)
    for ws, _ in members:
        assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b'{"n":1}')
    for ws, _ in members:
        assert await silent(ws)
    assert await silent(outsider)


async def test_exclude_works_across_nodes(serve: Serve, prefix: str) -> None:
    a, b = await serve(node(prefix)), await serve(node(prefix))
    sender, sender_id = await member(b, "red")
    other, _ = await member(a, "red")
    await send_message_to_group("red", "hi", exclude=sender_id, app=a.app)
    assert await other.read_frame(TIMEOUT) == Frame(TEXT, b"hi")
    assert await silent(sender)


async def test_member_that_left_on_another_node_gets_nothing(serve: Serve, prefix: str) -> None:
    a, b = await serve(node(prefix)), await serve(node(prefix))
    stayer, _ = await member(a, "red")
    leaver, _ = await member(b, "red")
    leaver.send_text("leave")
    assert await leaver.read_frame(TIMEOUT) == Frame(TEXT, b"left")
    await send_message_to_group("red", "after", app=a.app)
    assert await stayer.read_frame(TIMEOUT) == Frame(TEXT, b"after")
    assert await silent(leaver)


async def test_presence_lists_members_of_every_node_and_drops_those_who_leave(serve: Serve, prefix: str) -> None:
    a, b = await serve(node(prefix)), await serve(node(prefix))
    first, first_id = await member(a, "red")
    _, second_id = await member(b, "red")
    assert await group_members("red", app=a.app) == {first_id, second_id}
    assert await group_members("red", app=b.app) == {first_id, second_id}
    first.abort()
    for _ in range(100):
        if await group_members("red", app=b.app) == {second_id}:
            break
        await asyncio.sleep(0.02)
    assert await group_members("red", app=b.app) == {second_id}


async def test_members_of_a_node_that_stopped_refreshing_vanish_after_the_ttl(serve: Serve, prefix: str) -> None:
    a = await serve(node(prefix, presence_ttl=0.3))
    _, a_id = await member(a, "red")
    # A node that was SIGKILLed leaves its members behind, and its liveness key
    # expires presence_ttl after its last refresh. Model it with an id whose
    # node never refreshes at all.
    ghost = "deadbeef" + secrets.token_hex(12)
    async with aioredis.Redis.from_url(SHARED_REDIS_URL) as client:
        await client.sadd(members_key(prefix, "red"), ghost)
        await client.set(alive_key(prefix, "deadbeef"), b"1", px=300)
        assert await group_members("red", app=a.app) == {a_id, ghost}
        await asyncio.sleep(0.4)
        assert await group_members("red", app=a.app) == {a_id}
        # ... and the stale id was pruned from Redis, not just hidden.
        assert {m.decode() for m in await client.smembers(members_key(prefix, "red"))} == {a_id}


async def test_close_group_closes_members_on_every_node(serve: Serve, prefix: str) -> None:
    a, b = await serve(node(prefix)), await serve(node(prefix))
    members = [(await member(a, "red"))[0], (await member(b, "red"))[0]]
    await close_group("red", 4001, "room closed", app=b.app)
    for ws in members:
        frames = await ws.frames_until_eof(TIMEOUT)
        assert [(f.close_code, f.close_reason) for f in frames] == [(4001, "room closed")]


async def test_only_nodes_with_members_subscribe_to_a_group(serve: Serve, prefix: str) -> None:
    a, b = await serve(node(prefix)), await serve(node(prefix))
    ws, _ = await member(a, "red")
    await member(b, "blue")
    async with aioredis.Redis.from_url(SHARED_REDIS_URL) as client:
        subscribers = dict(await client.pubsub_numsub(group_channel(prefix, "red"), group_channel(prefix, "blue")))
        assert subscribers == {group_channel(prefix, "red").encode(): 1, group_channel(prefix, "blue").encode(): 1}
        ws.send_text("leave")
        assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"left")
        # UNSUBSCRIBE is not waited for (nothing is lost by hearing a group a little longer): poll.
        for _ in range(100):
            numsub = dict(await client.pubsub_numsub(group_channel(prefix, "red")))
            if numsub[group_channel(prefix, "red").encode()] == 0:
                break
            await asyncio.sleep(0.01)
        assert numsub == {group_channel(prefix, "red").encode(): 0}


async def test_group_send_publishes_once_whatever_the_number_of_members(serve: Serve, prefix: str) -> None:
    a, b = await serve(node(prefix)), await serve(node(prefix))
    for _ in range(5):
        await member(b, "red")
    before = _backend(a).stats.published
    await send_message_to_group("red", "x", app=a.app)
    assert _backend(a).stats.published - before == 1


def _backend(client: WsClient) -> RedisBackend:
    from wsframe.registry import REGISTRY_KEY

    backend = client.app[REGISTRY_KEY].backend
    assert isinstance(backend, RedisBackend)
    return backend


async def test_members_of_a_node_that_shut_down_leave_presence_at_once(serve: Serve, prefix: str) -> None:
    from aiohttp.test_utils import TestServer

    a = await serve(node(prefix))
    _, a_id = await member(a, "red")
    b = TestServer(node(prefix))
    await b.start_server()
    clients = [await RawWebsocket.connect("127.0.0.1", int(b.port or 0), "/ws/red/") for _ in range(3)]
    for ws in clients:
        await ws.read_frame(TIMEOUT)
    assert len(await group_members("red", app=a.app)) == 4
    readers = [asyncio.ensure_future(ws.frames_until_eof(TIMEOUT)) for ws in clients]
    await b.close()  # graceful: 1001 to its clients, its liveness key deleted
    await asyncio.gather(*readers)
    assert await group_members("red", app=a.app) == {a_id}
