"""History on a real Redis Cluster: a group's keys and channel share a slot; one numbering, resume."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from tests.apps.history_app import make_app
from tests.support.history import joined_of
from tests.support.nodes import redis_prefix
from tests.support.redis_cluster import RedisCluster, own_cluster
from wsframe import History
from wsframe.backends.base import Envelope
from wsframe.backends.redis import RedisClusterBackend, _history
from wsframe.backends.redis._keys import cluster_group_channel
from wsframe.registry import REGISTRY_KEY
from wsframe.testing import WsClientFactory

NEEDS_REDIS_8 = pytest.mark.skipif(
    tuple(int(part) for part in importlib.metadata.version("redis").split(".")[:2]) < (8, 0),
    reason="the Redis Cluster backend needs redis-py 8.0 or newer",
)


@pytest.mark.parametrize("group", ["chat:1", "chat:{odd}", "chat:}{", "чат:7"])
def test_a_groups_stream_position_and_shard_channel_hash_to_one_slot(group: str) -> None:
    names = [
        _history.history_key("app:", group),
        _history.history_meta_key("app:", group),
        cluster_group_channel("app:", group),
    ]
    assert len({key_slot(name.encode()) for name in names}) == 1


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with own_cluster() as started:
        yield started


@NEEDS_REDIS_8
async def test_on_a_cluster_two_nodes_share_one_numbering_and_a_member_resumes(
    ws_client: WsClientFactory, cluster: RedisCluster
) -> None:
    prefix = redis_prefix()
    a = ws_client(make_app(RedisClusterBackend(cluster.url, prefix=prefix)))
    b = ws_client(make_app(RedisClusterBackend(cluster.url, prefix=prefix)))
    async with a.connect("/ws/chat:1/") as on_a:
        epoch = (await joined_of(on_a))["epoch"]
        async with b.connect("/ws/chat:1/") as on_b:
            await joined_of(on_b)
            await a.post("/send/chat:1/?count=3", data="a")
            await b.post("/send/chat:1/?count=3", data="b")
            for ws in (on_a, on_b):
                got = [await ws.receive_group_message(timeout=5) for _ in range(6)]
                assert [m.offset for m in got] == [1, 2, 3, 4, 5, 6]
                assert [m.data for m in got] == ["a 1", "a 2", "a 3", "b 1", "b 2", "b 3"]
        await b.post("/send/chat:1/?count=4", data="missed")
        assert [(await on_a.receive_group_message(timeout=5)).offset for _ in range(4)] == [7, 8, 9, 10]
    async with b.connect(f"/ws/chat:1/?epoch={epoch}&offset=6") as ws:
        replayed = [(await ws.receive_group_message(timeout=5)).data for _ in range(4)]
        assert replayed == [f"missed {n}" for n in range(1, 5)]
        assert await joined_of(ws) == {"recovered": True, "epoch": epoch, "offset": 10}


@NEEDS_REDIS_8
async def test_on_a_cluster_a_worker_whose_shard_reconnected_delivers_what_it_missed(
    ws_client: WsClientFactory, cluster: RedisCluster
) -> None:
    prefix = redis_prefix()
    a = ws_client(make_app(RedisClusterBackend(cluster.url, prefix=prefix)))
    async with a.connect("/ws/chat:1/") as ws:
        await joined_of(ws)
        await a.post("/send/chat:1/", data="first")
        assert (await ws.receive_group_message(timeout=5)).offset == 1
        channel = cluster_group_channel(prefix, "chat:1")
        master = aioredis.Redis(host="127.0.0.1", port=cluster.owner_of(key_slot(channel.encode())))
        try:
            # Kept but never delivered live, as if published while the shard was away.
            lost = Envelope.group_send("chat:1", b'"while away"', 1, origin="f" * 8)
            nowhere = f"{prefix}nowhere:{{chat:1}}"
            arguments = _history.publish_arguments(prefix, "chat:1", nowhere, lost, History(100, 300), "SPUBLISH")
            await master.eval(_history.PUBLISH.text, *arguments)
            assert await master.client_kill_filter(_type="pubsub") >= 1  # this worker's shard connection
        finally:
            await master.aclose()
        message = await ws.receive_group_message(timeout=10)
        assert (message.offset, message.data) == (2, "while away")
        backend = a.app[REGISTRY_KEY].backend
        assert isinstance(backend, RedisClusterBackend)
        assert backend.stats.outages >= 1
