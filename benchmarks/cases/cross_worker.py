"""Cross-worker delivery under ``gunicorn -w 4``: one worker sends to the others' connections (Redis, a three-master
Redis Cluster, IPC, Redis fanned out to every worker, or its own), paced, then every worker flat out; and through
Redis to a group with one member on each other worker, without and with history.
``benchmarks.run`` runs one repetition per ``python -m benchmarks.cases.cross_worker [--config JSON]``, which
prints its figures as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from importlib.metadata import version
from typing import Any

import aiohttp

from .. import harness
from ..client import OP_TEXT, WsClient, client_frame, connect
from ..servers import GROUP, HISTORY_GROUP, paced_sends

__all__ = ["GROUPS", "MODES", "SMOKE", "TARGET_P99_MS", "Config", "Lanes", "join_members", "main", "paced_sends"]
__all__ += ["run_repetition"]

Lanes = dict[int, aiohttp.ClientSession]  # One keep-alive HTTP connection to each worker, by its pid.

MODES = ("same-process", "redis", "redis-group", "redis-history", "redis-cluster", "ipc", "fanout")
SERVERS = {
    "redis": ("same-process", "redis", "redis-group", "redis-history"),
    "redis-cluster": ("redis-cluster",),
    "fanout": ("fanout",),
    "ipc": ("ipc",),
}
"""Each gunicorn configuration and the modes measured on it (same-process and the Redis modes share one server)."""
GROUPS = {"redis-group": GROUP, "redis-history": HISTORY_GROUP}
"""The group modes' groups: members are one client on each worker but the sender."""
JOIN = client_frame(OP_TEXT, b"join")
SERVER_APP = "benchmarks.servers:cross_worker_app"
TARGET_P99_MS = 2.0
"""The target: a cross-worker send through Redis has a p99 under 2 ms at 1,000 messages/s on loopback."""


@dataclasses.dataclass(kw_only=True)
class Config:
    """Sizes of one repetition; the defaults are the full run."""

    workers: int = 4  # gunicorn workers
    clients: int = 64  # websocket clients, spread evenly over the workers
    rate: float = 1000.0  # paced sends per second from the one sending worker
    latency_sends: int = 5000  # paced sends timed per mode
    sends_per_worker: int = 5000  # in the throughput phase, every worker sending
    concurrency: int = 8  # senders per worker in the throughput phase
    warmup_sends: int = 200  # per worker, before anything counts


SMOKE: dict[str, Any] = {"workers": 2, "clients": 8, "latency_sends": 200, "sends_per_worker": 200, "warmup_sends": 20}
"""Config overrides of ``--smoke``: checks that it runs."""


@contextlib.asynccontextmanager
async def lanes_to_workers(port: int, workers: int) -> AsyncIterator[Lanes]:
    """One keep-alive HTTP connection to each worker (found by asking ``/pid/`` until all have answered)."""
    lanes: Lanes = {}
    sessions: list[aiohttp.ClientSession] = []  # all kept open, so a new one is likely to reach another worker
    try:
        async with asyncio.timeout(60):
            while len(lanes) < workers:
                sessions.append(session := aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)))
                try:
                    async with session.get(f"http://127.0.0.1:{port}/pid/") as response:
                        lanes.setdefault((await response.json())["pid"], session)
                except aiohttp.ClientError:
                    await asyncio.sleep(0.2)
        yield lanes
    finally:
        for session in sessions:
            await session.close()


class Receiver:
    """What the websocket clients receive: each one's hello, a count, and latencies while recording."""

    def __init__(self) -> None:
        self.hellos: dict[WsClient, asyncio.Future[dict[str, Any]]] = {}
        self.owner: dict[str, int] = {}  # connection id -> pid of the worker that owns it
        self.joined: dict[WsClient, asyncio.Future[None]] = {}  # the group modes' members, once they have joined
        self.latencies_ns: list[int] = []
        self.received = self.bad = self._expected = 0
        self._recording = False
        self._done: asyncio.Future[None] | None = None

    def on_message(self, client: WsClient, opcode: int, payload: bytes) -> None:
        now = time.monotonic_ns()
        if payload.startswith(b'{"group":'):  # a history group's frame: the timestamp is its "data", a JSON string
            payload = payload[payload.rindex(b':"') + 2 : -2]
        elif payload[:1] == b"{":
            self._hello(client).set_result(json.loads(payload))
            return
        elif payload == b"joined":
            self.joined.setdefault(client, asyncio.get_running_loop().create_future()).set_result(None)
            return
        try:
            sent = int(payload)
        except ValueError:
            self.bad += 1
            return
        if self._recording:
            self.latencies_ns.append(now - sent)
        self.received += 1
        if self.received >= self._expected and self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def hello(self, client: WsClient) -> dict[str, Any]:
        """The ``{"id", "pid"}`` message *client* got on connecting; TimeoutError after 10 s."""
        return await asyncio.wait_for(self._hello(client), 10)

    def _hello(self, client: WsClient) -> asyncio.Future[dict[str, Any]]:
        return self.hellos.setdefault(client, asyncio.get_running_loop().create_future())

    async def collect(self, count: int, *, record: bool, within: float, during: Awaitable[Any]) -> Any:
        """Await *during* (which makes the servers send *count* messages), then until all arrived; its result. Raises
        RuntimeError when fewer than *count* arrive within *within* seconds after *during* returned."""
        self.received, self.latencies_ns, self._expected, self._recording = 0, [], count, record
        self._done = done = asyncio.get_running_loop().create_future()
        result = await during
        try:
            await asyncio.wait_for(done, within)
        except TimeoutError:
            said = str(result)[:1000]
            raise RuntimeError(
                f"only {self.received} of {count} arrived within {within} s; the senders said: {said}"
            ) from None
        finally:
            self._recording = False
        return result


async def open_clients(port: int, cfg: Config, receiver: Receiver) -> None:
    """Connect until each worker owns ``clients // workers`` clients, noting each one's owner in *receiver*."""
    share, per_worker, owner = max(1, cfg.clients // cfg.workers), Counter[int](), receiver.owner
    for _ in range(cfg.clients * 20):
        if len(per_worker) == cfg.workers and all(n >= share for n in per_worker.values()):
            return
        client = await connect(port, on_message=receiver.on_message)
        hello = await receiver.hello(client)
        if per_worker[hello["pid"]] >= share:
            client.close()
            continue
        per_worker[hello["pid"]] += 1
        owner[hello["id"]] = hello["pid"]
    raise RuntimeError(f"could not spread {cfg.clients} clients over {cfg.workers} workers: {dict(per_worker)}")


async def join_members(receiver: Receiver, pids: list[int], sender: int) -> None:
    """Make one client on each worker but *sender* a member of the group modes' groups; TimeoutError after 10 s."""
    members = []
    for pid in pids:
        if pid != sender:
            client = next(c for c, hello in receiver.hellos.items() if hello.result()["pid"] == pid)
            client.send(JOIN)
            members.append(receiver.joined.setdefault(client, asyncio.get_running_loop().create_future()))
    await asyncio.wait_for(asyncio.gather(*members), 10)


async def measure_mode(
    mode: str, cfg: Config, port: int, lanes: Lanes, receiver: Receiver, meter: harness.CpuMeter, first: int
) -> dict[str, Any]:
    """Latency at the paced rate from one sender, then throughput with every worker sending. The group modes send
    to their group, whose every member gets each message: *targets* is then the members."""
    pids, url = sorted(lanes), f"http://127.0.0.1:{port}"
    sender = pids[first % len(pids)]
    targets = {pid: [c for c, p in receiver.owner.items() if (p == pid) == (mode == "same-process")] for pid in pids}
    if not all(targets.values()):
        raise RuntimeError(f"{mode}: a worker has no connections to send to; use more clients")
    group = {"group": GROUPS[mode]} if mode in GROUPS else {}
    members = len(receiver.joined) if group else 1

    def blast_all(count: int, concurrency: int) -> Awaitable[list[dict[str, Any]]]:
        body = {"count": count, "concurrency": concurrency, **group}
        return asyncio.gather(
            *(harness.post(lanes[pid], f"{url}/blast/", {"targets": targets[pid], **body}) for pid in pids)
        )

    # Warm-up: every worker's send path (and its connection to Redis) is used before anything counts.
    warmup = blast_all(cfg.warmup_sends, 1)
    await receiver.collect(cfg.warmup_sends * len(pids) * members, record=False, within=30, during=warmup)
    body = {"targets": targets[sender], "count": cfg.latency_sends, "rate": cfg.rate, **group}
    meter.start()
    sending = harness.post(lanes[sender], f"{url}/paced/", body)
    paced = await receiver.collect(cfg.latency_sends * members, record=True, within=30, during=sending)
    cpu = meter.stop()
    if paced["pid"] != sender or paced["errors"]:
        raise RuntimeError(f"{mode}: paced sends went to worker {paced['pid']} (not {sender}) or failed: {paced}")
    latencies = sorted(receiver.latencies_ns)
    total = cfg.sends_per_worker * len(pids)
    meter.start()
    started = time.perf_counter()
    blasting = blast_all(cfg.sends_per_worker, cfg.concurrency)
    await receiver.collect(total * members, record=False, within=120, during=blasting)
    seconds = time.perf_counter() - started
    reached = members if group else len(targets[sender])
    figures = {"mode": mode, "sender_pid": sender, "targets": reached, "samples": len(latencies)}
    figures |= {"p50_ms": harness.percentile(latencies, 0.5) / 1e6, "p99_ms": harness.percentile(latencies, 0.99) / 1e6}
    figures |= {"max_ms": latencies[-1] / 1e6, "achieved_rate": paced["achieved_rate"], "sends_per_s": total / seconds}
    return {**figures, "late_p99_ms": paced["late_p99_ms"], **cpu, **meter.stop("throughput_")}


async def run_repetition(
    cfg: Config, *, first: int, use_uvloop: bool, server_core: int | None
) -> dict[str, dict[str, Any]]:
    """Measure every mode once, on fresh servers (their order rotated by *first*); return mode -> figures. Raises
    RuntimeError when redis-server is missing, a server does not start, or messages go missing."""
    servers = list(SERVERS.items())
    servers = servers[first % len(servers) :] + servers[: first % len(servers)]
    results: dict[str, dict[str, Any]] = {}
    with harness.redis_server(server_core) as (url, redis), harness.redis_cluster(server_core) as (cluster, nodes):
        for kind, modes in servers:
            backend = {"redis": url, "redis-cluster": cluster, "fanout": f"fanout:{url}", "ipc": ""}[kind]
            args, env = ("--keep-alive", "75", *(["--preload"] if kind == "ipc" else [])), {"BENCH_BACKEND": backend}
            app = harness.gunicorn(
                SERVER_APP, workers=cfg.workers, core=server_core, use_uvloop=use_uvloop, env=env, args=args
            )
            with app as server:
                print(f"cross-worker: {kind} server, modes {', '.join(modes)}", file=sys.stderr, flush=True)
                receiver = Receiver()
                async with lanes_to_workers(server.port, cfg.workers) as lanes:
                    await open_clients(server.port, cfg, receiver)
                    if kind == "redis":
                        await join_members(receiver, sorted(lanes), sorted(lanes)[first % len(lanes)])
                    redis_pids = {"ipc": [], "redis-cluster": [node.pid for node in nodes]}.get(kind, [redis.pid])
                    groups = {"server_cpu": sorted(lanes)} | ({"redis_cpu": redis_pids} if redis_pids else {})
                    meter = harness.CpuMeter(**groups)
                    for mode in modes[first % len(modes) :] + modes[: first % len(modes)]:
                        results[mode] = await measure_mode(mode, cfg, server.port, lanes, receiver, meter, first)
                    for client in receiver.hellos:
                        client.close()
                if receiver.bad:
                    raise RuntimeError(f"{receiver.bad} messages carried no timestamp")
    return results


def main(argv: list[str] | None = None) -> int:
    """Run one repetition; print ``{"results": {mode: figures}, "meta": settings}`` as JSON."""
    parser = harness.parser("Cross-worker delivery through Redis, Redis Cluster, local IPC and fan-out.", "tiny sizes")
    parser.add_argument("--config", default="{}", help="JSON object of Config fields")
    parser.add_argument("--first", type=int, default=0, help="rotates the order of servers and modes, and the sender")
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's loop and GunicornWebWorker")
    args = parser.parse_args(argv)
    cfg = Config(**{**(SMOKE if args.smoke else {}), **json.loads(args.config)})
    server_core, driver_core = harness.cores()
    if driver_core is not None:
        os.sched_setaffinity(0, {driver_core})
    use_uvloop = harness.uvloop_available() and not args.no_uvloop
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout.split()
    meta: dict[str, Any] = {"config": dataclasses.asdict(cfg), "worker_class": harness.worker_class(use_uvloop)}
    meta |= {"redis": next((v[2:] for v in redis if v.startswith("v=")), None), "server_core": server_core}
    meta |= {"driver_core": driver_core, "client_loop": f"uvloop {version('uvloop')}" if use_uvloop else "asyncio"}
    measuring = run_repetition(cfg, first=args.first, use_uvloop=use_uvloop, server_core=server_core)
    results = harness.run_loop(measuring, use_uvloop)
    sys.stdout.write(json.dumps({"results": results, "meta": meta}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
