"""A rolling restart (``kill -HUP`` of the gunicorn master) while 1,000 resumable clients receive 500 messages/s.

``tests.apps.history_app:app`` under ``gunicorn -w 2`` on the shared Redis. 1,000 clients in 50
history groups of 20; a ``wsframe.Publisher`` (the app's prefix and history) sends 500 messages a
second, round robin over the groups, straight to Redis, so sending does not depend on the workers
being restarted. On HUP gunicorn starts new workers and stops the old ones gracefully: their
connections close with 1001, and each client reconnects after a random delay with the position of
the last frame it received. At the end every client holds one contiguous run of offsets, up to the
last message of its group, with no duplicate.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.gunicorn_harness import SCALE, Gunicorn
from tests.support.nodes import redis_prefix
from tests.support.redis_server import SHARED_REDIS_URL
from wsframe import History, Publisher

pytestmark = pytest.mark.functional

CLIENTS, GROUPS, RATE = 1000, 50, 500
SIZE = 20_000
"""History kept per group: far more than a group gets in the test (10 messages/s for about 8 s), so a
client away for the whole restart still resumes; what is tested is the seam, not the window."""


@pytest.fixture
def prefix() -> str:
    return redis_prefix()


@pytest.fixture
def server(tmp_path: Path, prefix: str) -> Iterator[Gunicorn]:
    env = {"HISTORY_REDIS": SHARED_REDIS_URL, "HISTORY_PREFIX": prefix, "HISTORY_SIZE": str(SIZE)}
    with Gunicorn("tests.apps.history_app:app", tmp_path, workers=2, env=env, graceful_timeout=5) as started:
        started.wait_for_workers("/pid/")
        yield started


class Client:
    """One resumable client: reconnects with its last position whenever its connection ends, until stopped."""

    def __init__(self, session: aiohttp.ClientSession, base: str, group: str) -> None:
        self.session, self.base, self.group = session, base, group
        self.offsets: list[int] = []
        self.epochs: set[str] = set()
        self.position: tuple[str, int] | None = None
        self.joined: list[dict[str, Any]] = []
        self.closes: Counter[int | None] = Counter()
        self.other: list[dict[str, Any]] = []
        self.stopping = False
        self.ready = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self.stopping:
            query = "" if self.position is None else f"?epoch={self.position[0]}&offset={self.position[1]}"
            try:
                async with self.session.ws_connect(f"{self.base}/ws/{self.group}/{query}") as ws:
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            self._frame(json.loads(message.data))
                    self.closes[ws.close_code] += 1
            except (aiohttp.ClientError, OSError):
                self.closes[None] += 1
            if not self.stopping:
                await asyncio.sleep(random.uniform(0.05, 1.0))  # jitter: 1,000 clients do not come back at once

    def _frame(self, frame: dict[str, Any]) -> None:
        if "joined" in frame:
            self.joined.append(frame["joined"])
            if self.position is None:
                self.position = (frame["joined"]["epoch"], frame["joined"]["offset"])
            if not self.ready.done():
                self.ready.set_result(None)
        elif "data" in frame:
            self.offsets.append(frame["offset"])
            self.epochs.add(frame["epoch"])
            self.position = (frame["epoch"], frame["offset"])
        else:
            self.other.append(frame)


def publish(prefix: str, seconds: float, counts: Counter[str], hup: threading.Event, master: int) -> None:
    """Send RATE messages/s for *seconds*, round robin over the groups; HUP the master a third of the way in."""
    history = {"chat:": History(size=SIZE, ttl=300)}
    with Publisher(SHARED_REDIS_URL, prefix=prefix, history=history) as publisher:
        started, total = time.monotonic(), int(RATE * seconds)
        for i in range(total):
            due = started + i / RATE
            if (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
            if i == total // 3:
                os.kill(master, signal.SIGHUP)
                hup.set()
            group = f"chat:roll:{i % GROUPS}"
            publisher.send_message_to_group(group, f"m{i}")
            counts[group] += 1


async def test_a_rolling_restart_leaves_every_resumable_client_one_contiguous_run_of_offsets(
    server: Gunicorn, prefix: str
) -> None:
    old_workers = server.worker_pids()
    counts: Counter[str] = Counter()
    hup = threading.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        clients = [Client(session, server.base, f"chat:roll:{n % GROUPS}") for n in range(CLIENTS)]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.ready for c in clients)), 60 * SCALE)
            await asyncio.to_thread(publish, prefix, 6.0, counts, hup, server.pid)
            assert hup.is_set()
            # Every client has caught up with the last message of its group.
            deadline = time.monotonic() + 60 * SCALE
            while time.monotonic() < deadline:
                if all(c.offsets and c.offsets[-1] == counts[c.group] for c in clients):
                    break
                await asyncio.sleep(0.1)
        finally:
            for client in clients:
                client.stopping = True
            await asyncio.sleep(0)
            for client in clients:
                client.task.cancel()
            await asyncio.gather(*(c.task for c in clients), return_exceptions=True)

    assert not (server.worker_pids() & old_workers), "the old workers are gone after the HUP"
    restarted = [c for c in clients if c.closes[1001]]
    assert len(restarted) == CLIENTS, f"{CLIENTS - len(restarted)} clients were never closed with 1001"
    for client in clients:
        first = client.offsets[0]
        assert client.offsets == list(range(first, counts[client.group] + 1)), client.group
        assert len(client.epochs) == 1
        assert all(joined["recovered"] for joined in client.joined)
        assert client.other == []
    assert sum(len(c.joined) for c in clients) >= 2 * CLIENTS  # each joined, and resumed at least once
