"""Resume after a reconnect under real gunicorn: two workers on Redis, one numbering, every missed message or none.

``tests.apps.history_app:app`` under ``gunicorn -w 2`` on the shared Redis (a prefix of the
test's own), ``chat:`` keeping 100 messages. Sends go through the app's HTTP endpoint over
keep-alive connections whose worker is known, so both workers number into one sequence.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.gunicorn_harness import RECEIVE, SCALE, Gunicorn
from tests.support.nodes import redis_prefix
from tests.support.redis_server import SHARED_REDIS_URL

pytestmark = pytest.mark.functional


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Gunicorn]:
    env = {"HISTORY_REDIS": SHARED_REDIS_URL, "HISTORY_PREFIX": redis_prefix(), "HISTORY_SIZE": "100"}
    with Gunicorn("tests.apps.history_app:app", tmp_path, workers=2, env=env, graceful_timeout=5) as started:
        started.wait_for_workers("/pid/")
        yield started


@pytest.fixture
async def lanes(server: Gunicorn) -> AsyncIterator[dict[int, aiohttp.ClientSession]]:
    """A keep-alive HTTP session to each worker, by pid."""
    found: dict[int, aiohttp.ClientSession] = {}
    spare: list[aiohttp.ClientSession] = []
    deadline = time.monotonic() + 30 * SCALE
    try:
        while len(found) < server.workers and time.monotonic() < deadline:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            async with session.get(f"{server.base}/pid/") as response:
                pid = (await response.json())["pid"]
            if pid in found:
                spare.append(session)
            else:
                found[pid] = session
        assert len(found) == server.workers, f"reached workers {set(found)} only"
        for session in spare:
            await session.close()
        yield found
    finally:
        for session in [*found.values(), *spare]:
            await session.close()


async def send(server: Gunicorn, session: aiohttp.ClientSession, body: str, count: int | None = None) -> int:
    query = "" if count is None else f"?count={count}"
    async with session.post(f"{server.base}/send/chat:1/{query}", data=body) as response:
        assert response.status == 200, await response.text()
        return int((await response.json())["pid"])


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=RECEIVE)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)  # type: ignore[no-any-return]


async def nothing_more(ws: aiohttp.ClientWebSocketResponse) -> bool:
    try:
        message = await ws.receive(timeout=0.3)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected {message}")


async def test_a_client_resumes_on_a_two_worker_gunicorn_with_exactly_what_it_missed_or_is_told_it_cannot(
    server: Gunicorn, lanes: dict[int, aiohttp.ClientSession]
) -> None:
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(f"{server.base}/ws/chat:1/")
        hello = await receive(ws)
        owner = hello["pid"]
        (other,) = set(lanes) - {owner}
        for n in range(1, 6):
            assert await send(server, lanes[other], f"first {n}") == other  # from the worker it is not on
        first = [await receive(ws) for _ in range(5)]
        assert [(m["offset"], m["data"]) for m in first] == [(n, f"first {n}") for n in range(1, 6)]
        epoch = first[0]["epoch"]
        assert {m["epoch"] for m in first} == {epoch} == {hello["joined"]["epoch"]}
        await ws.close()

        # 50 while it is away, from both workers in turn: one numbering.
        workers = sorted(lanes)
        for n in range(1, 51):
            await send(server, lanes[workers[n % 2]], f"missed {n}")

        ws = await client.ws_connect(f"{server.base}/ws/chat:1/?epoch={epoch}&offset=5")
        replayed = [await receive(ws) for _ in range(50)]
        assert [(m["offset"], m["data"]) for m in replayed] == [(5 + n, f"missed {n}") for n in range(1, 51)]
        joined = await receive(ws)
        assert joined["joined"] == {"recovered": True, "epoch": epoch, "offset": 55}
        await send(server, lanes[workers[0]], "live")
        live = await receive(ws)
        assert (live["offset"], live["data"], live["epoch"]) == (56, "live", epoch)
        assert await nothing_more(ws)
        await ws.close()

        # 150 more: history keeps 100, so offsets 57-106 are gone.
        await send(server, lanes[workers[1]], "flood", count=150)
        ws = await client.ws_connect(f"{server.base}/ws/chat:1/?epoch={epoch}&offset=56")
        joined = await receive(ws)
        assert joined["joined"] == {"recovered": False, "epoch": epoch, "offset": 206}
        assert await nothing_more(ws)
        await ws.close()


def test_history_on_the_default_ipc_backend_stops_a_preloaded_gunicorn_at_startup_saying_why(tmp_path: Path) -> None:
    server = Gunicorn("tests.apps.history_app:app", tmp_path, workers=2, env={"HISTORY_REDIS": None}, preload=True)
    with pytest.raises(RuntimeError, match=r"history= needs a backend .* the ipc backend does not"):
        server.__enter__()
