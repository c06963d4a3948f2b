"""/metrics under real gunicorn -w 3 with Redis, and under ``wsframe run``: every worker's figures in one scrape.

``tests.apps.metrics_app`` runs with ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus-client's
multiprocess mode). Each worker writes its figures every second, so the test scrapes until
the figures it expects are all in, then checks that one scrape exactly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.apps.metrics_app import FLOOD_CHUNK, FLOOD_UNSTOPPED
from tests.support.gunicorn_harness import RECEIVE, SCALE, WORKERS, Gunicorn
from tests.support.redis_server import RedisServer
from tests.support.servers import free_port, run_process, wsframe_run

pytestmark = pytest.mark.functional

CLIENTS = 30
"""At least; more if the first 30 all landed on one worker."""
MESSAGES = 10
"""Received per client (30 x 10 = 300 in all); each slow client is sent one fewer plus its flood."""
REFUSED = 5
SLOW = 2

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(session: aiohttp.ClientSession, base: str) -> Samples:
    """One GET /metrics, parsed: (sample name, sorted labels) -> value."""
    async with session.get(f"{base}/metrics", headers={"Connection": "close"}) as response:
        assert response.status == 200
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of *name* over every label set that includes *labels*."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= set(have))


async def scrape_until(
    session: aiohttp.ClientSession, base: str, done: Callable[[Samples], bool], what: str
) -> Samples:
    """Scrape until *done* holds for a scrape (workers write their figures every second); returns that scrape."""
    deadline = time.monotonic() + 20 * SCALE
    samples = await scrape(session, base)
    while not done(samples):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never showed in /metrics: {sorted(samples.items())}")
        await asyncio.sleep(0.25)
        samples = await scrape(session, base)
    return samples


class Client:
    """An echo client; ``node``/``pid`` say which worker owns it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, node: str, pid: int) -> None:
        self.ws, self.node, self.pid = ws, node, pid


async def connect(session: aiohttp.ClientSession, base: str) -> Client:
    # A connector of its own per client (limit 1, no keep-alive reuse) spreads them over the workers.
    ws = await session.ws_connect(f"{base}/echo/", max_msg_size=0)
    await ws.send_str("node")
    node, pid = (await ws.receive_str(timeout=RECEIVE)).split(":")
    return Client(ws, node, int(pid))


async def echo(client: Client, count: int) -> None:
    for i in range(count):
        await client.ws.send_str(f"m{i}")
        assert await client.ws.receive_str(timeout=RECEIVE) == f"m{i}"


async def drain_flood(client: Client) -> tuple[int | None, int]:
    """Read what a flood left queued until the close: (the close code, how many 1 MiB messages came)."""
    count = 0
    while True:
        msg = await client.ws.receive(timeout=RECEIVE * 4)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return client.ws.close_code, count
        assert msg.data != FLOOD_UNSTOPPED, "the send buffer bound never closed the flooded client"
        assert len(msg.data) == FLOOD_CHUNK
        count += 1


async def refused(session: aiohttp.ClientSession, base: str) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as error:
        await session.ws_connect(f"{base}/echo/", origin="http://evil.example")
    return error.value.status


async def open_on_two_workers(base: str) -> tuple[list[aiohttp.ClientSession], list[Client]]:
    """CLIENTS clients, each on a session of its own, then more (bounded) until two workers hold some.

    Workers share one listening socket, so on a busy machine one worker can take a whole batch.
    """
    sessions: list[aiohttp.ClientSession] = []
    clients: list[Client] = []
    while len(clients) < CLIENTS or (len({c.pid for c in clients}) < 2 and len(clients) < 10 * CLIENTS):
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        sessions.append(session)
        clients.append(await connect(session, base))
    return sessions, clients


def expected(samples: Samples, clients: int, connections: int, sent: int) -> bool:
    return (
        total(samples, "wsframe_connections") == connections
        and total(samples, "wsframe_messages_received_total") == clients * MESSAGES
        and total(samples, "wsframe_messages_sent_total") == sent
        and total(samples, "wsframe_handshakes_refused_total", reason="origin") == REFUSED
        and total(samples, "wsframe_slow_consumers_total", action="close") == SLOW
        and total(samples, "wsframe_backend_outages_total") == WORKERS
    )


async def test_one_scrape_sums_every_gunicorn_worker_and_the_gauge_heals_after_a_kill(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = {"METRICS_REDIS": private_redis.url, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    with Gunicorn("tests.apps.metrics_app:app", tmp_path, env=env) as server:
        server.wait_for_workers("/pid/")
        base = server.base
        sessions, clients = await open_on_two_workers(base)
        try:
            assert len({c.pid for c in clients}) >= 2, "every client landed on one worker"
            n = len(clients)
            slow, steady = clients[:SLOW], clients[SLOW:]
            await asyncio.gather(*(echo(c, MESSAGES - 1) for c in steady), *(echo(c, MESSAGES - 2) for c in slow))
            codes = [await refused(sessions[0], base) for _ in range(REFUSED)]
            assert codes == [403] * REFUSED
            # The flooded clients read nothing until /metrics shows both 1013 decisions: they
            # stop reading, so the kernel's buffers fill, then wsframe's past its bound.
            for c in slow:
                await c.ws.send_str("flood")
            await scrape_until(
                sessions[0],
                base,
                lambda s: total(s, "wsframe_slow_consumers_total", action="close") == SLOW,
                "both slow consumers closed",
            )
            drained = [await drain_flood(c) for c in slow]
            assert [code for code, _ in drained] == [1013] * SLOW
            # Every slow client: the node reply, MESSAGES - 2 echoes and what the flood queued.
            sent = n * MESSAGES - SLOW + sum(count for _, count in drained)

            private_redis.kill()
            await asyncio.sleep(1.0)
            private_redis.start()

            samples = await scrape_until(sessions[0], base, lambda s: expected(s, n, n - SLOW, sent), "every figure")
            assert total(samples, "wsframe_connections", route="/echo/") == n - SLOW
            assert total(samples, "wsframe_messages_received_total") == n * MESSAGES
            assert total(samples, "wsframe_messages_sent_total") == sent
            assert total(samples, "wsframe_handshakes_refused_total") == REFUSED
            assert total(samples, "wsframe_slow_consumers_total", action="close") == SLOW
            assert total(samples, "wsframe_connections_closed_total", code="1013") == SLOW
            # Each worker's Redis listener lost Redis once.
            assert total(samples, "wsframe_backend_outages_total") == WORKERS

            # SIGKILL one worker: its connections die with it, it never removes its gauge files.
            victim = steady[0].pid
            lost = sum(1 for c in steady if c.pid == victim)
            os.kill(victim, signal.SIGKILL)
            samples = await scrape_until(
                sessions[0],
                base,
                lambda s: total(s, "wsframe_connections") == n - SLOW - lost,
                f"the gauge without the {lost} connections of the killed worker",
            )
            # Counters of the killed worker stay in the sum: totals never go down.
            assert total(samples, "wsframe_messages_received_total") == n * MESSAGES
            # gunicorn replaces it; the new worker counts from zero.
            assert victim not in await asyncio.to_thread(server.wait_for_workers, "/pid/")
            fresh = await connect(sessions[-1], base)
            samples = await scrape_until(
                sessions[0],
                base,
                lambda s: total(s, "wsframe_connections") == n - SLOW - lost + 1,
                "the gauge with one more connection after the restart",
            )
            await fresh.ws.close()
        finally:
            for session in sessions:
                await session.close()


async def test_wsframe_run_serves_the_same_series_in_one_process() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with run_process(wsframe_run("tests.apps.metrics_app:app", port), port):
        async with aiohttp.ClientSession() as session:
            client = await connect(session, base)
            await echo(client, 2)
            assert await refused(session, base) == 403
            samples = await scrape(session, base)
            await client.ws.close()
    assert total(samples, "wsframe_connections", route="/echo/") == 1
    assert total(samples, "wsframe_messages_received_total") == 3
    assert total(samples, "wsframe_messages_sent_total") == 3
    assert total(samples, "wsframe_handshakes_refused_total", reason="origin") == 1
    names = {name for name, _ in samples}
    for name in (
        "wsframe_connections_opened_total",
        "wsframe_bytes_received_total",
        "wsframe_bytes_sent_total",
        "wsframe_slow_consumers_total",
        "wsframe_backend_outages_total",
        "wsframe_backend_publish_failures_total",
        "wsframe_messages_possibly_lost_total",
        "wsframe_messages_unrouted_total",
        "wsframe_group_members",
    ):
        assert name in names, name
