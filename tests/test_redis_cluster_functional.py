"""Groups under real gunicorn -w 3 on a real Redis Cluster of three masters (one replica each).

``tests.apps.groups_app`` runs with ``GROUPS_REDIS=redis+cluster://...``; clients are real
websockets and sends are HTTP requests on a new TCP connection each, so the kernel spreads
them over the workers. The failover test kills a master, so it has a cluster of its own.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import itertools
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from redis.crc import key_slot

from tests.support.gunicorn_harness import (
    GROUPS_APP,
    Gunicorn,
    Member,
    join,
    join_across_workers,
    members_seen_by_every_worker,
    post,
)
from tests.support.redis_cluster import RedisCluster, own_cluster

# The cluster backend refuses redis-py before 8.0 (sharded pub/sub in asyncio); the lowest-versions job has 5.x.
pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(
        tuple(int(part) for part in importlib.metadata.version("redis").split(".")[:2]) < (8, 0),
        reason="the Redis Cluster backend needs redis-py 8.0 or newer",
    ),
]


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[RedisCluster]:
    with own_cluster() as started:
        yield started


def groups_gunicorn(cluster: RedisCluster, log_dir: Path) -> Gunicorn:
    env = {"GROUPS_REDIS": cluster.url, "GROUPS_PREFIX": f"wsframe-cl-{secrets.token_hex(4)}:"}
    return Gunicorn(GROUPS_APP, log_dir, env=env, graceful_timeout=5)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # No connection limit: aiohttp's default (100) would hold the 101st websocket back for ever.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        yield client


def groups_on_every_master(cluster: RedisCluster, per_master: int) -> dict[int, list[str]]:
    """*per_master* group names whose slot each master owns, by master port."""
    found: dict[int, list[str]] = {port: [] for port in cluster.masters()}
    n = 0
    while any(len(names) < per_master for names in found.values()):
        name = f"room-{n}"
        owner = cluster.owner_of(key_slot(name.encode()))
        if len(found[owner]) < per_master:
            found[owner].append(name)
        n += 1
    return found


async def join_many(session: aiohttp.ClientSession, server: Gunicorn, groups: list[str], count: int) -> list[Member]:
    """*count* members spread round-robin over *groups*, joined 20 at a time."""
    members: list[Member] = []
    for start in range(0, count, 20):
        batch = [groups[n % len(groups)] for n in range(start, min(start + 20, count))]
        members += await asyncio.gather(*(join(session, server, group) for group in batch))
    return members


async def texts(member: Member, count: int) -> list[str]:
    return [await member.next_text() for _ in range(count)]


async def test_200_clients_in_groups_on_every_shard_get_every_group_send_once_in_order_and_presence_agrees(
    shared_cluster: RedisCluster, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    by_master = groups_on_every_master(shared_cluster, 3)
    groups = [name for names in by_master.values() for name in names]
    with groups_gunicorn(shared_cluster, tmp_path) as server:
        pids = server.wait_for_workers("/members/warmup/")
        members = await join_many(session, server, groups, 200)
        senders: set[int] = set()
        for n in range(10):
            for group in groups:  # each on a new TCP connection: the workers take turns sending
                senders.add(await post(server, f"/send/{group}/", f"{group}/{n}"))
        received = await asyncio.gather(*(texts(m, 10) for m in members))
        group_of = {m.id: groups[i % len(groups)] for i, m in enumerate(members)}
        for member, got in zip(members, received, strict=True):
            assert got == [f"{group_of[member.id]}/{n}" for n in range(10)]
        assert all(await asyncio.gather(*(m.nothing_pending() for m in members)))
        for group in groups:
            expected = {m.id for m in members if group_of[m.id] == group}
            answers = await members_seen_by_every_worker(server, group, pids)
            assert [seen for seen, _ in answers] == [expected] * len(answers)
        assert server.worker_pids() == pids
    assert {m.pid for m in members} == pids
    assert len(senders) == 3


async def send_numbers(server: Gunicorn, group: str, stop: asyncio.Event) -> tuple[int, int]:
    """POST 0, 1, 2... to *group* every 20 ms until *stop*; return (accepted, refused) counts."""
    accepted = refused = n = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        while not stop.is_set():
            async with fresh.post(f"{server.base}/send/{group}/", data=str(n)) as response:
                if response.status == 200:
                    accepted += 1
                else:
                    refused += 1
            n += 1
            await asyncio.sleep(0.02)
    return accepted, refused


async def arrivals(member: Member, until: float) -> list[tuple[float, int]]:
    got: list[tuple[float, int]] = []
    while time.monotonic() < until:
        try:
            msg = await member.ws.receive(timeout=min(1.0, max(until - time.monotonic(), 0.01)))
        except TimeoutError:
            continue
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        got.append((time.monotonic(), int(msg.data)))
    return got


def possibly_lost_logged(log: str) -> bool:
    return bool(re.search(r"Redis Cluster shard \S+ is unreachable|dropped channel", log))


async def test_killing_a_master_mid_traffic_resumes_delivery_within_10_s_without_restarting_workers(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    with own_cluster() as cluster:
        group = groups_on_every_master(cluster, 1)[cluster.masters()[0]][0]
        victim = cluster.owner_of(key_slot(group.encode()))
        with groups_gunicorn(cluster, tmp_path) as server:
            pids = server.wait_for_workers("/members/warmup/")
            members = await join_many(session, server, [group], 6)
            stop = asyncio.Event()
            sending = asyncio.ensure_future(send_numbers(server, group, stop))
            await asyncio.sleep(1)
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill, victim)
            got = await asyncio.gather(*(arrivals(m, killed_at + 15) for m in members))
            stop.set()
            accepted, refused = await sending
            assert server.worker_pids() == pids
            log = server.log()
    resumed = []
    for seen in got:
        numbers = [n for _, n in seen]
        assert numbers == sorted(set(numbers))  # in order, never twice
        # Delivery resumed with the first arrival after the longest silence since the kill.
        times = [killed_at, *(at for at, _ in seen if at > killed_at)]
        assert len(times) > 1
        silence_ends = max(itertools.pairwise(times), key=lambda pair: pair[1] - pair[0])[1]
        resumed.append(silence_ends - killed_at)
    print(f"failover under gunicorn: delivery resumed after {max(resumed):.2f} s; {refused} sends refused")
    assert max(resumed) < 10
    assert refused > 0
    assert accepted > refused
    assert possibly_lost_logged(log)


async def test_migrating_a_groups_slot_mid_traffic_resumes_delivery_without_restarting_workers(
    shared_cluster: RedisCluster, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    group = "migrating-room"
    slot = key_slot(group.encode())
    with groups_gunicorn(shared_cluster, tmp_path) as server:
        pids = server.wait_for_workers("/members/warmup/")
        members = await join_across_workers(session, server, group, 6, workers=2)
        stop = asyncio.Event()
        sending = asyncio.ensure_future(send_numbers(server, group, stop))
        await asyncio.sleep(1)
        target = next(port for port in shared_cluster.masters() if port != shared_cluster.owner_of(slot))
        await asyncio.to_thread(shared_cluster.migrate_slot, slot, target)
        moved_at = time.monotonic()
        got = await asyncio.gather(*(arrivals(m, moved_at + 4) for m in members))
        stop.set()
        await sending
        assert server.worker_pids() == pids
        log = server.log()
    for seen in got:
        numbers = [n for _, n in seen]
        assert numbers == sorted(set(numbers))
        assert any(at > moved_at + 2 for at, _ in seen)
    assert "dropped channel" in log
