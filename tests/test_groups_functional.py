"""Groups under real gunicorn: 3 aiohttp workers sharing a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.apps.redis_server import SHARED_REDIS_URL, require_shared_redis
from tests.servers import ROOT, free_port, wait_for_port

pytestmark = pytest.mark.functional

SCALE = float(os.environ.get("WSFRAME_TEST_TIMEOUT_SCALE", "1"))
RECEIVE = 5.0 * SCALE
PRESENCE_TTL = 2.0


class Cluster:
    def __init__(self, log: Path) -> None:
        require_shared_redis()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.prefix = f"wsframe-groups-{secrets.token_hex(4)}:"
        env = {
            **os.environ,
            "GROUPS_REDIS": SHARED_REDIS_URL,
            "GROUPS_PREFIX": self.prefix,
            "GROUPS_PRESENCE_TTL": str(PRESENCE_TTL),
            "PYTHONUNBUFFERED": "1",
        }
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-w", "3", "-k", "aiohttp.GunicornWebWorker",
                 "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "5", "--no-control-socket",
                 "tests.apps.groups_app:app"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def wait_for_every_worker(cluster: Cluster, workers: int = 3) -> None:
    """Return once *workers* different pids have answered: before that, one early worker takes every connection."""
    seen: set[int] = set()
    deadline = time.monotonic() + 30 * SCALE
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        while len(seen) < workers and time.monotonic() < deadline:
            async with fresh.get(f"{cluster.base}/members/warmup/") as response:
                seen.add((await response.json())["pid"])
            await asyncio.sleep(0.02)
    assert len(seen) == workers, f"only workers {seen} answered within 30 s; see {cluster.log}"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    server = Cluster(tmp_path / "gunicorn.log")
    try:
        await wait_for_every_worker(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


class Member:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, connection_id: str, pid: int) -> None:
        self.ws, self.id, self.pid = ws, connection_id, pid

    async def next_text(self) -> str:
        msg = await self.ws.receive(timeout=RECEIVE)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        return str(msg.data)

    async def nothing_pending(self) -> bool:
        try:
            msg = await self.ws.receive(timeout=0.2)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected message {msg}")


async def join(session: aiohttp.ClientSession, cluster: Cluster, group: str) -> Member:
    ws = await session.ws_connect(f"{cluster.base}/ws/{group}/")
    hello = json.loads((await ws.receive(timeout=RECEIVE)).data)
    return Member(ws, hello["id"], hello["pid"])


async def join_across_workers(session: aiohttp.ClientSession, cluster: Cluster, group: str, count: int) -> list[Member]:
    """Join *count* members at once (a burst spreads over the workers), more until two workers have some."""
    members = list(await asyncio.gather(*(join(session, cluster, group) for _ in range(count))))
    for _ in range(10):
        if len({m.pid for m in members}) >= 2:
            return members
        members += await asyncio.gather(*(join(session, cluster, group) for _ in range(count)))
    raise AssertionError("gunicorn put every connection on one worker")


async def members_seen(session: aiohttp.ClientSession, cluster: Cluster, group: str) -> tuple[set[str], int]:
    async with session.get(f"{cluster.base}/members/{group}/") as response:
        body = await response.json()
    return set(body["members"]), body["pid"]


async def test_group_send_reaches_every_member_on_every_worker_exactly_once(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    members = await join_across_workers(session, cluster, "red", 12)
    outsiders = [await join(session, cluster, "blue") for _ in range(3)]
    senders: set[int] = set()
    for n in range(20):
        async with session.post(f"{cluster.base}/send/red/", data=f"m{n}") as response:
            assert response.status == 200
            senders.add((await response.json())["pid"])
    for member in members:
        assert [await member.next_text() for _ in range(20)] == [f"m{n}" for n in range(20)]
        assert await member.nothing_pending()
    for outsider in outsiders:
        assert await outsider.nothing_pending()
    assert len({m.pid for m in members}) >= 2


async def test_members_that_left_or_disconnected_get_nothing(cluster: Cluster, session: aiohttp.ClientSession) -> None:
    members = await join_across_workers(session, cluster, "red", 6)
    leaver, gone, stayers = members[0], members[1], members[2:]
    await leaver.ws.send_str("leave")
    assert await leaver.next_text() == "left"
    await gone.ws.close()
    for _ in range(50):
        seen, _ = await members_seen(session, cluster, "red")
        if gone.id not in seen:
            break
        await asyncio.sleep(0.05)
    async with session.post(f"{cluster.base}/send/red/", data="after") as response:
        assert response.status == 200
    for member in stayers:
        assert await member.next_text() == "after"
    assert await leaver.nothing_pending()


async def test_group_members_agrees_with_who_is_connected_from_every_worker(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    members = await join_across_workers(session, cluster, "red", 9)
    expected = {m.id for m in members}
    answered_by: set[int] = set()
    # A new TCP connection per request, so the kernel spreads the requests over the workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        for _ in range(300):  # the kernel may hand many fresh connections in a row to one idle worker
            seen, pid = await members_seen(fresh, cluster, "red")
            assert seen == expected
            answered_by.add(pid)
            if len(answered_by) >= 2:
                break
            await asyncio.sleep(0.01)
    assert len(answered_by) >= 2


async def test_members_of_a_sigkilled_worker_vanish_from_presence_within_the_ttl(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    members = await join_across_workers(session, cluster, "red", 9)
    victim_pid = members[0].pid
    survivors = {m.id for m in members if m.pid != victim_pid}
    os.kill(victim_pid, signal.SIGKILL)
    started = time.monotonic()
    seen: set[str] = set()
    while time.monotonic() - started < PRESENCE_TTL * 3 * SCALE:
        try:
            seen, _ = await members_seen(session, cluster, "red")
        except aiohttp.ClientError:
            seen = set()  # the request landed on the dying worker's connection
        if seen == survivors:
            break
        await asyncio.sleep(0.1)
    assert seen == survivors
    # Survivors still get group sends.
    async with session.post(f"{cluster.base}/send/red/", data="still here") as response:
        assert response.status == 200
    for member in members:
        if member.pid != victim_pid:
            assert await member.next_text() == "still here"
