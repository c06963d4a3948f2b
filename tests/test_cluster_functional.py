"""Real gunicorn, real workers: sends and closes by id cross process boundaries, and survive faults.

Every test starts ``gunicorn -w 3 -k aiohttp.GunicornWebWorker tests.apps.cluster_app:app``
on a free port, with the Redis backend (a private redis-server), the Redis Cluster
backend (a private six-node cluster) or with the
default local IPC backend (``--preload`` and without it). Sends go through the
app's ``POST send/<id>/?remote=1`` endpoint over keep-alive HTTP connections
whose worker pid is known, so each one is handled by a worker that does not
own the target connection; the endpoint answers 409 instead of sending when
it lands on the owner, and the test retries on another connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.gunicorn_harness import RECEIVE, SCALE, Gunicorn
from tests.support.redis_cluster import RedisCluster, own_cluster
from tests.support.redis_server import RedisServer, own_redis
from tests.support.servers import free_port
from wsframe.backends.ipc import runtime_base

pytestmark = pytest.mark.functional


# --------------------------------------------------------------------- harness


def cluster_gunicorn(log_dir: Path, *, preload: bool, backend: str | None) -> Gunicorn:
    """``tests.apps.cluster_app`` under gunicorn -w 3 on *backend* (a URL; None: the default, IPC)."""
    return Gunicorn(
        "tests.apps.cluster_app:app", log_dir, preload=preload, env={"CLUSTER_BACKEND": backend}, keep_alive=75
    )


@dataclass
class Lane:
    """A keep-alive HTTP connection to one worker (pid as last seen)."""

    session: aiohttp.ClientSession
    pid: int


@dataclass
class Cluster:
    """A started gunicorn plus HTTP lanes to each of its workers."""

    server: Gunicorn
    lanes: dict[int, list[Lane]] = field(default_factory=lambda: defaultdict(list))
    handled_by: list[tuple[int, int]] = field(default_factory=list)
    """(owner pid, handler pid) of every accepted send or close."""
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    async def open_lanes(self, per_worker: int = 4, deadline: float = 30.0) -> None:
        """Open keep-alive connections until every worker has *per_worker* of them (workers booting meanwhile)."""
        end = time.monotonic() + deadline * SCALE
        spare: list[aiohttp.ClientSession] = []
        try:
            while time.monotonic() < end:
                alive = self.server.worker_pids()
                if len(alive) == self.server.workers and all(len(self.lanes[p]) >= per_worker for p in alive):
                    return
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
                try:
                    async with session.get(f"{self.server.base}/pid/") as response:
                        pid = (await response.json())["pid"]
                except aiohttp.ClientError:
                    await session.close()
                    await asyncio.sleep(0.1)
                    continue
                if len(self.lanes[pid]) < per_worker:
                    self.lanes[pid].append(Lane(session, pid))
                else:
                    spare.append(session)
            raise AssertionError(f"could not reach {self.server.workers} workers:\n{self.server.log()}")
        finally:
            for session in spare:
                await session.close()

    async def close(self) -> None:
        for lanes in self.lanes.values():
            for lane in lanes:
                await lane.session.close()

    def lane_avoiding(self, owner: int) -> Lane:
        """A lane to some worker other than *owner*, rotating over the others."""
        candidates = [lane for pid, lanes in self.lanes.items() if pid != owner for lane in lanes]
        if not candidates:
            raise AssertionError(f"no HTTP connection to a worker other than {owner}")
        return candidates[next(self._turn) % len(candidates)]

    async def by_id(
        self, action: str, owner: int, connection_id: str, body: bytes = b"", query: str = ""
    ) -> dict[str, Any]:
        """POST ``<action>/<id>/?remote=1`` through a worker other than *owner*; return the JSON answer."""
        for _ in range(20):
            lane = self.lane_avoiding(owner)
            url = f"{self.server.base}/{action}/{connection_id}/?remote=1{query}"
            async with lane.session.post(url, data=body) as response:
                answer: dict[str, Any] = await response.json()
                answer["status"] = response.status
            if answer["pid"] != lane.pid:
                # The keep-alive connection was replaced and landed elsewhere.
                self.lanes[lane.pid].remove(lane)
                lane.pid = answer["pid"]
                self.lanes[lane.pid].append(lane)
            if response.status == 409:
                continue
            if response.status == 200:
                self.handled_by.append((owner, answer["pid"]))
            return answer
        raise AssertionError(f"every try to {action} {connection_id} landed on its owner {owner}")


@dataclass
class Client:
    ws: aiohttp.ClientWebSocketResponse
    connection_id: str
    pid: int


async def open_clients(session: aiohttp.ClientSession, base: str, count: int) -> list[Client]:
    async def one() -> Client:
        ws = await session.ws_connect(f"{base}/ws/", heartbeat=None, autoping=True)
        hello = await ws.receive_json(timeout=RECEIVE)
        return Client(ws, hello["id"], hello["pid"])

    clients: list[Client] = []
    for start in range(0, count, 50):
        clients += await asyncio.gather(*(one() for _ in range(min(50, count - start))))
    return clients


async def open_clients_on_two_workers(session: aiohttp.ClientSession, base: str, count: int) -> list[Client]:
    """Open *count* clients, then more (bounded) until at least two workers hold one.

    Workers share one listening socket, so on a busy machine one worker can take a whole batch.
    """
    clients = await open_clients(session, base, count)
    while len({c.pid for c in clients}) < 2 and len(clients) < 10 * count:
        clients += await open_clients(session, base, 10)
    return clients


@contextlib.asynccontextmanager
async def cluster_of(server: Gunicorn) -> AsyncIterator[Cluster]:
    cluster = Cluster(server)
    try:
        await cluster.open_lanes()
        yield cluster
    finally:
        await cluster.close()


# -------------------------------------------------------------------- fixtures

MODES = ["redis", "redis-cluster", "ipc-preload", "ipc"]


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    with own_redis() as server:
        yield server


@pytest.fixture(scope="module")
def module_redis_cluster() -> Iterator[RedisCluster]:
    with own_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module", params=MODES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, module_redis: RedisServer
) -> Iterator[Gunicorn]:
    mode = request.param
    backend = module_redis.url if mode == "redis" else None
    if mode == "redis-cluster":  # six redis-server processes, started only for this mode
        backend = request.getfixturevalue("module_redis_cluster").url
    log_dir = tmp_path_factory.mktemp("gunicorn")
    with cluster_gunicorn(log_dir, preload=mode != "ipc", backend=backend) as server:
        yield server
    assert "Traceback" not in server.log()


@pytest.fixture
async def cluster(server: Gunicorn) -> AsyncIterator[Cluster]:
    async with cluster_of(server) as cluster:
        yield cluster


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


# ------------------------------------------------------------ delivery, 3 modes


async def test_2000_sends_from_other_workers_reach_their_connection_once_in_order(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    clients = await open_clients(session, cluster.server.base, 200)
    assert len({c.pid for c in clients}) >= 2, "all 200 clients landed on one worker"
    limit = asyncio.Semaphore(40)

    async def sender(i: int, client: Client) -> None:
        for k in range(10):
            async with limit:
                answer = await cluster.by_id("send", client.pid, client.connection_id, f"{i}:{k}".encode())
            assert answer["status"] == 200, answer
        # A final marker proves nothing extra (a duplicate) sits between the ten.
        answer = await cluster.by_id("send", client.pid, client.connection_id, b"end")
        assert answer["status"] == 200, answer

    await asyncio.gather(*(sender(i, c) for i, c in enumerate(clients)))
    for i, client in enumerate(clients):
        received = [(await client.ws.receive(timeout=RECEIVE)).data for _ in range(11)]
        assert received == [f"{i}:{k}" for k in range(10)] + ["end"]
    cross = [(owner, handler) for owner, handler in cluster.handled_by if owner != handler]
    assert len(cross) == len(cluster.handled_by) == 2200
    assert len({handler for _, handler in cross}) >= 2


async def test_bytes_sent_from_other_workers_arrive_as_binary_frames(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    clients = await open_clients(session, cluster.server.base, 30)
    for i, client in enumerate(clients):
        for k in range(4):
            payload = bytes([i, k, 0, 255])
            answer = await cluster.by_id("send", client.pid, client.connection_id, payload, "&binary=1")
            assert answer["status"] == 200, answer
    for i, client in enumerate(clients):
        messages = [await client.ws.receive(timeout=RECEIVE) for _ in range(4)]
        assert [(m.type, m.data) for m in messages] == [
            (aiohttp.WSMsgType.BINARY, bytes([i, k, 0, 255])) for k in range(4)
        ]


async def test_close_by_id_from_another_worker_delivers_code_and_reason(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    clients = await open_clients(session, cluster.server.base, 30)
    for i, client in enumerate(clients):
        answer = await cluster.by_id(
            "close", client.pid, client.connection_id, query=f"&code={4000 + i}&reason=bye+{i}"
        )
        assert answer["status"] == 200, answer
    for i, client in enumerate(clients):
        message = await client.ws.receive(timeout=RECEIVE)
        assert (message.type, message.data, message.extra) == (aiohttp.WSMsgType.CLOSE, 4000 + i, f"bye {i}")


# ---------------------------------------------------------------------- faults


async def wait_for(condition: str, check: object, deadline: float) -> float:
    """Poll the callable *check* until it returns true; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < deadline * SCALE:
        result = check() if callable(check) else check
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{condition} did not happen within {deadline * SCALE} s")


async def test_redis_killed_and_restarted_mid_traffic_fails_fast_then_resumes(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    with own_redis() as redis, cluster_gunicorn(tmp_path, preload=False, backend=redis.url) as server:
        async with cluster_of(server) as cluster:
            clients = await open_clients(session, server.base, 20)
            workers_before = server.worker_pids()
            answers: list[tuple[float, dict[str, Any]]] = []
            stop = asyncio.Event()

            async def traffic(client: Client) -> None:
                for n in itertools.count():
                    if stop.is_set():
                        return
                    answer = await cluster.by_id("send", client.pid, client.connection_id, str(n).encode())
                    answers.append((time.monotonic(), answer))
                    await asyncio.sleep(0.02)

            senders = [asyncio.create_task(traffic(c)) for c in clients]
            await asyncio.sleep(1.0)
            redis.kill()
            killed_at = time.monotonic()
            await asyncio.sleep(2.0)
            redis.start()
            restarted_at = time.monotonic()

            def delivering_again() -> bool:
                recent = [a for t, a in answers if t > restarted_at]
                return len(recent) >= 40 and all(a["status"] == 200 for a in recent[-40:])

            resumed_after = await wait_for("delivery resuming", delivering_again, 15.0)
            stop.set()
            await asyncio.gather(*senders)

            # Sends during the outage failed fast and said why.
            failed = [a for t, a in answers if a["status"] == 503]
            assert failed, "no send failed while Redis was down"
            assert all(killed_at - 0.5 < t < restarted_at + resumed_after + 0.5 for t, a in answers if a in failed)
            assert max(a["elapsed"] for a in failed) < 1.0
            assert all(f"Redis at {redis.url}" in a["error"] for a in failed)
            # Every client still gets messages: exactly once, in order, the ones sent after the restart all there.
            for client in clients:
                answer = await cluster.by_id("send", client.pid, client.connection_id, b"last")
                assert answer["status"] == 200
                numbers: list[int] = []
                while (data := (await client.ws.receive(timeout=RECEIVE)).data) != "last":
                    numbers.append(int(data))
                assert numbers == sorted(set(numbers))
            assert server.worker_pids() == workers_before
            log = server.log()
            assert log.count("is unreachable") == len(workers_before)
            assert log.count("reachable again after") == len(workers_before)
            assert "Traceback" not in log


@pytest.mark.parametrize("mode", ["redis", "ipc-preload"])
async def test_sigkilled_worker_is_replaced_and_sends_to_its_ids_are_dropped_quietly(
    mode: str, tmp_path: Path, session: aiohttp.ClientSession, module_redis: RedisServer
) -> None:
    backend = module_redis.url if mode == "redis" else None
    with cluster_gunicorn(tmp_path, preload=mode != "redis", backend=backend) as server:
        async with cluster_of(server) as cluster:
            clients = await open_clients_on_two_workers(session, server.base, 30)
            victim = clients[0].pid
            orphans = [c for c in clients if c.pid == victim]
            survivors = [c for c in clients if c.pid != victim]
            assert survivors, "all clients landed on one worker"
            for lane in cluster.lanes.pop(victim):
                await lane.session.close()
            os.kill(victim, signal.SIGKILL)
            for client in orphans:
                message = await client.ws.receive(timeout=RECEIVE)
                assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            await wait_for(
                "a replacement worker",
                lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 3,
                20.0,
            )
            for client in orphans:
                answer = await cluster.by_id("send", client.pid, client.connection_id, b"into the void")
                assert answer["status"] == 200, answer
            for client in survivors:
                answer = await cluster.by_id("send", client.pid, client.connection_id, b"still here")
                assert answer["status"] == 200, answer
                assert (await client.ws.receive(timeout=RECEIVE)).data == "still here"
            assert "Traceback" not in server.log()


async def test_sigterm_closes_that_workers_connections_with_1001_and_no_others(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    with cluster_gunicorn(tmp_path, preload=True, backend=None) as server:
        async with cluster_of(server) as cluster:
            clients = await open_clients_on_two_workers(session, server.base, 30)
            victim = clients[0].pid
            leaving = [c for c in clients if c.pid == victim]
            staying = [c for c in clients if c.pid != victim]
            for lane in cluster.lanes.pop(victim):
                await lane.session.close()
            os.kill(victim, signal.SIGTERM)
            for client in leaving:
                # gunicorn's --graceful-timeout is 10 s: the close must come before it kills the worker.
                message = await client.ws.receive(timeout=10.0)
                assert (message.type, message.data, message.extra) == (
                    aiohttp.WSMsgType.CLOSE,
                    1001,
                    "Server shutdown",
                )
            for client in staying:
                answer = await cluster.by_id("send", client.pid, client.connection_id, b"unaffected")
                assert answer["status"] == 200, answer
                assert (await client.ws.receive(timeout=RECEIVE)).data == "unaffected"
            await wait_for("a replacement worker", lambda: victim not in server.worker_pids(), 20.0)
            assert "Traceback" not in server.log()


async def test_unreachable_redis_at_startup_stops_gunicorn_with_an_error_naming_the_url(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    server = cluster_gunicorn(tmp_path, preload=False, backend=url)
    server.start()
    assert server.process is not None
    try:
        code = server.process.wait(30 * SCALE)
    finally:
        server.stop()
    assert code != 0
    assert f"Redis at {url} is unreachable at startup" in server.log()


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
async def test_the_ipc_socket_directory_is_removed_when_gunicorn_stops(tmp_path: Path, preload: bool) -> None:
    with cluster_gunicorn(tmp_path, preload=preload, backend=None) as server:
        async with cluster_of(server) as cluster:
            directory = runtime_base() / f"gunicorn-{server.pid}"
            assert len(list(directory.glob("*.sock"))) == 3
            assert len(cluster.lanes) == 3
        assert server.stop() == 0
        assert not directory.exists()


async def test_memory_backend_under_gunicorn_warns_that_workers_cannot_reach_each_other(tmp_path: Path) -> None:
    with cluster_gunicorn(tmp_path, preload=True, backend="memory://") as server:
        async with cluster_of(server):
            pass
        assert "cannot reach connections in other workers" in server.log()


async def test_hup_replaces_every_worker_closing_with_1001_and_the_new_ones_reach_each_other(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    with cluster_gunicorn(tmp_path, preload=True, backend=None) as server:
        async with cluster_of(server):
            old_clients = await open_clients(session, server.base, 12)
        old_workers = server.worker_pids()
        os.kill(server.pid, signal.SIGHUP)
        for client in old_clients:
            message = await client.ws.receive(timeout=10.0)
            assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1001)
        await wait_for(
            "a new generation of workers",
            lambda: len(server.worker_pids()) == 3 and not server.worker_pids() & old_workers,
            20.0,
        )
        async with cluster_of(server) as cluster:
            clients = await open_clients(session, server.base, 12)
            for client in clients:
                answer = await cluster.by_id("send", client.pid, client.connection_id, b"new generation")
                assert answer["status"] == 200, answer
                assert (await client.ws.receive(timeout=RECEIVE)).data == "new generation"
        assert "Traceback" not in server.log()
