"""Cross-worker delivery: targeted sends (same process, Redis, local IPC) against fan-out to every worker.

Starts ``gunicorn -w 4 -k aiohttp.GunicornWebWorker`` serving this module's app
once per mode, connects websocket clients (spread over the workers by the
kernel), then asks each worker over HTTP to send to clients and measures, in
the clients::

    python -m benchmarks.cross_worker            # every mode, full size
    python -m benchmarks.cross_worker --smoke    # seconds-long check

Modes:

``same-process``  each worker sends to connections it owns (no bus hop): the ceiling.
``redis``         each worker sends to connections other workers own, through the Redis backend
                  (one PUBLISH to the owner's channel).
``ipc``           the same through the local IPC backend (``--preload``, no Redis).
``fanout``        the same through Redis, but as Panther and python-socketio do it: every send is
                  published on one channel that every worker subscribes to; each worker decodes it
                  and drops it unless it owns the connection.

For each mode: ``sends_per_s`` (every worker sending at once, 8 concurrent sends per worker, until
all clients have everything) and ``p50_ms``/``p99_ms`` latency from the send call to the client's
receipt when sends go one at a time, a millisecond apart (no queueing). Timestamps are ``CLOCK_MONOTONIC``, which all
processes on one machine share. Prints one JSON object per mode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

__all__ = ["make_app", "main"]

ROOT = Path(__file__).resolve().parent.parent
MODES = ["same-process", "redis", "ipc", "fanout"]
WORKERS = 4


# ------------------------------------------------------------ the app (in gunicorn)


async def make_app() -> web.Application:
    """The app gunicorn serves; ``BENCH_BACKEND`` picks ``redis://...``, ``fanout:redis://...`` or the default."""
    from wsframe import GenericWebsocket, create_app, send_message_to_websocket
    from wsframe.backends import RedisBackend
    from wsframe.registry import REGISTRY_KEY

    class FanoutRedisBackend(RedisBackend):
        """Every node listens on one channel; every send goes to all of them (the design we avoid)."""

        def channel_for(self, node_id: str) -> str:
            return f"{self.prefix}all"

    class Hello(GenericWebsocket):
        async def connect(self) -> None:  # type: ignore[override]  # no path variables here
            await self.accept()
            await self.send({"id": self.connection_id, "pid": os.getpid()})

    async def blast(request: web.Request) -> web.Response:
        spec = await request.json()
        targets: list[str] = spec["targets"]
        count: int = spec["count"]
        concurrency: int = spec["concurrency"]
        pause: float = spec.get("pause", 0.0)
        cursor = iter(range(count))

        async def one_sender() -> None:
            for n in cursor:
                await send_message_to_websocket(targets[n % len(targets)], str(time.monotonic_ns()))
                if pause:
                    await asyncio.sleep(pause)

        started = time.monotonic()
        await asyncio.gather(*(one_sender() for _ in range(concurrency)))
        return web.json_response({"pid": os.getpid(), "seconds": time.monotonic() - started})

    async def pid(request: web.Request) -> web.Response:
        registry = request.app[REGISTRY_KEY]
        return web.json_response({"pid": os.getpid(), "node": registry.node_id})

    spec = os.environ.get("BENCH_BACKEND", "")
    urls = {"ws/": Hello, "blast/": blast, "pid/": pid}
    if spec.startswith("fanout:"):
        return create_app(urls, backend=FanoutRedisBackend(spec.removeprefix("fanout:")), heartbeat=0)
    return create_app(urls, backend=spec or None, heartbeat=0)


# --------------------------------------------------------------- the driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    port = free_port()
    binary = shutil.which("redis-server") or "redis-server"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


@contextlib.contextmanager
def gunicorn(backend: str, *, preload: bool) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-k", "aiohttp.GunicornWebWorker"]
    args += ["-b", f"127.0.0.1:{port}", "--keep-alive", "75", "--no-control-socket", "--log-level", "warning"]
    args += ["--preload"] if preload else []
    env = {**os.environ, "BENCH_BACKEND": backend}
    process = subprocess.Popen([*args, "benchmarks.cross_worker:make_app"], cwd=ROOT, env=env)
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.asynccontextmanager
async def lanes_to_workers(base: str, per_worker: int = 2) -> AsyncIterator[dict[int, list[aiohttp.ClientSession]]]:
    """Keep-alive HTTP connections, *per_worker* to each of the workers (found by asking)."""
    lanes: dict[int, list[aiohttp.ClientSession]] = defaultdict(list)
    spare: list[aiohttp.ClientSession] = []
    try:
        deadline = time.monotonic() + 60
        while len(lanes) < WORKERS or any(len(v) < per_worker for v in lanes.values()):
            if time.monotonic() > deadline:
                raise SystemExit(f"could not reach {WORKERS} workers at {base}")
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            try:
                async with session.get(f"{base}/pid/") as response:
                    pid = (await response.json())["pid"]
            except aiohttp.ClientError:
                await session.close()
                await asyncio.sleep(0.2)
                continue
            (lanes[pid] if len(lanes[pid]) < per_worker else spare).append(session)
        yield lanes
    finally:
        for session in spare + [s for v in lanes.values() for s in v]:
            await session.close()


class Clients:
    """Websocket clients that record when each message arrived and the send timestamp it carries."""

    def __init__(self) -> None:
        self.owner: dict[str, int] = {}
        self.latencies_ns: list[int] = []
        self.received = 0
        self.changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self, session: aiohttp.ClientSession, base: str, count: int) -> None:
        """Connect until each worker owns ``count // WORKERS`` clients (the kernel picks the worker)."""
        share = max(1, count // WORKERS)
        per_worker: dict[int, int] = defaultdict(int)
        for _ in range(count * 20):
            if len(per_worker) == WORKERS and all(n >= share for n in per_worker.values()):
                return
            ws = await session.ws_connect(f"{base}/ws/", heartbeat=None, max_msg_size=0)
            hello = await ws.receive_json(timeout=10)
            if per_worker[hello["pid"]] >= share:
                await ws.close()
                continue
            per_worker[hello["pid"]] += 1
            self.owner[hello["id"]] = hello["pid"]
            self._tasks.append(asyncio.create_task(self._read(ws)))
        raise SystemExit(f"could not spread {count} clients over {WORKERS} workers: {dict(per_worker)}")

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            self.latencies_ns.append(time.monotonic_ns() - int(message.data))
            self.received += 1
            self.changed.set()

    async def wait_for(self, total: int, within: float) -> None:
        deadline = time.monotonic() + within
        while self.received < total:
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SystemExit(f"only {self.received} of {total} messages arrived within {within} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def targets_for(mode: str, worker: int, owner: dict[str, int]) -> list[str]:
    if mode == "same-process":
        return [cid for cid, pid in owner.items() if pid == worker]
    return [cid for cid, pid in owner.items() if pid != worker]


def percentile(values: list[int], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


async def measure(mode: str, base: str, sizes: dict[str, int]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as ws_session, lanes_to_workers(base) as lanes:
        clients = Clients()
        await clients.open(ws_session, base, sizes["clients"])
        try:
            pids = list(lanes)
            missing = [pid for pid in pids if not targets_for(mode, pid, clients.owner)]
            if missing:
                raise SystemExit(f"{mode}: workers {missing} have no target connections; use more clients")

            async def blast(
                pid: int, lane: aiohttp.ClientSession, count: int, concurrency: int, pause: float = 0.0
            ) -> None:
                targets = targets_for(mode, pid, clients.owner)
                body = {"targets": targets, "count": count, "concurrency": concurrency, "pause": pause}
                async with lane.post(f"{base}/blast/", json=body) as response:
                    response.raise_for_status()

            # Latency without queueing: one send every millisecond, one worker at a time.
            clients.latencies_ns.clear()
            clients.received = 0
            for pid in pids:
                await blast(pid, lanes[pid][0], sizes["latency_sends"], 1, pause=0.001)
            await clients.wait_for(sizes["latency_sends"] * len(pids), 30)
            latencies = list(clients.latencies_ns)

            # Throughput: every worker sending at once.
            clients.received = 0
            started = time.monotonic()
            await asyncio.gather(*(blast(pid, lanes[pid][1], sizes["sends_per_worker"], 8) for pid in pids))
            total = sizes["sends_per_worker"] * len(pids)
            await clients.wait_for(total, 120)
            seconds = time.monotonic() - started
        finally:
            await clients.close()
    return {
        "mode": mode,
        "workers": len(pids),
        "clients": sizes["clients"],
        "sends": total,
        "sends_per_s": round(total / seconds),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
    }


async def run(modes: list[str], sizes: dict[str, int]) -> list[dict[str, Any]]:
    results = []
    for mode in modes:
        with contextlib.ExitStack() as stack:
            if mode == "ipc":
                backend, preload = "", True
            else:
                url = stack.enter_context(redis_server())
                backend, preload = (f"fanout:{url}" if mode == "fanout" else url), False
            base, _ = stack.enter_context(gunicorn(backend, preload=preload))
            result = await measure(mode, base, sizes)
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the modes named on the command line (all by default) and print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("modes", nargs="*", help=f"some of {', '.join(MODES)} (default: all)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs, measures nothing")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.smoke:
        sizes = {"clients": 16, "latency_sends": 20, "sends_per_worker": 200}
    else:
        sizes = {"clients": 64, "latency_sends": 500, "sends_per_worker": 5000}
    asyncio.run(run(args.modes or MODES, sizes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
