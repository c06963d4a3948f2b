"""The Redis backend beyond the contract (test_backends_contract): ordering, prefixes, bad input,
outages and reconnection, startup and configuration. Real redis-server only."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from tests.support.nodes import (
    Announce,
    WsClient,
    connect,
    node_app,
    redis_backend_of,
    wait_until_down,
    wait_until_up,
)
from tests.support.rawclient import TEXT, TIMEOUT, Frame
from tests.support.redis_server import SHARED_REDIS_URL, RedisServer
from tests.support.servers import Serve, free_port
from wsframe import BackendUnavailableError, ConfigurationError, create_app
from wsframe.backends import RedisBackend, resolve_backend
from wsframe.backends.base import Envelope, encode_envelope
from wsframe.backends.redis import node_channel, redacted_url
from wsframe.registry import REGISTRY_KEY, Registry


def redis_node(url: str, prefix: str, **options: float) -> web.Application:
    return node_app(RedisBackend(url, prefix=prefix, **options))


@pytest.fixture
async def two_nodes(serve: Serve, prefix: str) -> tuple[WsClient, WsClient]:
    return await serve(redis_node(SHARED_REDIS_URL, prefix)), await serve(redis_node(SHARED_REDIS_URL, prefix))


# ------------------------------------------------------------------ delivery


async def test_same_process_send_works_while_redis_is_down(serve: Serve, private_redis: RedisServer) -> None:
    client = await serve(redis_node(private_redis.url, "p:"))
    ws, connection_id = await connect(client)
    private_redis.kill()
    await client.app[REGISTRY_KEY].send(connection_id, "no bus hop")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"no bus hop")
    assert redis_backend_of(client).stats.published == 0


# -------------------------------------------------------------------- prefix


async def test_the_node_channel_lives_under_the_prefix(serve: Serve, prefix: str) -> None:
    client = await serve(redis_node(SHARED_REDIS_URL, prefix))
    redis = aioredis.Redis.from_url(SHARED_REDIS_URL)
    try:
        channels = await redis.pubsub_channels(f"{prefix}*")
    finally:
        await redis.aclose()
    assert channels == [node_channel(prefix, client.app[REGISTRY_KEY].node_id).encode()]


async def test_apps_with_different_prefixes_do_not_reach_each_other(serve: Serve, prefix: str) -> None:
    sender = await serve(redis_node(SHARED_REDIS_URL, prefix + "a:"))
    owner = await serve(redis_node(SHARED_REDIS_URL, prefix + "b:"))
    _ws, connection_id = await connect(owner)
    await sender.app[REGISTRY_KEY].send(connection_id, "wrong app")
    assert redis_backend_of(sender).stats.unrouted == 1
    await sender.app[REGISTRY_KEY].close(connection_id, 4000, "")
    await asyncio.sleep(0.2)
    assert redis_backend_of(owner).stats.delivered == 0


# ------------------------------------------------------------ bad input, gone


async def test_undecodable_message_is_skipped_and_the_listener_keeps_delivering(
    two_nodes: tuple[WsClient, WsClient], prefix: str
) -> None:
    sender, owner = two_nodes
    ws, connection_id = await connect(owner)
    redis = aioredis.Redis.from_url(SHARED_REDIS_URL)
    try:
        channel = node_channel(prefix, owner.app[REGISTRY_KEY].node_id)
        await redis.publish(channel, b"\xc1 not msgpack")
        await redis.publish(channel, b"\x93\xa4nope\x01\x02")  # msgpack, not an envelope
    finally:
        await redis.aclose()
    await sender.app[REGISTRY_KEY].send(connection_id, "still here")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"still here")
    assert redis_backend_of(owner).stats.bad_messages == 2


async def test_envelope_for_a_connection_that_is_gone_is_dropped(two_nodes: tuple[WsClient, WsClient]) -> None:
    sender, owner = two_nodes
    ws, connection_id = await connect(owner)
    gone = owner.app[REGISTRY_KEY].node_id + "0" * 24
    await sender.app[REGISTRY_KEY].send(gone, "to nobody")
    await sender.app[REGISTRY_KEY].send(connection_id, "to somebody")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"to somebody")
    assert redis_backend_of(owner).stats.delivered == 2
    assert redis_backend_of(owner).stats.bad_messages == 0


async def test_send_to_a_node_nobody_listens_for_is_dropped_and_counted(serve: Serve, prefix: str) -> None:
    client = await serve(redis_node(SHARED_REDIS_URL, prefix))
    await client.app[REGISTRY_KEY].send("deadbeef" + "0" * 24, "anyone?")
    stats = redis_backend_of(client).stats
    assert (stats.published, stats.unrouted, stats.possibly_lost) == (1, 1, 1)


async def test_id_whose_node_part_is_not_hex_is_dropped_without_publishing(serve: Serve, prefix: str) -> None:
    client = await serve(redis_node(SHARED_REDIS_URL, prefix))
    await client.app[REGISTRY_KEY].send("../../x" + "0" * 25, "anyone?")
    assert redis_backend_of(client).stats.published == 0


# ------------------------------------------------------------------- outages


async def test_three_hundred_concurrent_sends_all_arrive_in_the_order_they_were_made(
    two_nodes: tuple[WsClient, WsClient],
) -> None:
    # redis-py's connection pool raises MaxConnectionsError past 100 commands in
    # flight; wsframe's sends share one connection, batched, instead.
    sender, owner = two_nodes
    ws, connection_id = await connect(owner)
    registry = sender.app[REGISTRY_KEY]
    await asyncio.gather(*(registry.send(connection_id, f"m{i}") for i in range(300)))
    received = [(await ws.read_frame(TIMEOUT)) for _ in range(300)]
    assert [frame.text for frame in received if frame is not None] == [f"m{i}" for i in range(300)]
    assert redis_backend_of(sender).stats.publish_failures == 0


async def test_three_hundred_concurrent_joins_wait_for_a_connection_instead_of_failing(
    serve: Serve, prefix: str
) -> None:
    # Thousands of clients connecting at once each join a group: more Redis
    # commands in flight than the pool has connections.
    node = await serve(redis_node(SHARED_REDIS_URL, prefix))
    backend, node_id = redis_backend_of(node), node.app[REGISTRY_KEY].node_id
    ids = {f"{node_id}{i:024x}" for i in range(300)}
    await asyncio.gather(*(backend.group_joined("storm", member, first_here=False) for member in ids))
    assert await backend.group_members("storm") == ids
    assert backend.stats.publish_failures == 0


async def test_a_send_cancelled_while_it_waits_for_its_batch_is_not_published(
    two_nodes: tuple[WsClient, WsClient],
) -> None:
    sender, owner = two_nodes
    ws, connection_id = await connect(owner)
    backend, node_id = redis_backend_of(sender), connection_id[:8]
    given_up = asyncio.ensure_future(backend.publish_to_node(node_id, Envelope("send", connection_id, b"given up")))
    kept = asyncio.ensure_future(backend.publish_to_node(node_id, Envelope("send", connection_id, b"kept")))
    await asyncio.sleep(0)  # both are queued for the next batch, which has not gone out yet
    given_up.cancel()
    await kept
    with pytest.raises(asyncio.CancelledError):
        await given_up
    await backend.publish_to_node(node_id, Envelope("send", connection_id, b"after"))
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"kept")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"after")


async def test_publish_to_a_hung_redis_raises_backend_unavailable_instead_of_hanging(
    serve: Serve, private_redis: RedisServer
) -> None:
    client = await serve(redis_node(private_redis.url, "p:", operation_timeout=0.3))
    private_redis.pause()
    with pytest.raises(BackendUnavailableError, match="did not take the send"):
        await client.app[REGISTRY_KEY].send("deadbeef" + "0" * 24, "stuck")


async def test_listener_notices_a_silent_redis_through_pings(serve: Serve, private_redis: RedisServer) -> None:
    client = await serve(redis_node(private_redis.url, "p:", health_check_interval=0.1, operation_timeout=0.2))
    private_redis.pause()
    await wait_until_down(client)
    assert redis_backend_of(client).stats.outages == 1


async def test_an_idle_listener_whose_pings_are_answered_stays_up(serve: Serve, prefix: str) -> None:
    sender = await serve(redis_node(SHARED_REDIS_URL, prefix))
    owner = await serve(redis_node(SHARED_REDIS_URL, prefix, health_check_interval=0.05))
    ws, connection_id = await connect(owner)
    await asyncio.sleep(0.5)  # ten idle intervals, each ended by a PING
    await sender.app[REGISTRY_KEY].send(connection_id, "still subscribed")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"still subscribed")
    assert redis_backend_of(owner).stats.outages == 0


async def test_a_stalled_event_loop_is_not_taken_for_a_redis_outage(serve: Serve, prefix: str) -> None:
    sender = await serve(redis_node(SHARED_REDIS_URL, prefix))
    owner = await serve(redis_node(SHARED_REDIS_URL, prefix, health_check_interval=0.1))
    ws, connection_id = await connect(owner)
    await asyncio.sleep(0.15)  # the listener is idle, waiting on Redis
    time.sleep(0.6)  # noqa: ASYNC251 - the point: a GC pause or blocking handler, six intervals long
    await asyncio.sleep(0.3)  # three more intervals for the listener to judge what happened
    assert redis_backend_of(owner).stats.outages == 0
    assert redis_backend_of(owner).stats.loop_stalls >= 1
    await sender.app[REGISTRY_KEY].send(connection_id, "still subscribed")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"still subscribed")


async def test_listener_resubscribes_after_a_redis_restart_and_delivery_resumes(
    serve: Serve, private_redis: RedisServer
) -> None:
    sender = await serve(redis_node(private_redis.url, "p:"))
    owner = await serve(redis_node(private_redis.url, "p:"))
    ws, connection_id = await connect(owner)
    private_redis.kill()
    await wait_until_down(owner)
    private_redis.start()
    await wait_until_up(redis_backend_of(owner))
    await wait_until_up(redis_backend_of(sender))
    await sender.app[REGISTRY_KEY].send(connection_id, "after the restart")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"after the restart")


async def test_outage_is_logged_once_with_its_duration(
    serve: Serve, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = await serve(redis_node(private_redis.url, "p:", max_backoff=0.05))
    caplog.set_level(logging.WARNING, logger="wsframe.backends.redis")
    private_redis.kill()
    await wait_until_down(client)
    await asyncio.sleep(0.5)  # several reconnect attempts fail meanwhile
    private_redis.start()
    await wait_until_up(redis_backend_of(client))
    messages = [r.getMessage() for r in caplog.records if r.name == "wsframe.backends.redis"]
    assert len(messages) == 2
    assert "is unreachable" in messages[0]
    assert "reachable again after" in messages[1]
    assert redis_backend_of(client).stats.outages == 1
    assert redis_backend_of(client).stats.outage_seconds >= 0.5


async def test_failed_publishes_during_an_outage_are_counted_as_possibly_lost(
    serve: Serve, private_redis: RedisServer
) -> None:
    client = await serve(redis_node(private_redis.url, "p:"))
    private_redis.kill()
    await wait_until_down(client)
    for _ in range(3):
        with pytest.raises(BackendUnavailableError, match=r"Redis at redis://127\.0\.0\.1:\d+/0 has been unreachable"):
            await client.app[REGISTRY_KEY].send("deadbeef" + "0" * 24, "lost")
    assert redis_backend_of(client).stats.possibly_lost == 3


# ------------------------------------------------------------------- startup


async def test_unreachable_redis_at_startup_raises_naming_the_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}/3"
    backend = RedisBackend(url)
    with pytest.raises(BackendUnavailableError, match=rf"Redis at {url} is unreachable at startup"):
        await backend.on_startup(Registry(backend))


async def test_password_in_the_url_is_not_shown_in_errors() -> None:
    backend = RedisBackend(f"redis://user:s3cret@127.0.0.1:{free_port()}/0")
    with pytest.raises(BackendUnavailableError) as caught:
        await backend.on_startup(Registry(backend))
    assert "s3cret" not in str(caught.value)
    assert "user:***@127.0.0.1" in str(caught.value)


def test_redacted_url_keeps_a_url_without_password() -> None:
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


async def test_a_client_you_pass_is_used_and_left_open(serve: Serve, prefix: str) -> None:
    redis = aioredis.Redis.from_url(SHARED_REDIS_URL)
    try:
        sender = await serve(node_app(RedisBackend(redis, prefix=prefix)))
        owner = await serve(redis_node(SHARED_REDIS_URL, prefix))
        ws, connection_id = await connect(owner)
        await sender.app[REGISTRY_KEY].send(connection_id, "via your client")
        assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"via your client")
        await sender.close()
        assert await redis.ping() is True
    finally:
        await redis.aclose()


# ------------------------------------------------------------- configuration


def test_client_with_decode_responses_is_rejected() -> None:
    client = aioredis.Redis.from_url(SHARED_REDIS_URL, decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisBackend(client)


def test_url_with_an_unknown_scheme_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="not a Redis URL"):
        RedisBackend("http://127.0.0.1:6379/0")


def test_something_that_is_neither_url_nor_client_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="got int"):
        RedisBackend(6379)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", None, b"wsframe:"])
def test_prefix_must_be_a_non_empty_string(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="prefix must be a non-empty string"):
        RedisBackend(SHARED_REDIS_URL, prefix=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["operation_timeout", "health_check_interval", "max_backoff"])
def test_timeouts_must_be_positive(option: str) -> None:
    with pytest.raises(ConfigurationError, match=option):
        RedisBackend(SHARED_REDIS_URL, **{option: 0})  # type: ignore[arg-type]


def test_create_app_with_a_redis_url_uses_the_redis_backend() -> None:
    app = create_app({"ws/": Announce}, redis=SHARED_REDIS_URL)
    backend = app[REGISTRY_KEY].backend
    assert isinstance(backend, RedisBackend)
    assert (backend.url, backend.prefix) == (SHARED_REDIS_URL, "wsframe:")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6380/0", "unix:///tmp/redis.sock"])
def test_backend_url_with_a_redis_scheme_selects_the_redis_backend(url: str) -> None:
    assert isinstance(resolve_backend(url), RedisBackend)


def test_passing_both_backend_and_redis_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="either backend= or redis="):
        create_app({"ws/": Announce}, backend="memory://", redis=SHARED_REDIS_URL)


def test_envelope_encoding_round_trips_through_the_wire_format() -> None:
    envelope = Envelope("send", "deadbeef" + "0" * 24, payload=b"\x00", opcode=2)
    assert msgspec.msgpack.decode(encode_envelope(envelope), type=Envelope) == envelope
