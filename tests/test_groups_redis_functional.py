"""Groups under real gunicorn: 3 aiohttp workers sharing a real Redis."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.gunicorn_harness import (
    GROUPS_APP,
    SCALE,
    Gunicorn,
    close_websockets,
    join,
    join_across_workers,
    members_seen,
    post,
)
from tests.support.redis_server import SHARED_REDIS_URL, require_shared_redis

pytestmark = pytest.mark.functional

PRESENCE_TTL = 2.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Gunicorn]:
    require_shared_redis()
    env = {
        "GROUPS_REDIS": SHARED_REDIS_URL,
        "GROUPS_PREFIX": f"wsframe-groups-{secrets.token_hex(4)}:",
        "GROUPS_PRESENCE_TTL": str(PRESENCE_TTL),
    }
    with Gunicorn(GROUPS_APP, tmp_path, env=env, graceful_timeout=5) as server:
        server.wait_for_workers("/members/warmup/")
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
        await close_websockets()


async def test_group_send_reaches_every_member_on_every_worker_exactly_once(
    cluster: Gunicorn, session: aiohttp.ClientSession
) -> None:
    members = await join_across_workers(session, cluster, "red", 12, workers=2)
    outsiders = [await join(session, cluster, "blue") for _ in range(3)]
    for n in range(20):  # on one keep-alive connection: one worker sends all, so they arrive in order
        await post(cluster, "/send/red/", f"m{n}", session)
    for member in members:
        assert [await member.next_text() for _ in range(20)] == [f"m{n}" for n in range(20)]
        assert await member.nothing_pending()
    for outsider in outsiders:
        assert await outsider.nothing_pending()
    assert len({m.pid for m in members}) >= 2


async def test_members_that_left_or_disconnected_get_nothing(cluster: Gunicorn, session: aiohttp.ClientSession) -> None:
    members = await join_across_workers(session, cluster, "red", 6, workers=2)
    leaver, gone, stayers = members[0], members[1], members[2:]
    await leaver.ws.send_str("leave")
    assert await leaver.next_text() == "left"
    await gone.ws.close()
    for _ in range(50):
        seen, _ = await members_seen(cluster, "red")
        if gone.id not in seen:
            break
        await asyncio.sleep(0.05)
    await post(cluster, "/send/red/", "after")
    for member in stayers:
        assert await member.next_text() == "after"
    assert await leaver.nothing_pending()


async def test_group_members_agrees_with_who_is_connected_from_every_worker(
    cluster: Gunicorn, session: aiohttp.ClientSession
) -> None:
    members = await join_across_workers(session, cluster, "red", 9, workers=2)
    expected = {m.id for m in members}
    answered_by: set[int] = set()
    # A new TCP connection per request, so the kernel spreads the requests over the workers.
    for _ in range(300):  # the kernel may hand many fresh connections in a row to one idle worker
        seen, pid = await members_seen(cluster, "red")
        assert seen == expected
        answered_by.add(pid)
        if len(answered_by) >= 2:
            break
        await asyncio.sleep(0.01)
    assert len(answered_by) >= 2


async def test_members_of_a_sigkilled_worker_vanish_from_presence_within_the_ttl(
    cluster: Gunicorn, session: aiohttp.ClientSession
) -> None:
    members = await join_across_workers(session, cluster, "red", 9, workers=2)
    victim_pid = members[0].pid
    survivors = {m.id for m in members if m.pid != victim_pid}
    os.kill(victim_pid, signal.SIGKILL)
    started = time.monotonic()
    seen: set[str] = set()
    while time.monotonic() - started < PRESENCE_TTL * 3 * SCALE:
        try:
            seen, _ = await members_seen(cluster, "red")
        except aiohttp.ClientError:
            seen = set()  # the request landed on the dying worker's connection
        if seen == survivors:
            break
        await asyncio.sleep(0.1)
    assert seen == survivors
    # Survivors still get group sends.
    await post(cluster, "/send/red/", "still here")
    for member in members:
        if member.pid != victim_pid:
            assert await member.next_text() == "still here"
