"""The Redis Cluster backend on a real six-node cluster: placement, spread, Publisher, failover, migration.

The contract every backend keeps runs in ``test_backends_contract``; here is what only the
cluster does. Most tests share one cluster for the module; the failover test kills a master,
so it starts a cluster of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from redis.crc import key_slot

from tests.support.nodes import WsClient, connect, member, node_app, redis_prefix
from tests.support.rawclient import TEXT, TIMEOUT, Frame, RawWebsocket
from tests.support.redis_cluster import RedisCluster, own_cluster
from tests.support.servers import Serve
from wsframe import BackendUnavailableError, ConfigurationError, Publisher, create_app, send_message_to_group
from wsframe.backends import backend_from_url
from wsframe.backends.redis import RedisClusterBackend
from wsframe.backends.redis._keys import (
    cluster_alive_key,
    cluster_group_channel,
    cluster_members_key,
    cluster_node_channel,
)
from wsframe.registry import REGISTRY_KEY

# The cluster backend refuses redis-py before 8.0 (sharded pub/sub in asyncio); the lowest-versions job has 5.x.
NEEDS_REDIS_8 = pytest.mark.skipif(
    tuple(int(part) for part in importlib.metadata.version("redis").split(".")[:2]) < (8, 0),
    reason="the Redis Cluster backend needs redis-py 8.0 or newer",
)
pytestmark = NEEDS_REDIS_8


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with own_cluster() as started:
        yield started


@contextlib.asynccontextmanager
async def cluster_nodes(serve: Serve, url: str, count: int) -> AsyncIterator[list[WsClient]]:
    prefix = redis_prefix()
    nodes = [await serve(node_app(RedisClusterBackend(url, prefix=prefix))) for _ in range(count)]
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.close()


def backend_of(node: WsClient) -> RedisClusterBackend:
    backend = node.app[REGISTRY_KEY].backend
    assert isinstance(backend, RedisClusterBackend)
    return backend


# ------------------------------------------------------------ configuration


def test_a_cluster_url_given_as_redis_chooses_the_cluster_backend_with_its_startup_nodes() -> None:
    app = create_app({}, redis="redis+cluster://10.0.0.1:7000,10.0.0.2:7001")
    backend = app[REGISTRY_KEY].backend
    assert isinstance(backend, RedisClusterBackend)
    assert backend.location.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))


def test_a_cluster_url_given_as_backend_chooses_the_cluster_backend() -> None:
    assert isinstance(backend_from_url("redis+cluster://127.0.0.1:7000"), RedisClusterBackend)


def test_a_cluster_url_keeps_its_password_out_of_the_url_shown() -> None:
    backend = RedisClusterBackend("redis+cluster://app:s3cret@10.0.0.1:7000")
    assert (backend.location.username, backend.location.password) == ("app", "s3cret")
    assert backend.url == "redis+cluster://app:***@10.0.0.1:7000"


@pytest.mark.parametrize("url", ["redis+cluster://", "redis+cluster://host", "redis+cluster://h:1,h:port"])
def test_a_cluster_url_without_host_and_port_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="not a Redis Cluster URL"):
        RedisClusterBackend(url)


def test_a_prefix_with_braces_is_a_configuration_error_as_it_would_break_the_hash_tags() -> None:
    with pytest.raises(ConfigurationError, match="hash tags"):
        RedisClusterBackend("redis+cluster://127.0.0.1:7000", prefix="{app}:")


def test_a_nodes_channel_and_liveness_key_share_a_slot_and_so_do_a_groups_channel_and_members() -> None:
    node_slots = {
        key_slot(name.encode())
        for name in (cluster_node_channel("p:", "ab12cd34"), cluster_alive_key("p:", "ab12cd34"))
    }
    group_slots = {
        key_slot(name.encode()) for name in (cluster_group_channel("p:", "room:1"), cluster_members_key("p:", "room:1"))
    }
    assert (len(node_slots), len(group_slots)) == (1, 1)
    assert node_slots == {key_slot(b"ab12cd34")}
    assert group_slots == {key_slot(b"room:1")}


# --------------------------------------------------------- on the cluster


def sharded_subscribers(cluster: RedisCluster, port: int) -> int:
    """How many clients of the master on *port* hold shard-channel subscriptions."""
    lines = cluster.cli(port, "CLIENT", "LIST").splitlines()
    return sum(1 for line in lines if " ssub=" in line and " ssub=0 " not in line)


async def test_a_worker_with_groups_on_every_master_holds_one_subscriber_connection_per_master(
    cluster: RedisCluster, serve: Serve
) -> None:
    async with cluster_nodes(serve, cluster.url, 1) as [node]:
        for n in range(30):
            await member(node, f"room-{n}")
        assert len(backend_of(node).shards) == 3
        assert [sharded_subscribers(cluster, port) for port in cluster.masters()] == [1, 1, 1]


async def test_group_sends_to_300_groups_spread_the_spublish_calls_over_the_three_masters(
    cluster: RedisCluster, serve: Serve
) -> None:
    async with cluster_nodes(serve, cluster.url, 2) as [sender, owner]:
        clients = [(await member(owner, f"g{n}"))[0] for n in range(300)]
        masters = cluster.masters()
        for port in masters:
            cluster.cli(port, "CONFIG", "RESETSTAT")
        for n in range(300):
            await send_message_to_group(f"g{n}", n, app=sender.app)
        for n, ws in enumerate(clients):
            assert await ws.read_frame(TIMEOUT) == Frame(TEXT, str(n).encode())
        calls = [spublish_calls(cluster, port) for port in masters]
    shares = [round(c / sum(calls), 3) for c in calls]
    print(f"cmdstat_spublish calls per master {calls}, shares {shares}")
    assert sum(calls) == 300
    assert all(0.2 <= share <= 0.5 for share in shares)


def spublish_calls(cluster: RedisCluster, port: int) -> int:
    for line in cluster.cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_spublish:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_publisher_reaches_connections_and_groups_and_sees_presence_on_the_cluster(
    cluster: RedisCluster, serve: Serve
) -> None:
    prefix = redis_prefix()
    nodes = [await serve(node_app(RedisClusterBackend(cluster.url, prefix=prefix))) for _ in range(2)]
    ws, connection_id = await connect(nodes[0])
    members = [await member(node, "lobby") for node in nodes]
    with Publisher(cluster.url, prefix=prefix) as publisher:
        assert await asyncio.to_thread(publisher.send_message_to_websocket, connection_id, "direct") is True
        assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"direct")
        assert await asyncio.to_thread(publisher.send_message_to_group, "lobby", "to all") == 2
        for member_ws, _ in members:
            assert await member_ws.read_frame(TIMEOUT) == Frame(TEXT, b"to all")
        assert await asyncio.to_thread(publisher.group_members, "lobby") == {cid for _, cid in members}
    for node in nodes:
        await node.close()


# ------------------------------------------------------------------ faults


async def numbers(ws: RawWebsocket, until: float) -> list[tuple[float, int]]:
    """The numbers *ws* receives, with when each arrived, until *until* (monotonic)."""
    got = []
    while (left := until - time.monotonic()) > 0:
        try:
            frame = await ws.read_frame(min(left, 1.0))
        except AssertionError:  # nothing within the second: the outage; keep waiting
            continue
        if frame is None:
            break
        got.append((time.monotonic(), int(frame.text)))
    return got


async def send_numbers(send: Callable[[int], Awaitable[object]], stop: asyncio.Event, failures: list[str]) -> None:
    """Send 0, 1, 2... every 20 ms with *send* until *stop*; keep the text of each BackendUnavailableError."""
    n = 0
    while not stop.is_set():
        try:
            await send(n)
        except BackendUnavailableError as exc:
            failures.append(str(exc))
        n += 1
        await asyncio.sleep(0.02)


async def test_killing_the_master_of_a_workers_channel_resumes_delivery_after_the_failover_counted_and_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "wsframe.backends.redis")
    with own_cluster() as cluster:
        async with cluster_nodes(serve, cluster.url, 2) as [sender, owner]:
            ws, connection_id = await connect(owner)
            channel = cluster_node_channel(backend_of(owner).prefix, owner.app[REGISTRY_KEY].node_id)
            victim = cluster.owner_of(key_slot(channel.encode()))
            stop, failures = asyncio.Event(), list[str]()
            registry = sender.app[REGISTRY_KEY]
            sending = asyncio.ensure_future(send_numbers(lambda n: registry.send(connection_id, n), stop, failures))
            before = await numbers(ws, time.monotonic() + 1)
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill, victim)
            after = await numbers(ws, time.monotonic() + 15)
            stop.set()
            await sending
            stats = backend_of(owner).stats
    got = [n for _, n in before + after]
    arrivals = before + after
    # The first number after the gap the outage left: delivery had resumed then.
    resumed = next(at for (_, m), (at, n) in itertools.pairwise(arrivals) if n != m + 1) - killed_at
    print(f"failover: delivery resumed {resumed:.2f} s after the kill; {len(failures)} sends failed")
    assert before
    assert after
    assert got == sorted(set(got))  # in order, never twice
    assert resumed < 10
    assert stats.outages >= 1
    assert any(f"shard 127.0.0.1:{victim}" in text for text in failures)
    assert f"Redis Cluster shard 127.0.0.1:{victim} is unreachable" in caplog.text


async def test_migrating_a_groups_slot_mid_traffic_resumes_group_delivery_counted_and_logged(
    cluster: RedisCluster, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "wsframe.backends.redis")
    async with cluster_nodes(serve, cluster.url, 2) as [sender, owner]:
        ws, _ = await member(owner, "moving")
        slot = key_slot(b"moving")
        target = next(port for port in cluster.masters() if port != cluster.owner_of(slot))
        stop, failures = asyncio.Event(), list[str]()
        sending = asyncio.ensure_future(
            send_numbers(lambda n: send_message_to_group("moving", n, app=sender.app), stop, failures)
        )
        before = await numbers(ws, time.monotonic() + 1)
        await asyncio.to_thread(cluster.migrate_slot, slot, target)
        moved_at = time.monotonic()
        after = await numbers(ws, time.monotonic() + 5)
        stop.set()
        await sending
        stats = backend_of(owner).stats
    got = [n for _, n in before + after]
    late = [at for at, _ in after if at > moved_at + 1]
    print(f"migration: {len(failures)} sends failed, {stats.reroutes} reroute(s)")
    assert cluster.owner_of(slot) == target
    assert got == sorted(set(got))
    assert late  # still delivered well after the move
    assert stats.reroutes >= 1
    assert "dropped channel" in caplog.text
