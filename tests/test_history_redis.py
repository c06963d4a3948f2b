"""History groups on real Redis: one numbering across nodes, resume, the keys, gap fill, a Redis restarted empty."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.apps.history_app import make_app
from tests.support.history import joined_of, path
from tests.support.nodes import redis_prefix, wait_until_up
from tests.support.redis_server import SHARED_REDIS_URL, own_redis
from wsframe import History, Publisher, send_message_to_group
from wsframe.backends import RedisBackend
from wsframe.backends.base import Envelope
from wsframe.backends.redis import _history
from wsframe.history import HistoryFrame, Position
from wsframe.registry import REGISTRY_KEY
from wsframe.testing import WebsocketTestClient, WebsocketTestConnection, WsClientFactory

SHORT = 0.1


def node(ws_client: WsClientFactory, prefix: str, url: str = SHARED_REDIS_URL, **options: Any) -> WebsocketTestClient:
    return ws_client(make_app(RedisBackend(url, prefix=prefix, **options)))


def backend_of(client: WebsocketTestClient) -> RedisBackend:
    backend = client.app[REGISTRY_KEY].backend
    assert isinstance(backend, RedisBackend)
    return backend


async def messages(ws: WebsocketTestConnection, count: int) -> list[HistoryFrame]:
    return [await ws.receive_group_message(timeout=5) for _ in range(count)]


async def nothing_more(ws: WebsocketTestConnection) -> bool:
    with pytest.raises(TimeoutError):
        await ws.receive(timeout=SHORT)
    return True


async def test_sends_from_two_nodes_share_one_numbering_seen_in_order_by_every_member(
    ws_client: WsClientFactory,
) -> None:
    prefix = redis_prefix()
    a, b = node(ws_client, prefix), node(ws_client, prefix)
    async with a.connect(path("chat:1")) as on_a, b.connect(path("chat:1")) as on_b:
        epoch = (await joined_of(on_a))["epoch"]
        assert (await joined_of(on_b))["epoch"] == epoch
        sends = [
            send_message_to_group("chat:1", f"{name}{n}", app=client.app)
            for n in range(20)
            for name, client in (("a", a), ("b", b))
        ]
        await asyncio.gather(*sends)
        for ws in (on_a, on_b):
            got = await messages(ws, 40)
            assert [m.offset for m in got] == list(range(1, 41))
            assert {m.epoch for m in got} == {epoch}
            assert sorted(m.data for m in got) == sorted(f"{x}{n}" for n in range(20) for x in "ab")
            assert await nothing_more(ws)


async def test_a_member_resumes_on_another_node_with_every_message_it_missed(ws_client: WsClientFactory) -> None:
    prefix = redis_prefix()
    a, b = node(ws_client, prefix), node(ws_client, prefix)
    async with b.connect(path("chat:1")) as ws:
        epoch = (await joined_of(ws))["epoch"]
        assert (await a.post("/send/chat:1/?count=5", data="m")).status == 200
        seen = await messages(ws, 5)
    assert (await a.post("/send/chat:1/?count=10", data="later")).status == 200
    async with a.connect(path("chat:1", seen[-1].position)) as ws:
        replayed = await messages(ws, 10)
        assert [(m.offset, m.data) for m in replayed] == [(5 + n, f"later {n}") for n in range(1, 11)]
        assert await joined_of(ws) == {"recovered": True, "epoch": epoch, "offset": 15}
        await b.post("/send/chat:1/", data="live")
        live = await ws.receive_group_message(timeout=5)
        assert (live.offset, live.data) == (16, "live")


async def test_resuming_from_before_the_last_size_messages_replays_nothing(ws_client: WsClientFactory) -> None:
    prefix = redis_prefix()
    a = ws_client(make_app(RedisBackend(SHARED_REDIS_URL, prefix=prefix), size=10))
    async with a.connect(path("chat:1")) as ws:
        epoch = (await joined_of(ws))["epoch"]
    await a.post("/send/chat:1/?count=25", data="m")
    async with a.connect(path("chat:1", (epoch, 14))) as ws:
        assert await joined_of(ws) == {"recovered": False, "epoch": epoch, "offset": 25}
        assert await nothing_more(ws)
    async with a.connect(path("chat:1", (epoch, 15))) as ws:
        assert [m.offset for m in await messages(ws, 10)] == list(range(16, 26))
        assert (await joined_of(ws))["recovered"] is True


async def test_the_stream_and_position_live_under_the_prefix_with_a_ttl_and_a_bounded_length(
    ws_client: WsClientFactory,
) -> None:
    prefix = redis_prefix()
    a = ws_client(make_app(RedisBackend(SHARED_REDIS_URL, prefix=prefix), size=10, ttl=30))
    async with a.connect(path("chat:1")) as ws:
        await joined_of(ws)
    await a.post("/send/chat:1/?count=300", data="m")
    client = aioredis.Redis.from_url(SHARED_REDIS_URL)
    try:
        stream, meta = _history.history_key(prefix, "chat:1"), _history.history_meta_key(prefix, "chat:1")
        assert stream == f"{prefix}history:{{chat:1}}"
        assert meta == f"{prefix}history-meta:{{chat:1}}"
        assert 10 <= await client.xlen(stream) < 300  # MAXLEN ~ trims in whole nodes of the stream
        assert 0 < await client.pttl(stream) <= 30_000
        assert await client.pttl(meta) > 30_000  # the position outlives the messages
        assert int(await client.hget(meta, "o")) == 300
    finally:
        await client.aclose()


async def test_a_message_lost_on_the_way_is_filled_from_history_before_the_next(ws_client: WsClientFactory) -> None:
    prefix = redis_prefix()
    a = node(ws_client, prefix)
    async with a.connect(path("chat:1")) as ws:
        await joined_of(ws)
        await a.post("/send/chat:1/", data="first")
        assert (await ws.receive_group_message(timeout=5)).offset == 1
        # The script run for real, but published where nobody listens: kept, never delivered live.
        lost = Envelope.group_send("chat:1", b'"lost"', 1, origin="f" * 8)
        arguments = _history.publish_arguments(prefix, "chat:1", f"{prefix}nowhere", lost, History(100, 300))
        client = aioredis.Redis.from_url(SHARED_REDIS_URL)
        try:
            assert (await client.eval(_history.PUBLISH.text, *arguments))[2] == 0
        finally:
            await client.aclose()
        await a.post("/send/chat:1/", data="third")
        got = await messages(ws, 2)
        assert [(m.offset, m.data) for m in got] == [(2, "lost"), (3, "third")]
        assert a.app[REGISTRY_KEY].history_stats.gaps_filled == 1


async def test_a_redis_restarted_empty_is_a_new_epoch_and_members_are_told(ws_client: WsClientFactory) -> None:
    with own_redis() as server:
        prefix = redis_prefix()
        a = node(ws_client, prefix, server.url)
        b = node(ws_client, prefix, server.url)
        async with a.connect(path("chat:1")) as on_a, b.connect(path("chat:1")) as on_b:
            old = (await joined_of(on_a))["epoch"]
            await joined_of(on_b)
            await a.post("/send/chat:1/?count=3", data="before")
            for ws in (on_a, on_b):
                assert [m.offset for m in await messages(ws, 3)] == [1, 2, 3]
            server.kill()
            server.start()
            for client in (a, b):
                await wait_until_up(backend_of(client))
            await a.post("/send/chat:1/?count=2", data="after")
            for ws in (on_a, on_b):
                signal, *after = await messages(ws, 3)
                assert signal.recovered is False
                assert signal.epoch != old
                assert [(m.epoch, m.offset, m.data) for m in after] == [
                    (signal.epoch, 1, "after 1"),
                    (signal.epoch, 2, "after 2"),
                ]
                assert await nothing_more(ws)
        async with b.connect(path("chat:1", (old, 3))) as ws:
            joined = await joined_of(ws)
            assert (joined["recovered"], joined["offset"]) == (False, 2)
            assert joined["epoch"] != old


async def test_the_publisher_numbers_history_sends_into_the_apps_sequence(ws_client: WsClientFactory) -> None:
    prefix = redis_prefix()
    a = node(ws_client, prefix)
    async with a.connect(path("chat:1")) as ws:
        epoch = (await joined_of(ws))["epoch"]
        await a.post("/send/chat:1/", data="from the app")
        with Publisher(SHARED_REDIS_URL, prefix=prefix, history={"chat:": History(100, 300)}) as publisher:
            assert publisher.send_message_to_group("chat:1", {"from": "publisher"}) == 1
            with pytest.raises(TypeError, match="JSON only"):
                publisher.send_message_to_group("chat:1", b"bytes")
        got = await messages(ws, 2)
        assert [(m.epoch, m.offset, m.data) for m in got] == [
            (epoch, 1, "from the app"),
            (epoch, 2, {"from": "publisher"}),
        ]


async def test_a_send_around_the_history_script_is_dropped_and_counted(
    ws_client: WsClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = redis_prefix()
    a = node(ws_client, prefix)
    async with a.connect(path("chat:1")) as ws:
        await joined_of(ws)
        with Publisher(SHARED_REDIS_URL, prefix=prefix) as publisher:  # not told about history
            assert publisher.send_message_to_group("chat:1", "unnumbered") == 1
            assert publisher.send_message_to_group("room:1", "fine") == 0
        await a.post("/send/chat:1/", data="numbered")
        message = await ws.receive_group_message(timeout=5)
        assert (message.offset, message.data) == (1, "numbered")
        assert a.app[REGISTRY_KEY].history_stats.unnumbered == 1
        assert "give every sender, Publisher included, the app's history= setting" in caplog.text


async def test_many_members_resuming_at_once_while_sends_go_on_each_get_every_offset_once_in_order(
    ws_client: WsClientFactory,
) -> None:
    prefix = redis_prefix()
    a, b = node(ws_client, prefix), node(ws_client, prefix)
    async with b.connect(path("chat:1")) as first:
        epoch = (await joined_of(first))["epoch"]
        await b.post("/send/chat:1/?count=30", data="before")
        assert len(await messages(first, 30)) == 30
    starts = [n % 30 for n in range(20)]  # each resumes from its own position
    await a.start()  # once, before the connections race to it

    async def resume(start: int) -> list[int]:
        async with a.connect(path("chat:1", (epoch, start))) as ws:
            offsets: list[int] = []
            joined = None
            while joined is None or not offsets or offsets[-1] < 50:
                frame = await ws.receive_json(timeout=5)
                if "joined" in frame:
                    joined = frame["joined"]
                else:
                    offsets.append(frame["offset"])
            assert joined["recovered"] is True
            assert await nothing_more(ws)
            return offsets

    async def keep_sending() -> None:
        for n in range(20):
            await b.post("/send/chat:1/", data=f"during {n}")

    *seen, _ = await asyncio.gather(*(resume(start) for start in starts), keep_sending())
    for start, offsets in zip(starts, seen, strict=True):
        assert offsets == list(range(start + 1, 51))


async def test_after_its_listener_reconnects_a_worker_delivers_what_it_missed_without_waiting_for_a_send(
    ws_client: WsClientFactory,
) -> None:
    with own_redis() as server:
        prefix = redis_prefix()
        a = node(ws_client, prefix, server.url)
        async with a.connect(path("chat:1")) as ws:
            await joined_of(ws)
            await a.post("/send/chat:1/", data="first")
            assert (await ws.receive_group_message(timeout=5)).offset == 1
            client = aioredis.Redis.from_url(server.url)
            try:
                # Kept but never delivered live, as if published while the listener was away.
                lost = Envelope.group_send("chat:1", b'"while away"', 1, origin="f" * 8)
                arguments = _history.publish_arguments(prefix, "chat:1", f"{prefix}nowhere", lost, History(100, 300))
                await client.eval(_history.PUBLISH.text, *arguments)
                assert await client.client_kill_filter(_type="pubsub") == 1  # the worker's listener
            finally:
                await client.aclose()
            await wait_until_up(backend_of(a))
            message = await ws.receive_group_message(timeout=5)
            assert (message.offset, message.data) == (2, "while away")
            assert a.app[REGISTRY_KEY].history_stats.gaps_filled == 1


@pytest.mark.parametrize("since", [("", 0), ("", 3)])
async def test_an_empty_epoch_is_a_position_of_no_epoch_not_a_first_visit(
    ws_client: WsClientFactory, since: Position
) -> None:
    prefix = redis_prefix()
    a = node(ws_client, prefix)
    await a.post("/send/chat:1/?count=3", data="m")
    async with a.connect(path("chat:1", since)) as ws:
        joined = await joined_of(ws)
        assert (joined["recovered"], joined["offset"]) == (False, 3)
