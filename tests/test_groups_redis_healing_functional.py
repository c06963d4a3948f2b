"""Groups under real gunicorn (3 workers) on a private Redis that is killed, restarted and flooded.

Presence must be right again on every worker within the bound docs/groups.md states, and a
burst of 300 concurrent joins must leave each worker with at most the 3 Redis connections
docs/workers.md states (counted per worker pid from /proc, matched against Redis's port).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.gunicorn_harness import GROUPS_APP, SCALE, Gunicorn, join_across_workers, members_seen
from tests.support.redis_server import RedisServer, own_redis

pytestmark = pytest.mark.functional

PRESENCE_TTL = 3.0
OPERATION_TIMEOUT = 0.5  # RedisBackend's default, which groups_app keeps
HEALED_WITHIN = PRESENCE_TTL / 3 + OPERATION_TIMEOUT
"""docs/groups.md: group_members() is right again within presence_ttl / 3 + operation_timeout."""
ASKING = 0.5 * SCALE
"""Slack for asking: each answer comes over HTTP from whichever worker the kernel picks."""
CONNECTIONS_PER_WORKER = 3
"""docs/workers.md: at most 3 Redis connections per worker, however many clients join at once."""


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with own_redis() as server:
        yield server


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Gunicorn]:
    env = {"GROUPS_REDIS": redis_server.url, "GROUPS_PREFIX": "heal:", "GROUPS_PRESENCE_TTL": str(PRESENCE_TTL)}
    with Gunicorn(GROUPS_APP, tmp_path, env=env, graceful_timeout=5) as server:
        server.wait_for_workers("/members/warmup/")
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # No limit: an open websocket holds its connection, and aiohttp allows 100 by default.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        yield client


async def every_worker_lists(server: Gunicorn, group: str, expected: set[str], *, within: float) -> float:
    """Seconds until each worker's latest answer for *group* is *expected*; fails after *within* (asks 6 at a time)."""
    latest: dict[int, set[str] | None] = dict.fromkeys(server.worker_pids())
    start = time.monotonic()

    async def ask() -> None:
        try:
            members, pid = await members_seen(server, group)
        except (aiohttp.ClientError, ValueError, KeyError):
            return  # the worker could not ask Redis yet (BackendUnavailableError: a 500)
        latest[pid] = members

    while time.monotonic() - start < within:
        await asyncio.gather(*(ask() for _ in range(6)))
        if all(members == expected for members in latest.values()):
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"after {within:.1f} s the workers list {latest}, not {len(expected)} members")


def redis_connections(pid: int, redis_port: int) -> int:
    """TCP connections that process *pid* has open to 127.0.0.1:*redis_port*, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == redis_port and fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
            count += 1
    return count


async def test_every_worker_lists_the_live_members_within_the_bound_after_redis_is_killed_and_restarted(
    cluster: Gunicorn, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    members = await join_across_workers(session, cluster, "room", 30)
    live = {m.id for m in members}
    await every_worker_lists(cluster, "room", live, within=10 * SCALE)
    redis_server.kill()
    await asyncio.sleep(0.5)
    redis_server.start()  # empty: the restarted Redis knows no member
    took = await every_worker_lists(cluster, "room", live, within=HEALED_WITHIN + ASKING)
    assert took <= HEALED_WITHIN + ASKING


async def test_three_hundred_concurrent_joins_leave_at_most_three_redis_connections_per_worker(
    cluster: Gunicorn, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    for _ in range(3):
        members = await join_across_workers(session, cluster, "flood", 300)
        counts = {pid: redis_connections(pid, redis_server.port) for pid in cluster.worker_pids()}
        assert len(counts) == 3
        assert all(1 <= count <= CONNECTIONS_PER_WORKER for count in counts.values()), counts
        await every_worker_lists(cluster, "flood", {m.id for m in members}, within=10 * SCALE)
        await asyncio.gather(*(m.ws.close() for m in members))
