"""Redis faults on a node's paths to Redis: replies lost or late, a Redis that hangs or dies.

The outbox must never publish a message twice nor call a published one "not sent"; the listener
must notice a hung Redis however late the event loop wakes it, and never take a healthy one for an
outage; the backend's shutdown must return whatever redis-py was doing when it was cancelled.

Real Redis, real sockets; the only stand-in is a loopback TCP proxy that cuts a connection the
way a network fault would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.nodes import connect, node_app, redis_backend_of, wait_until_down, wait_until_up
from tests.support.rawclient import TEXT, TIMEOUT, Frame
from tests.support.redis_server import SHARED_REDIS_URL, RedisServer
from tests.support.servers import Serve
from wsframe import BackendUnavailableError
from wsframe.backends import RedisBackend
from wsframe.registry import REGISTRY_KEY, Registry

# --------------------------------------------------------------- the outbox


class ReplyCuttingProxy:
    """A loopback TCP proxy to the shared Redis that, when armed, cuts the connection carrying the
    next integer reply (a PUBLISH's receiver count) instead of forwarding it: Redis has executed the
    command, the client never hears so."""

    def __init__(self) -> None:
        self.armed = False
        self.cut = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[object]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=TIMEOUT)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_writer)
        try:
            redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", 6379)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.add(redis_writer)

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                redis_writer.write(data)
            redis_writer.close()

        async def downstream() -> None:
            while data := await redis_reader.read(65536):
                if self.armed and data.startswith(b":"):
                    self.armed = False
                    self.cut += 1
                    client_writer.transport.abort()
                    redis_writer.close()
                    return
                client_writer.write(data)
            client_writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        client_writer.transport.abort()
        redis_writer.transport.abort()


@pytest.fixture
async def cutting_proxy() -> AsyncIterator[ReplyCuttingProxy]:
    proxy = ReplyCuttingProxy()
    await proxy.start()
    yield proxy
    await proxy.aclose()


# Failed before 2f04cc8: the command pool retries a PUBLISH (Retry(NoBackoff(), 1)) when its reply is lost
# after Redis ran it, so the message is published twice and the send reports success: at-most-once is broken
# silently.
async def test_a_publish_whose_reply_is_lost_is_not_published_twice(
    cutting_proxy: ReplyCuttingProxy, serve: Serve, prefix: str
) -> None:
    sender = await serve(node_app(RedisBackend(cutting_proxy.url, prefix=prefix)))
    owner = await serve(node_app(RedisBackend(SHARED_REDIS_URL, prefix=prefix)))
    ws, connection_id = await connect(owner)
    registry = sender.app[REGISTRY_KEY]
    cutting_proxy.armed = True
    with contextlib.suppress(BackendUnavailableError):  # failing is fine: the outcome is unknown
        await registry.send(connection_id, "once")
    assert cutting_proxy.cut == 1
    await registry.send(connection_id, "marker")
    frames = [await ws.read_frame(TIMEOUT), await ws.read_frame(TIMEOUT)]
    assert [frame.text for frame in frames if frame is not None] == ["once", "marker"]


# Failed before 2f04cc8: a PUBLISH that timed out after it was written is reported 'not sent. Retry when Redis
# is back', yet Redis runs it when it catches up: the error should say the outcome is unknown.
async def test_a_publish_that_timed_out_on_the_wire_is_not_reported_as_not_sent(
    serve: Serve, private_redis: RedisServer
) -> None:
    sender = await serve(node_app(RedisBackend(private_redis.url, prefix="p:", operation_timeout=0.3)))
    owner = await serve(node_app(RedisBackend(private_redis.url, prefix="p:")))
    ws, connection_id = await connect(owner)
    private_redis.pause()  # hung: the PUBLISH is written, Redis reads it later
    with pytest.raises(BackendUnavailableError) as caught:
        await sender.app[REGISTRY_KEY].send(connection_id, "reported lost")
    private_redis.resume()
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"reported lost")  # it was published after all
    assert "not sent" not in str(caught.value)


async def test_sends_under_a_batch_that_redis_died_under_fail_and_the_outbox_sends_again_once_it_is_back(
    serve: Serve, private_redis: RedisServer
) -> None:
    sender = await serve(node_app(RedisBackend(private_redis.url, prefix="p:")))
    owner = await serve(node_app(RedisBackend(private_redis.url, prefix="p:")))
    ws, connection_id = await connect(owner)
    registry = sender.app[REGISTRY_KEY]
    private_redis.pause()
    # The first goes out alone and hangs; the others wait behind it for the next batch.
    sends = [asyncio.ensure_future(registry.send(connection_id, f"lost {i}")) for i in range(5)]
    await asyncio.sleep(0.05)
    private_redis.kill()
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert [type(result) for result in results] == [BackendUnavailableError] * 5
    private_redis.start()
    await wait_until_up(redis_backend_of(sender))
    await wait_until_up(redis_backend_of(owner))
    await registry.send(connection_id, "after")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"after")


# ------------------------------------------------------------ the listener


async def test_one_loop_stall_during_a_redis_hang_delays_detection_but_does_not_prevent_it(
    serve: Serve, private_redis: RedisServer
) -> None:
    node = await serve(node_app(RedisBackend(private_redis.url, prefix="p:", health_check_interval=0.05)))
    await asyncio.sleep(0.1)  # the listener is idle, pinging
    private_redis.pause()
    time.sleep(0.3)  # noqa: ASYNC251 - a six-interval GC pause while Redis is hung
    await wait_until_down(node)
    stats = redis_backend_of(node).stats
    assert (stats.outages, stats.loop_stalls) == (1, 1)


# Failed before 2f04cc8: _pump forgets the unanswered PING after every late wait, so while each wait comes
# back over 1.5 intervals late (a loop that keeps blocking) a hung Redis is never taken for an outage.
async def test_a_hung_redis_is_noticed_even_when_every_wait_of_the_listener_comes_back_late(
    serve: Serve, private_redis: RedisServer
) -> None:
    interval = 0.02
    node = await serve(node_app(RedisBackend(private_redis.url, prefix="p:", health_check_interval=interval)))
    await asyncio.sleep(5 * interval)  # the listener is idle, pinging
    private_redis.pause()
    for _ in range(60):  # 120 intervals, none of which the listener gets to wait out on time
        time.sleep(2 * interval)  # noqa: ASYNC251 - a handler that blocks the loop, again and again
        await asyncio.sleep(0)
    stats = redis_backend_of(node).stats
    assert stats.loop_stalls >= 3  # the listener ran between the blocks, and saw them
    assert stats.outages == 1


async def test_a_healthy_redis_is_not_taken_for_an_outage_when_every_wait_of_the_listener_comes_back_late(
    serve: Serve, prefix: str
) -> None:
    interval = 0.02
    sender = await serve(node_app(RedisBackend(SHARED_REDIS_URL, prefix=prefix)))
    owner = await serve(node_app(RedisBackend(SHARED_REDIS_URL, prefix=prefix, health_check_interval=interval)))
    ws, connection_id = await connect(owner)
    await asyncio.sleep(5 * interval)
    for _ in range(60):  # the same blocking loop as above, with Redis answering every PING
        time.sleep(2 * interval)  # noqa: ASYNC251 - a handler that blocks the loop, again and again
        await asyncio.sleep(0)
    stats = redis_backend_of(owner).stats
    assert stats.loop_stalls >= 3
    assert stats.outages == 0
    await sender.app[REGISTRY_KEY].send(connection_id, "still subscribed")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"still subscribed")


# ----------------------------------------------------------------- shutdown


async def test_backend_shutdown_returns_even_when_a_cancel_lands_while_redis_py_writes(prefix: str) -> None:
    for _ in range(10):
        # Presence refreshed every millisecond: the task is inside a redis-py write most of the time.
        backend = RedisBackend(SHARED_REDIS_URL, prefix=prefix, presence_ttl=0.003, health_check_interval=0.001)
        await backend.on_startup(Registry(backend))
        await asyncio.sleep(0.02)
        stopping = asyncio.ensure_future(backend.on_shutdown())
        await asyncio.wait([stopping], timeout=TIMEOUT)
        tasks = (backend._keepalive, backend._listener)
        stuck = [task.get_name() for task in tasks if task is not None and not task.done()]
        while not stopping.done():  # let the test end either way: cancel again until shutdown returns
            for task in (backend._keepalive, backend._listener):
                if task is not None:
                    task.cancel()
            await asyncio.wait([stopping], timeout=0.1)
        assert stuck == []
