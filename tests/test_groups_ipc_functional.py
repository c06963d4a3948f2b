"""Groups under real gunicorn: 3 aiohttp workers on the default local IPC backend, with and without --preload."""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.servers import ROOT, free_port, wait_for_port
from wsframe.backends.ipc import runtime_base

pytestmark = pytest.mark.functional

SCALE = float(os.environ.get("WSFRAME_TEST_TIMEOUT_SCALE", "1"))
RECEIVE = 5.0 * SCALE
WORKERS = 3


class Cluster:
    """A gunicorn master with 3 workers serving ``tests.apps.groups_app`` on the default (IPC) backend."""

    def __init__(self, log: Path, *, preload: bool) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("GROUPS_IPC_DIR", None)
        env.pop("GROUPS_REDIS", None)
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-k", "aiohttp.GunicornWebWorker",
                 "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "5", "--no-control-socket",
                 *(["--preload"] if preload else []), "tests.apps.groups_app:app"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for_port(self.port, self.process)

    @property
    def sockets_dir(self) -> Path:
        return runtime_base() / f"gunicorn-{self.process.pid}"

    def worker_pids(self) -> set[int]:
        """Ask with a new TCP connection each time, so the kernel spreads the requests, until every worker answered."""
        seen: set[int] = set()
        deadline = time.monotonic() + 30 * SCALE
        while len(seen) < WORKERS and time.monotonic() < deadline:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=RECEIVE)
            try:
                connection.request("GET", "/members/warmup/")
                seen.add(json.loads(connection.getresponse().read())["pid"])
            except OSError:
                pass  # a worker being replaced
            finally:
                connection.close()
            time.sleep(0.02)
        assert len(seen) == WORKERS, f"only workers {seen} answered within 30 s; see {self.log}"
        return seen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module", params=["fork", "preload"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("gunicorn") / "gunicorn.log", preload=request.param == "preload")
    try:
        yield cluster
    finally:
        cluster.stop()
    assert "Traceback" not in cluster.log.read_text(errors="replace")


@pytest.fixture
def cluster(server: Cluster) -> Cluster:
    server.worker_pids()  # every worker up, including one restarted after an earlier test's SIGKILL
    return server


@pytest.fixture
def group() -> str:
    """A fresh group name per test: the cluster outlives the test."""
    return f"room-{secrets.token_hex(4)}"


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
    """Join *count* members at once (a burst spreads over the workers), more until every worker has some."""
    members = list(await asyncio.gather(*(join(session, cluster, group) for _ in range(count))))
    for _ in range(40):  # the kernel may keep handing bursts to the same two idle workers for a while
        if len({m.pid for m in members}) == WORKERS:
            return members
        await asyncio.sleep(0.02)
        members += await asyncio.gather(*(join(session, cluster, group) for _ in range(count)))
    raise AssertionError(f"gunicorn put every connection on workers { ({m.pid for m in members}) }")


async def post(cluster: Cluster, path: str, body: str = "") -> int:
    """POST on a new TCP connection (so the requests land on different workers); returns the answering pid."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
        fresh.post(f"{cluster.base}{path}", data=body) as response,
    ):
        assert response.status == 200, await response.text()
        return int((await response.json())["pid"])


async def members_seen(cluster: Cluster, group: str) -> tuple[set[str], int]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
        fresh.get(f"{cluster.base}/members/{group}/") as response,
    ):
        body = await response.json()
    return set(body["members"]), int(body["pid"])


async def test_group_send_reaches_every_member_on_every_worker_exactly_once(
    cluster: Cluster, session: aiohttp.ClientSession, group: str
) -> None:
    members = await join_across_workers(session, cluster, group, 12)
    outsiders = [await join(session, cluster, group + "-other") for _ in range(3)]
    senders: set[int] = set()
    sent = 0
    # At least 20 sends, and more until two workers have sent (the kernel picks who accepts each request).
    while sent < 20 or (len(senders) < 2 and sent < 200):
        senders.add(await post(cluster, f"/send/{group}/", f"m{sent}"))
        sent += 1
    for member in members:
        received = [await member.next_text() for _ in range(sent)]
        assert collections.Counter(received) == collections.Counter(f"m{n}" for n in range(sent))
    # Nothing more for members, nothing at all for outsiders (waited for all at once).
    assert all(await asyncio.gather(*(m.nothing_pending() for m in members + outsiders)))
    assert len(senders) >= 2


async def test_members_that_left_or_disconnected_get_nothing(
    cluster: Cluster, session: aiohttp.ClientSession, group: str
) -> None:
    members = await join_across_workers(session, cluster, group, 6)
    leaver, gone, stayers = members[0], members[1], members[2:]
    await leaver.ws.send_str("leave")
    assert await leaver.next_text() == "left"
    await gone.ws.close()
    for _ in range(50):
        if gone.id not in (await members_seen(cluster, group))[0]:
            break
        await asyncio.sleep(0.05)
    await post(cluster, f"/send/{group}/", "after")
    for member in stayers:
        assert await member.next_text() == "after"
    assert await leaver.nothing_pending()


async def test_close_group_closes_members_on_every_worker(
    cluster: Cluster, session: aiohttp.ClientSession, group: str
) -> None:
    members = await join_across_workers(session, cluster, group, 6)
    outsider = await join(session, cluster, group + "-other")
    await post(cluster, f"/close/{group}/", "room closed")
    for member in members:
        msg = await member.ws.receive(timeout=RECEIVE)
        assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 4001, "room closed")
    assert await outsider.nothing_pending()


async def test_group_members_agrees_with_who_is_connected_from_every_worker(
    cluster: Cluster, session: aiohttp.ClientSession, group: str
) -> None:
    members = await join_across_workers(session, cluster, group, 9)
    expected = {m.id for m in members}
    answered_by: set[int] = set()
    for _ in range(200):  # until every worker answered once, or enough tries that two surely did
        seen, pid = await members_seen(cluster, group)
        assert seen == expected
        answered_by.add(pid)
        if len(answered_by) == WORKERS:
            break
    assert len(answered_by) >= 2


async def test_members_of_a_sigkilled_worker_vanish_from_presence_at_once(
    cluster: Cluster, session: aiohttp.ClientSession, group: str
) -> None:
    members = await join_across_workers(session, cluster, group, 9)
    victim_pid = members[0].pid
    survivors = [m for m in members if m.pid != victim_pid]
    os.kill(victim_pid, signal.SIGKILL)
    # The first answer from a surviving worker is already right: the dead
    # worker's streams and socket are closed by the kernel, and the query sees it.
    deadline = time.monotonic() + RECEIVE
    seen: set[str] = set()
    pid = victim_pid
    while pid == victim_pid and time.monotonic() < deadline:
        try:
            seen, pid = await members_seen(cluster, group)
        except aiohttp.ClientError:
            await asyncio.sleep(0.01)  # the request landed on the dying worker's connection
    assert seen == {m.id for m in survivors}
    await post(cluster, f"/send/{group}/", "still here")
    for member in survivors:
        assert await member.next_text() == "still here"


@pytest.mark.parametrize("preload", [False, True], ids=["fork", "preload"])
def test_the_socket_directory_is_removed_when_gunicorn_stops_even_after_a_sigkill(
    tmp_path: Path, preload: bool
) -> None:
    cluster = Cluster(tmp_path / "gunicorn.log", preload=preload)
    try:
        victim = min(cluster.worker_pids())
        directory = cluster.sockets_dir
        assert len(list(directory.glob("*.sock"))) == WORKERS
        os.kill(victim, signal.SIGKILL)  # leaves its socket behind
        cluster.worker_pids()
    finally:
        cluster.stop()
    assert not directory.exists()
