"""History groups under real gunicorn while their Redis is killed (kill -9) and started again, empty, or their
listeners' connections are cut.

``tests.apps.history_app:app`` under ``gunicorn -w 2`` on a private Redis. Members on both workers
read every frame while the test sends through both workers' HTTP endpoints. What each member sees
must be one unbroken chain of positions: each message the one right after the position before it,
or a ``recovered: false`` frame that moves the position on and says what was lost. Never a jump
without that frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.support.gunicorn_harness import RECEIVE, SCALE, Gunicorn
from tests.support.redis_server import RedisServer, own_redis

pytestmark = pytest.mark.functional

GROUP = "chat:restart"
MEMBERS_PER_WORKER = 3


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with own_redis() as server:
        yield server


@pytest.fixture
def server(tmp_path: Path, redis_server: RedisServer) -> Iterator[Gunicorn]:
    env = {"HISTORY_REDIS": redis_server.url, "HISTORY_PREFIX": "restart:", "HISTORY_SIZE": "1000"}
    with Gunicorn("tests.apps.history_app:app", tmp_path, workers=2, env=env, graceful_timeout=5) as started:
        started.wait_for_workers("/pid/")
        yield started


class Member:
    """One websocket member of GROUP: its hello, then every frame it receives, decoded."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, hello: dict[str, Any]) -> None:
        self.ws, self.pid, self.frames = ws, int(hello["pid"]), list[dict[str, Any]]()
        joined = hello["joined"]
        self.start = (joined["epoch"], joined["offset"])
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(message.data))

    def breaks(self) -> list[str]:
        """Where the chain of positions breaks silently: a message that is not the one after the last position."""
        epoch, offset = self.start
        found = []
        for frame in self.frames:
            if frame.get("recovered") is False:
                epoch, offset = frame["epoch"], frame["offset"]  # told: delivery goes on after this position
            elif (frame["epoch"], frame["offset"]) == (epoch, offset + 1):
                offset += 1
            else:
                found.append(f"{frame['data']!r} at {frame['epoch']}/{frame['offset']} after {epoch}/{offset}")
                epoch, offset = frame["epoch"], frame["offset"]
        return found


@contextlib.asynccontextmanager
async def members(server: Gunicorn) -> AsyncIterator[list[Member]]:
    """MEMBERS_PER_WORKER members of GROUP on each worker (connecting until both have that many)."""
    session = aiohttp.ClientSession()
    joined: list[Member] = []
    spare: list[aiohttp.ClientWebSocketResponse] = []
    try:
        deadline = time.monotonic() + 30 * SCALE
        while min((sum(m.pid == p for m in joined) for p in server.worker_pids()), default=0) < MEMBERS_PER_WORKER:
            assert time.monotonic() < deadline, f"members on {[m.pid for m in joined]} only"
            ws = await session.ws_connect(f"{server.base}/ws/{GROUP}/")
            hello = json.loads((await ws.receive(timeout=RECEIVE)).data)
            if sum(m.pid == hello["pid"] for m in joined) >= MEMBERS_PER_WORKER:
                spare.append(ws)  # kept open, so the next connection may reach the other worker
            else:
                joined.append(Member(ws, hello))
        for ws in spare:
            await ws.close()
        yield joined
    finally:
        for member in joined:
            await member.ws.close()
            member.reader.cancel()
        await session.close()


async def lanes(server: Gunicorn) -> list[aiohttp.ClientSession]:
    """A keep-alive HTTP session to each worker."""
    found: dict[int, aiohttp.ClientSession] = {}
    deadline = time.monotonic() + 30 * SCALE
    while len(found) < server.workers:
        assert time.monotonic() < deadline, f"reached workers {set(found)} only"
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        async with session.get(f"{server.base}/pid/") as response:
            pid = (await response.json())["pid"]
        if pid in found:
            await session.close()
        else:
            found[pid] = session
    return list(found.values())


async def send(server: Gunicorn, session: aiohttp.ClientSession, text: str) -> bool:
    """Send *text* to GROUP through one worker; whether the worker took it (Redis down: a 500)."""
    try:
        async with session.post(f"{server.base}/send/{GROUP}/", data=text) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def settled(group: list[Member], last: str) -> bool:
    """Wait (bounded) until every member's last frame holds the message *last*."""
    deadline = time.monotonic() + 30 * SCALE
    while time.monotonic() < deadline:
        if all(m.frames and m.frames[-1].get("data") == last for m in group):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_members_of_a_history_group_see_every_offset_or_are_told_when_redis_restarts_empty_mid_traffic(
    server: Gunicorn, redis_server: RedisServer
) -> None:
    workers = await lanes(server)
    try:
        async with members(server) as group:
            accepted: list[str] = []
            n = 0

            async def traffic(until: int) -> None:
                nonlocal n
                while len(accepted) < until:
                    n += 1
                    if await send(server, workers[n % 2], f"m{n}"):
                        accepted.append(f"m{n}")
                    await asyncio.sleep(0.005)

            await traffic(100)
            sending = asyncio.ensure_future(traffic(10**9))
            await asyncio.sleep(0.2)
            redis_server.kill()  # mid-traffic: sends fail meanwhile, members' listeners drop
            await asyncio.sleep(1.0)  # sends go on failing while Redis is away
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            redis_server.start()  # empty: a new epoch for every group
            await asyncio.wait_for(traffic(len(accepted) + 100), 30 * SCALE)  # 100 more once Redis is back
            assert await settled(group, accepted[-1]), [m.frames[-1:] for m in group]

            for member in group:
                assert member.breaks() == [], member.pid
                told = [f for f in member.frames if f.get("recovered") is False]
                assert told, "a Redis restarted empty is a new epoch: every member is told"
                epochs = [f["epoch"] for f in member.frames if "data" in f]
                assert epochs[0] != epochs[-1]
                received = [f["data"] for f in member.frames if "data" in f]
                assert len(received) == len(set(received))  # none twice
                # Everything accepted after the new epoch's first message reached every member.
                first_new = next(f["data"] for f in member.frames if "data" in f and f["epoch"] == epochs[-1])
                assert received[received.index(first_new) :] == accepted[accepted.index(first_new) :]
            assert {m.pid for m in group} == server.worker_pids()
    finally:
        for session in workers:
            await session.close()


async def test_after_the_listeners_are_cut_mid_traffic_every_member_gets_every_message_once_in_order(
    server: Gunicorn, redis_server: RedisServer
) -> None:
    workers = await lanes(server)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        async with members(server) as group:
            sent, refused = [f"m{n}" for n in range(1, 301)], 0
            for n, text in enumerate(sent):
                if n == 150:
                    # Every worker's pub/sub connection dropped; Redis keeps the history meanwhile.
                    assert await admin.client_kill_filter(_type="pubsub") == server.workers
                # A worker whose listener is reconnecting refuses sends (nothing kept): the sender retries.
                for _ in range(int(200 * SCALE)):
                    if await send(server, workers[n % 2], text):
                        break
                    refused += 1
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"{text} was refused for 10 s")
                await asyncio.sleep(0.002)
            assert await settled(group, sent[-1]), [m.frames[-1:] for m in group]
            for member in group:
                assert member.breaks() == [], member.pid
                assert [f.get("recovered") for f in member.frames if "data" not in f] == []
                assert [f["data"] for f in member.frames] == sent
            assert refused < 200  # the listeners came back
    finally:
        await admin.aclose()
        for session in workers:
            await session.close()
