"""Groups on Redis beyond the contract (test_backends_contract): presence TTL, subscriptions, one publish."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from tests.support.nodes import WsClient, member, node_app, redis_prefix
from tests.support.rawclient import TEXT, TIMEOUT, Frame
from tests.support.redis_server import SHARED_REDIS_URL
from tests.support.servers import Serve
from wsframe import group_members, send_message_to_group
from wsframe.backends import RedisBackend
from wsframe.backends.redis import alive_key, group_channel, members_key
from wsframe.registry import REGISTRY_KEY


@pytest.fixture
def prefix() -> str:
    return redis_prefix()


def node(prefix: str, **options: float) -> web.Application:
    return node_app(RedisBackend(SHARED_REDIS_URL, prefix=prefix, **options))


def backend_of(client: WsClient) -> RedisBackend:
    backend = client.app[REGISTRY_KEY].backend
    assert isinstance(backend, RedisBackend)
    return backend


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
    before = backend_of(a).stats.published
    await send_message_to_group("red", "x", app=a.app)
    assert backend_of(a).stats.published - before == 1
