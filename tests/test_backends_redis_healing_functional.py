"""Redis presence heals and group-send losses are counted: Redis killed and restarted, or paused.

Several nodes in this process, each a real app on a real port with its own Redis backend, on a
private ``redis-server`` that the tests kill -9, restart and ``CLIENT PAUSE``. Every bound
asserted is the one docs/groups.md states; clients count what they got.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from tests.support.nodes import WsClient, member, node_app, redis_backend_of, wait_until_down, wait_until_up
from tests.support.rawclient import CLOSE, TEXT, TIMEOUT, RawWebsocket
from tests.support.redis_server import RedisServer
from tests.support.servers import Serve
from wsframe import BackendUnavailableError
from wsframe.backends import RedisBackend
from wsframe.registry import REGISTRY_KEY

OPERATION_TIMEOUT = 0.5
PRESENCE_TTL = 3.0
HEALED_WITHIN = PRESENCE_TTL / 3 + OPERATION_TIMEOUT
"""The bound docs/groups.md states: presence is right again within presence_ttl / 3 + operation_timeout
of Redis answering again."""
POLL = 0.05


def backend(server: RedisServer, *, max_backoff: float = 0.2) -> RedisBackend:
    return RedisBackend(
        server.url,
        prefix="heal:",
        operation_timeout=OPERATION_TIMEOUT,
        presence_ttl=PRESENCE_TTL,
        max_backoff=max_backoff,
    )


async def members_of(node: WsClient, group: str) -> set[str] | None:
    """What *node* says *group*'s members are, or None while it cannot ask Redis."""
    try:
        return await node.app[REGISTRY_KEY].group_members(group)
    except BackendUnavailableError:
        return None


async def seconds_until_every_node_lists(nodes: list[WsClient], group: str, expected: set[str]) -> float:
    """Seconds until every node's group_members(group) is *expected*, polling; fails past twice the bound."""
    start = time.monotonic()
    while time.monotonic() - start < 2 * HEALED_WITHIN + TIMEOUT:
        seen = [await members_of(node, group) for node in nodes]
        if all(members == expected for members in seen):
            return time.monotonic() - start
        await asyncio.sleep(POLL)
    raise AssertionError(f"group_members({group!r}) is still {seen}, not {sorted(expected)}")


async def drain(ws: RawWebsocket, until: str = "") -> list[str]:
    """Every text frame sent to *ws*: read up to *until* (if given), then until our own close is answered."""
    texts: list[str] = []
    while until and until not in texts:
        frame = await ws.read_frame(TIMEOUT)
        assert frame is not None
        texts.append(frame.text)
    ws.send_close(1000)
    frames = await ws.frames_until_eof(TIMEOUT, answer_close=False)
    assert frames[-1].opcode == CLOSE
    return texts + [frame.text for frame in frames if frame.opcode == TEXT]


async def test_presence_is_rebuilt_on_every_node_within_the_bound_after_redis_is_killed_and_restarted(
    serve: Serve, private_redis: RedisServer
) -> None:
    nodes = [await serve(node_app(backend(private_redis))) for _ in range(3)]
    members = [await member(node, "room") for node in nodes for _ in range(4)]
    live = {connection_id for _, connection_id in members}
    await seconds_until_every_node_lists(nodes, "room", live)
    private_redis.kill()
    for node in nodes:
        await wait_until_down(node)
    private_redis.start()  # empty: a restart without persistence forgot every member
    answering_again = time.monotonic()
    took = await seconds_until_every_node_lists(nodes, "room", live)
    assert time.monotonic() - answering_again <= HEALED_WITHIN, took
    assert all(redis_backend_of(node).stats.presence_refreshes >= 2 for node in nodes)


async def test_members_who_leave_while_redis_is_paused_are_gone_from_presence_within_the_bound(
    serve: Serve, private_redis: RedisServer
) -> None:
    nodes = [await serve(node_app(backend(private_redis))) for _ in range(2)]
    members = [await member(node, "room") for node in nodes for _ in range(5)]
    await seconds_until_every_node_lists(nodes, "room", {connection_id for _, connection_id in members})
    leavers, stayers = members[::2], [m for i, m in enumerate(members) if i % 2]
    admin = aioredis.Redis.from_url(private_redis.url)
    try:
        await admin.client_pause(2000)
        paused_until = time.monotonic() + 2.0
        for ws, _ in leavers:
            ws.send_close(1000)
        for ws, _ in leavers:
            await ws.frames_until_eof(TIMEOUT, answer_close=False)
        await asyncio.sleep(max(0.0, paused_until - time.monotonic()))
    finally:
        await admin.aclose()
    answering_again = time.monotonic()
    await seconds_until_every_node_lists(nodes, "room", {connection_id for _, connection_id in stayers})
    assert time.monotonic() - answering_again <= HEALED_WITHIN


async def test_group_sends_lost_while_a_receiver_resubscribes_after_a_restart_are_counted_by_that_receiver(
    serve: Serve, private_redis: RedisServer
) -> None:
    # The sender comes back at once; the receivers back off for up to 2 s, so sends that return
    # normally meanwhile reach no one on them.
    sender = await serve(node_app(backend(private_redis, max_backoff=0.05)))
    receivers = [await serve(node_app(backend(private_redis, max_backoff=2.0))) for _ in range(2)]
    groups = ["red", "blue"]
    clients = {
        (index, group): [await member(node, group) for _ in range(3)]
        for index, node in enumerate(receivers)
        for group in groups
    }
    registry = sender.app[REGISTRY_KEY]
    returned: dict[str, list[str]] = {group: [] for group in groups}

    async def send_round(number: int) -> None:
        for group in groups:
            text = f"{group} {number}"
            try:
                await registry.send_group(group, text)
            except BackendUnavailableError:
                continue
            returned[group].append(text)

    for number in range(10):
        await send_round(number)
    private_redis.kill()
    await wait_until_down(sender)
    await asyncio.sleep(1.5)  # long enough for the receivers' backoff to grow past a second
    private_redis.start()
    number = 10
    while not all(
        redis_backend_of(node)._down_since is None and redis_backend_of(node).stats.outages for node in receivers
    ):
        await send_round(number)
        number += 1
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the receivers' subscriptions confirmed, then one more round each sees
    await send_round(number)

    for index, node in enumerate(receivers):
        stats = redis_backend_of(node).stats
        missing: set[str] = set()
        for group in groups:
            for ws, _ in clients[(index, group)]:
                got = await drain(ws, until=returned[group][-1])  # the last round, sent once all were back
                assert len(got) == len(set(got))  # never twice
                missing |= set(returned[group]) - set(got)
        observed = len(missing)
        assert observed > 0, "the receivers came back before the sender: nothing was lost, nothing tested"
        assert stats.group_missed >= observed
        assert stats.group_member_deliveries_missed >= 3 * observed
        assert stats.group_gaps == 1


async def test_a_group_send_that_failed_mid_outage_reached_no_one_and_its_retry_reaches_every_member_once(
    serve: Serve, private_redis: RedisServer
) -> None:
    nodes = [await serve(node_app(backend(private_redis))) for _ in range(2)]
    members = [await member(node, "room") for node in nodes for _ in range(3)]
    registry = nodes[0].app[REGISTRY_KEY]
    private_redis.kill()
    await wait_until_down(nodes[0])
    with pytest.raises(BackendUnavailableError) as caught:
        await registry.send_group("room", "once")
    error = str(caught.value)
    assert "sent to no member, on this worker or any other" in error
    assert "Retry when Redis is back" in error
    private_redis.start()
    for node in nodes:
        await wait_until_up(redis_backend_of(node))
    await registry.send_group("room", "once")  # the retry the error asked for
    # A second send behind it marks the end: pub/sub keeps one publisher's order on a channel,
    # so a copy of "once" would come before "after" (reading only "once" races the other node).
    await registry.send_group("room", "after")
    assert [await drain(ws, until="after") for ws, _ in members] == [["once", "after"]] * len(members)


async def test_three_hundred_concurrent_joins_leave_at_most_three_redis_connections_per_worker(
    serve: Serve, private_redis: RedisServer
) -> None:
    node = await serve(node_app(backend(private_redis)))
    admin = aioredis.Redis.from_url(private_redis.url)
    try:
        for burst in range(2):
            joined = await asyncio.gather(*(member(node, f"room-{i % 10}") for i in range(300)))
            clients = await admin.client_list()
            ours = [c for c in clients if c.get("cmd") != "client|list"]
            assert len(ours) <= 3, (burst, len(ours))
            room = {connection_id for ws, connection_id in joined[::10]}
            await seconds_until_every_node_lists([node], "room-0", room)  # the last burst's leaves are done
            for ws, _ in joined:
                ws.send_close(1000)
            for ws, _ in joined:
                await ws.frames_until_eof(TIMEOUT, answer_close=False)
    finally:
        await admin.aclose()


async def test_group_sends_published_while_a_receiver_resubscribes_are_counted_by_the_sender_too(
    serve: Serve, private_redis: RedisServer
) -> None:
    sender = await serve(node_app(backend(private_redis)))
    receiver = await serve(node_app(backend(private_redis, max_backoff=2.0)))
    clients = [await member(receiver, "red") for _ in range(2)]
    registry = sender.app[REGISTRY_KEY]
    returned: list[str] = []
    admin = aioredis.Redis.from_url(private_redis.url)
    try:
        await registry.send_group("red", "before")
        returned.append("before")
        # Cut only the receiver's subscription (node channel plus one group: two channels).
        subscribers = [c for c in await admin.client_list() if int(c.get("sub", 0)) == 2]
        assert len(subscribers) == 1
        await admin.client_kill_filter(_id=subscribers[0]["id"])
        await wait_until_down(receiver)
        for number in range(20):
            await registry.send_group("red", f"gone {number}")
            returned.append(f"gone {number}")
    finally:
        await admin.aclose()
    await wait_until_up(redis_backend_of(receiver))
    await registry.send_group("red", "after")
    returned.append("after")
    observed = set()
    for ws, _ in clients:
        observed |= set(returned) - set(await drain(ws, until="after"))
    assert observed  # the first sends at least went out while the receiver was not subscribed
    assert redis_backend_of(sender).stats.group_underdelivered >= len(observed)
    assert redis_backend_of(receiver).stats.group_missed >= len(observed)


async def test_a_worker_that_shut_down_is_not_counted_as_missing_by_the_senders_afterwards(
    serve: Serve, private_redis: RedisServer
) -> None:
    sender = await serve(node_app(backend(private_redis)))
    leaving = await serve(node_app(backend(private_redis)))
    await member(leaving, "red")
    await sender.app[REGISTRY_KEY].send_group("red", "while it runs")
    await leaving.close()  # the app's shutdown: 1001 to its member, the backend stops
    await sender.app[REGISTRY_KEY].send_group("red", "after it left")
    assert redis_backend_of(sender).stats.group_underdelivered == 0
