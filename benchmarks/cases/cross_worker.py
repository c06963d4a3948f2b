"""Cross-worker delivery: targeted sends (same process, Redis, local IPC) against fan-out to every worker.

``python -m benchmarks.cases.cross_worker [MODE ...] [--repetitions N] [--smoke]``; ``benchmarks.run`` runs
it too (``--json``, one repetition per fresh process). ``gunicorn -w 4`` serves :func:`make_app`; one
worker sends to the others' connections, paced, then every worker sends flat out. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import aiohttp
from aiohttp import web

from .. import harness
from ..client import WsClient, connect

__all__ = ["MODES", "SMOKE", "TARGET_P99_MS", "TITLES", "Config", "main", "make_app", "paced_sends", "run_repetition"]

MODES = ("same-process", "redis", "ipc", "fanout")
TITLES = {"same-process": "same process (no hop)", "redis": "Redis, targeted (wsframe)",
          "ipc": "local IPC, targeted (wsframe, no Redis)",
          "fanout": "Redis, fan-out to every worker (Panther / python-socketio design)"}
SERVERS = (("redis", ("same-process", "redis")), ("fanout", ("fanout",)), ("ipc", ("ipc",)))
"""Each gunicorn configuration and the modes measured on it (same-process and redis share one server)."""
TARGET_P99_MS = 2.0
"""The target: a cross-worker send through Redis has a p99 under 2 ms at 1,000 messages/s on loopback."""


@dataclasses.dataclass(kw_only=True)
class Config:
    """Sizes of one repetition; the defaults are the full run."""

    workers: int = 4
    clients: int = 64
    rate: float = 1000.0
    latency_sends: int = 5000
    sends_per_worker: int = 5000
    concurrency: int = 8
    warmup_sends: int = 200
    modes: list[str] = dataclasses.field(default_factory=lambda: list(MODES))
    redis_on: Literal["server", "driver"] = "server"
    """Where redis-server runs: on the server core with the workers (default) or on the driver's core."""


SMOKE: dict[str, Any] = {"workers": 2, "clients": 8, "latency_sends": 200, "sends_per_worker": 200, "warmup_sends": 20}
"""Config overrides of ``--smoke``: checks that it runs, measures nothing."""


async def paced_sends(
    send: Callable[[str, str], Awaitable[object]], targets: list[str], count: int, rate: float
) -> dict[str, Any]:
    """Call ``send(target, text)`` *count* times at *rate* per second, cycling over *targets*; return the pacing.

    The i-th send is due at ``start + i / rate`` on the loop's clock, whatever the sends before it took: a
    sender behind schedule sends what is due back to back, so the rate holds on average (``achieved_rate``
    says whether it did). Each text is the ``CLOCK_MONOTONIC`` nanoseconds of its send call. A send that
    raises is counted in ``errors``. Sends go one at a time: after a stall, a task per send would release
    a burst, and past 100 in flight redis-py's connection pool raises instead of waiting.
    """
    loop = asyncio.get_running_loop()
    late: list[float] = []
    errors: list[str] = []
    first_ns = last_ns = 0
    start = loop.time() + 0.005  # the first send is not already late
    for i in range(count):
        due, now = start + i / rate, loop.time()
        # Half a millisecond early is on time: uvloop's clock counts whole milliseconds and rounds a
        # sleep to them, so waiting out less would not sleep at all and the sender would spin.
        while due - now > 0.0005:
            await asyncio.sleep(due - now)
            now = loop.time()
        late.append(now - due)
        last_ns = time.monotonic_ns()
        first_ns = first_ns or last_ns
        try:
            await send(targets[i % len(targets)], str(last_ns))
        except Exception as exc:
            errors.append(repr(exc))
    late.sort()
    span = (last_ns - first_ns) / 1e9
    p50, p99 = (harness.percentile(late, f) * 1000 if late else 0.0 for f in (0.5, 0.99))
    return {"pid": os.getpid(), "sent": count - len(errors), "errors": len(errors), "late_p50_ms": p50,
            "late_p99_ms": p99,
            "first_error": errors[0] if errors else None, "achieved_rate": (count - 1) / span if span else 0.0}


async def make_app() -> web.Application:
    """The app gunicorn serves; ``BENCH_BACKEND``: a ``redis://`` URL, ``fanout:redis://...``, or empty (IPC).

    ``/ws/`` sends ``{"id", "pid"}`` on accept; ``GET /pid/`` answers the worker's pid; ``POST /paced/``
    ``{"targets", "count", "rate"}`` runs :func:`paced_sends`; ``POST /blast/`` ``{"targets", "count",
    "concurrency"}`` sends as fast as *concurrency* senders go. Raises ConfigurationError for a bad URL.
    """
    from wsframe import GenericWebsocket, create_app, send_message_to_websocket
    from wsframe.backends import RedisBackend

    class FanoutRedisBackend(RedisBackend):
        """Every node listens on one channel; every send goes to all of them (the design wsframe avoids)."""

        def channel_for(self, node_id: str) -> str:
            return f"{self.prefix}all"

    class Hello(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.send({"id": self.connection_id, "pid": os.getpid()})

    async def paced(request: web.Request) -> web.Response:
        spec = await request.json()
        return web.json_response(
            await paced_sends(send_message_to_websocket, spec["targets"], spec["count"], spec["rate"])
        )

    async def blast(request: web.Request) -> web.Response:
        spec = await request.json()
        targets: list[str] = spec["targets"]
        cursor = iter(range(spec["count"]))

        async def one_sender() -> None:
            for n in cursor:
                await send_message_to_websocket(targets[n % len(targets)], str(time.monotonic_ns()))

        await asyncio.gather(*(one_sender() for _ in range(spec["concurrency"])))
        return web.json_response({"pid": os.getpid()})

    async def pid(request: web.Request) -> web.Response:
        return web.json_response({"pid": os.getpid()})

    spec = os.environ.get("BENCH_BACKEND", "")
    urls = {"ws/": Hello, "paced/": paced, "blast/": blast, "pid/": pid}
    backend = FanoutRedisBackend(spec.removeprefix("fanout:")) if spec.startswith("fanout:") else spec or None
    return create_app(urls, backend=backend, heartbeat=0)


@contextlib.asynccontextmanager
async def lanes_to_workers(port: int, workers: int) -> AsyncIterator[dict[int, aiohttp.ClientSession]]:
    """One keep-alive HTTP connection to each worker (found by asking ``/pid/`` until all have answered)."""
    lanes: dict[int, aiohttp.ClientSession] = {}
    spare: list[aiohttp.ClientSession] = []
    try:
        deadline = time.monotonic() + 60
        while len(lanes) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"reached {len(lanes)} of {workers} workers on port {port} within 60 s")
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            try:
                async with session.get(f"http://127.0.0.1:{port}/pid/") as response:
                    pid = (await response.json())["pid"]
            except aiohttp.ClientError:
                await session.close()
                await asyncio.sleep(0.2)
                continue
            if pid in lanes:
                spare.append(session)  # kept open, so the next connection is likely to reach another worker
            else:
                lanes[pid] = session
        yield lanes
    finally:
        for session in [*spare, *lanes.values()]:
            await session.close()


class Receiver:
    """What the websocket clients receive: each one's hello, a count, and latencies while recording."""

    def __init__(self) -> None:
        self.hellos: dict[WsClient, dict[str, Any]] = {}
        self.hello_arrived = asyncio.Event()
        self.latencies_ns: list[int] = []
        self.received = self.bad = self._expected = 0
        self.per_client: Counter[WsClient] = Counter()
        self._recording = False
        self._done: asyncio.Future[None] | None = None

    def on_message(self, client: WsClient, opcode: int, payload: bytes) -> None:
        now = time.monotonic_ns()
        if payload[:1] == b"{":
            self.hellos[client] = json.loads(payload)
            self.hello_arrived.set()
            return
        try:
            sent = int(payload)
        except ValueError:
            self.bad += 1
            return
        if self._recording:
            self.latencies_ns.append(now - sent)
        self.received += 1
        self.per_client[client] += 1
        if self.received >= self._expected and self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def hello(self, client: WsClient) -> dict[str, Any]:
        """The ``{"id", "pid"}`` message *client* got on connecting; TimeoutError after 10 s."""
        async with asyncio.timeout(10):
            while client not in self.hellos:
                self.hello_arrived.clear()
                await self.hello_arrived.wait()
        return self.hellos[client]

    async def collect(self, count: int, *, record: bool, within: float, during: Awaitable[Any]) -> Any:
        """Await *during* (which makes the servers send *count* messages), then until all arrived; its result.

        Raises RuntimeError when fewer than *count* arrive within *within* seconds after *during* returned.
        """
        self.received, self.latencies_ns, self._expected, self._recording = 0, [], count, record
        self.per_client.clear()
        self._done = done = asyncio.get_running_loop().create_future()
        result = await during
        try:
            await asyncio.wait_for(done, within)
        except TimeoutError:
            counts = sorted((n, c.transport is not None) for c, n in self.per_client.items())
            raise RuntimeError(
                f"only {self.received} of {count} messages arrived within {within} s; (messages, "
                f"still open) per connection: {counts}; the senders said: {str(result)[:1000]}"
            ) from None
        finally:
            self._recording = False
        return result


async def open_clients(port: int, cfg: Config, receiver: Receiver) -> dict[str, int]:
    """Connect until each worker owns ``clients // workers`` clients; return connection id -> owner pid."""
    share, per_worker, owner = max(1, cfg.clients // cfg.workers), Counter[int](), dict[str, int]()
    for _ in range(cfg.clients * 20):
        if len(per_worker) == cfg.workers and all(n >= share for n in per_worker.values()):
            return owner
        client = await connect("127.0.0.1", port, "/ws/", on_message=receiver.on_message)
        hello = await receiver.hello(client)
        if per_worker[hello["pid"]] >= share:
            client.close()
            continue
        per_worker[hello["pid"]] += 1
        owner[hello["id"]] = hello["pid"]
    raise RuntimeError(f"could not spread {cfg.clients} clients over {cfg.workers} workers: {dict(per_worker)}")


async def _post(lane: aiohttp.ClientSession, port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with lane.post(f"http://127.0.0.1:{port}{path}", json=body) as response:
        response.raise_for_status()
        result: dict[str, Any] = await response.json()
        return result


async def measure_mode(mode: str, cfg: Config, port: int, lanes: dict[int, aiohttp.ClientSession],
                       owner: dict[str, int], receiver: Receiver, meter: harness.CpuMeter,
                       first: int) -> dict[str, Any]:
    """Latency at the paced rate from one sender, then throughput with every worker sending."""
    pids = sorted(lanes)
    sender = pids[first % len(pids)]
    targets = {pid: [c for c, p in owner.items() if (p == pid) == (mode == "same-process")] for pid in pids}
    if not all(targets.values()):
        raise RuntimeError(f"{mode}: a worker has no connections to send to; use more clients")

    def blast_all(count: int, concurrency: int) -> Awaitable[list[dict[str, Any]]]:
        body = {"count": count, "concurrency": concurrency}
        return asyncio.gather(*(_post(lanes[pid], port, "/blast/", {"targets": targets[pid], **body}) for pid in pids))

    # Warm-up: every worker's send path (and its connection to Redis) is used before anything counts.
    await receiver.collect(cfg.warmup_sends * len(pids), record=False, within=30, during=blast_all(cfg.warmup_sends, 1))
    body = {"targets": targets[sender], "count": cfg.latency_sends, "rate": cfg.rate}
    meter.start()
    sending = _post(lanes[sender], port, "/paced/", body)
    paced = await receiver.collect(cfg.latency_sends, record=True, within=30, during=sending)
    cpu = meter.stop()
    if paced["pid"] != sender or paced["errors"]:
        raise RuntimeError(f"{mode}: paced sends went to worker {paced['pid']} (not {sender}) or failed: {paced}")
    latencies = sorted(receiver.latencies_ns)
    total = cfg.sends_per_worker * len(pids)
    meter.start()
    started = time.perf_counter()
    await receiver.collect(total, record=False, within=120, during=blast_all(cfg.sends_per_worker, cfg.concurrency))
    seconds = time.perf_counter() - started
    figures = {"mode": mode, "sender_pid": sender, "targets": len(targets[sender]), "samples": len(latencies)}
    figures |= {"p50_ms": harness.percentile(latencies, 0.5) / 1e6, "p99_ms": harness.percentile(latencies, 0.99) / 1e6}
    figures |= {"max_ms": latencies[-1] / 1e6, "achieved_rate": paced["achieved_rate"], "sends_per_s": total / seconds}
    return {**figures, "late_p99_ms": paced["late_p99_ms"], **cpu, **meter.stop("throughput_")}


async def run_repetition(cfg: Config, *, first: int, use_uvloop: bool, server_core: int | None,
                         driver_core: int | None) -> dict[str, dict[str, Any]]:
    """Measure every mode of *cfg* once, on fresh servers; return mode -> figures.

    Raises RuntimeError when redis-server is missing, a server does not start, or messages go missing.
    """
    servers = [(kind, [m for m in modes if m in cfg.modes]) for kind, modes in SERVERS]
    servers = [(kind, modes) for kind, modes in servers if modes]
    shift, results = first % len(servers), {}
    with contextlib.ExitStack() as stack:
        url, redis_pid = "", None
        if any(kind != "ipc" for kind, _ in servers):
            redis_core = driver_core if cfg.redis_on == "driver" else server_core
            url, redis = stack.enter_context(harness.redis_server(redis_core))
            redis_pid = redis.pid
        for kind, modes in servers[shift:] + servers[:shift]:
            backend = {"redis": url, "fanout": f"fanout:{url}", "ipc": ""}[kind]
            args, env = ("--keep-alive", "75", *(["--preload"] if kind == "ipc" else [])), {"BENCH_BACKEND": backend}
            app = "benchmarks.cases.cross_worker:make_app"
            with harness.gunicorn(app, workers=cfg.workers, core=server_core, use_uvloop=use_uvloop, env=env,
                                  args=args) as server:
                print(f"cross-worker: {kind} server, modes {', '.join(modes)}", file=sys.stderr, flush=True)
                receiver = Receiver()
                async with lanes_to_workers(server.port, cfg.workers) as lanes:
                    owner = await open_clients(server.port, cfg, receiver)
                    groups = {"server_cpu": sorted(lanes)}
                    groups |= {"redis_cpu": [redis_pid]} if redis_pid and kind != "ipc" else {}
                    meter = harness.CpuMeter(**groups)
                    for mode in modes[first % len(modes) :] + modes[: first % len(modes)]:
                        results[mode] = await measure_mode(mode, cfg, server.port, lanes, owner, receiver, meter, first)
                    for client in receiver.hellos:
                        client.close()
                if receiver.bad:
                    raise RuntimeError(f"{receiver.bad} messages carried no timestamp")
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the repetitions; print the Markdown table, or with ``--json`` one repetition's figures as JSON."""
    parser = argparse.ArgumentParser(description="Cross-worker delivery through Redis, local IPC and fan-out.")
    parser.add_argument("modes", nargs="*", help=f"some of {', '.join(MODES)} (default: all)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs, measures nothing")
    parser.add_argument("--repetitions", type=int, default=1)
    parser.add_argument("--config", default="{}", help="JSON object of Config fields")
    parser.add_argument("--first", type=int, default=0, help="rotates the order of servers and modes, and the sender")
    parser.add_argument("--json", action="store_true", help="print one repetition as JSON (benchmarks.run uses this)")
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's loop and GunicornWebWorker")
    parser.add_argument("--no-pin", action="store_true", help="pin nothing")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.modes) - set(MODES)):
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    cfg = Config(**{**(SMOKE if args.smoke else {}), **json.loads(args.config)})
    cfg.modes = args.modes or cfg.modes
    server_core, driver_core = (None, None) if args.no_pin else harness.cores()
    if driver_core is not None:
        os.sched_setaffinity(0, {driver_core})
    use_uvloop = harness.uvloop_available() and not args.no_uvloop
    meta = {"config": dataclasses.asdict(cfg), "worker_class": harness.worker_class(use_uvloop),
            "redis": harness.redis_version(), "server_core": server_core,
            "client_loop": f"uvloop {harness.version('uvloop')}" if use_uvloop else "asyncio",
            "redis_core": driver_core if cfg.redis_on == "driver" else server_core, "driver_core": driver_core}
    pins = {"server_core": server_core, "driver_core": driver_core}
    runs = [harness.run_loop(run_repetition(cfg, first=args.first + r, use_uvloop=use_uvloop, **pins), use_uvloop)
            for r in range(1 if args.json else args.repetitions)]
    if args.json:
        sys.stdout.write(json.dumps({"results": runs[0], "meta": meta}) + "\n")
    else:
        from ..report import cross_worker_markdown, cross_worker_summary

        sys.stdout.write(cross_worker_markdown(cross_worker_summary(runs, meta)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
