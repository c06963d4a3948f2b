"""Groups under real gunicorn: 3 aiohttp workers on the default local IPC backend, with and without --preload."""

from __future__ import annotations

import asyncio
import collections
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
    RECEIVE,
    WORKERS,
    Gunicorn,
    close_websockets,
    join,
    join_across_workers,
    members_seen,
    post,
)
from wsframe.backends.ipc import runtime_base

pytestmark = pytest.mark.functional


def groups_on_ipc(log_dir: Path, *, preload: bool) -> Gunicorn:
    """``tests.apps.groups_app`` under gunicorn on the default (IPC) backend."""
    env = {"GROUPS_IPC_DIR": None, "GROUPS_REDIS": None}
    return Gunicorn(GROUPS_APP, log_dir, preload=preload, env=env, graceful_timeout=5)


@pytest.fixture(scope="module", params=["fork", "preload"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    with groups_on_ipc(tmp_path_factory.mktemp("gunicorn"), preload=request.param == "preload") as cluster:
        yield cluster
    assert "Traceback" not in cluster.log()


@pytest.fixture
def cluster(server: Gunicorn) -> Gunicorn:
    server.wait_for_workers("/members/warmup/")  # every worker up, including one restarted after a SIGKILL
    return server


@pytest.fixture
def group() -> str:
    """A fresh group name per test: the cluster outlives the test."""
    return f"room-{secrets.token_hex(4)}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
        await close_websockets()


async def test_group_send_reaches_every_member_on_every_worker_exactly_once(
    cluster: Gunicorn, session: aiohttp.ClientSession, group: str
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
    cluster: Gunicorn, session: aiohttp.ClientSession, group: str
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
    cluster: Gunicorn, session: aiohttp.ClientSession, group: str
) -> None:
    members = await join_across_workers(session, cluster, group, 6)
    outsider = await join(session, cluster, group + "-other")
    await post(cluster, f"/close/{group}/", "room closed")
    for member in members:
        msg = await member.ws.receive(timeout=RECEIVE)
        assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 4001, "room closed")
    assert await outsider.nothing_pending()


async def test_group_members_agrees_with_who_is_connected_from_every_worker(
    cluster: Gunicorn, session: aiohttp.ClientSession, group: str
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
    cluster: Gunicorn, session: aiohttp.ClientSession, group: str
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
    with groups_on_ipc(tmp_path, preload=preload) as cluster:
        victim = min(cluster.wait_for_workers("/members/warmup/"))
        directory = runtime_base() / f"gunicorn-{cluster.pid}"
        assert len(list(directory.glob("*.sock"))) == WORKERS
        os.kill(victim, signal.SIGKILL)  # leaves its socket behind
        cluster.wait_for_workers("/members/warmup/")
    assert not directory.exists()
