"""Cross-worker delivery: targeted sends (same process, Redis, local IPC) against fan-out to every worker.

::

    python -m benchmarks.cross_worker                    # every mode, one repetition; prints a Markdown table
    python -m benchmarks.cross_worker redis --repetitions 3
    python -m benchmarks.cross_worker --smoke            # seconds: 2 workers, a few hundred messages

``python -m benchmarks.run`` runs this case too, one fresh driver process per
repetition (``--json``), and puts it in the same table, JSON and chart.

The server is ``gunicorn -w 4 -k aiohttp.GunicornUVLoopWebWorker`` (``GunicornWebWorker``
without uvloop) serving :mod:`benchmarks.cross_worker_app`, its master, workers and the private
``redis-server`` pinned to one core, the driver (this process, uvloop when installed) to the
other. The driver opens 64 websocket clients and keeps those that spread them evenly over the
workers (the kernel picks the worker), then for each mode:

latency      one worker (a different one each repetition) sends to the connections other
             workers own, in turn, paced: the i-th message is due at start + i/1000 s on its
             event loop's clock, and a sender that fell behind catches up, so the time sends take
             does not lower the rate (the achieved rate, and how late sends started, are
             reported). Every message carries the ``CLOCK_MONOTONIC``
             nanoseconds of its send call; latency is the client's receipt minus that (all
             processes on one machine share the clock). 5,000 messages per repetition: p50, p99, max.
throughput   every worker sends 5,000 messages to the others' connections (its own, in
             ``same-process``) with 8 concurrent senders; sends per second until the clients
             have all of them.

Modes:

``same-process``  the sender's own connections (no bus hop): the floor.
``redis``         through the Redis backend: one PUBLISH to the owning worker's channel.
``ipc``           through the local IPC backend (``--preload``, no Redis).
``fanout``        through Redis as Panther and python-socketio do it: every send is published on
                  one channel that every worker reads; each decodes it and drops it unless it owns
                  the connection.

The CPU use of the driver, the workers (summed) and Redis is measured over each phase, as
fractions of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import aiohttp

from .loadgen import percentile
from .processes import cores, cpu_seconds, free_port, pinned, redis_server, stop, uvloop_available, wait_for_port
from .processes import number as _number
from .wsclient import WsClient, connect

__all__ = [
    "MODES",
    "TARGET_P99_MS",
    "TITLES",
    "Config",
    "chart_panels",
    "main",
    "render_markdown",
    "run_repetition",
    "summarise",
]

ROOT = Path(__file__).resolve().parent.parent
MODES = ("same-process", "redis", "ipc", "fanout")
TITLES = {
    "same-process": "same process (no hop)",
    "redis": "Redis, targeted (wsframe)",
    "ipc": "local IPC, targeted (wsframe, no Redis)",
    "fanout": "Redis, fan-out to every worker (Panther / python-socketio design)",
}
SERVERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("redis", ("same-process", "redis")),
    ("fanout", ("fanout",)),
    ("ipc", ("ipc",)),
)
"""Each gunicorn configuration and the modes measured on it (same-process and redis share one server)."""
TARGET_P99_MS = 2.0
"""Issue 7: cross-worker send through Redis, p99 under 2 ms at 1,000 messages/s on loopback."""


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


# ---------------------------------------------------------------- servers


def worker_class(use_uvloop: bool) -> str:
    """The gunicorn worker class: uvloop's when it is used, as the deployment docs recommend."""
    return "aiohttp.GunicornUVLoopWebWorker" if use_uvloop else "aiohttp.GunicornWebWorker"


@contextlib.contextmanager
def gunicorn(backend: str, *, preload: bool, workers: int, klass: str, core: int | None) -> Iterator[int]:
    """Serve :mod:`benchmarks.cross_worker_app` with ``BENCH_BACKEND=backend``; yield the port, SIGTERM after."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", klass, "-b", f"127.0.0.1:{port}"]
    command += ["--keep-alive", "75", "--no-control-socket", "--log-level", "warning"]
    command += ["--preload"] if preload else []
    env = {**os.environ, "BENCH_BACKEND": backend}
    # Server output goes to stderr: stdout carries the JSON result.
    process = subprocess.Popen(
        pinned([*command, "benchmarks.cross_worker_app:make_app"], core),
        cwd=ROOT,
        env=env,
        stdout=sys.stderr,
        stderr=sys.stderr,
        start_new_session=True,  # a group of its own: its workers can be killed with it
    )
    try:
        wait_for_port(port, process, timeout=30)
        yield port
    finally:
        stop(process, signal.SIGTERM, timeout=20)
        # Whatever stop() left (workers of a master that was killed) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


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


# ---------------------------------------------------------------- clients


class Receiver:
    """What the websocket clients receive: each one's hello, a count, and latencies while recording."""

    def __init__(self) -> None:
        self.hellos: dict[WsClient, dict[str, Any]] = {}
        self.hello_arrived = asyncio.Event()
        self.latencies_ns: list[int] = []
        self.received = 0
        self.bad = 0
        self.per_client: Counter[WsClient] = Counter()
        self._expected = 0
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

    async def hello(self, client: WsClient, within: float = 10) -> dict[str, Any]:
        """The ``{"id", "pid"}`` message *client* got on connecting; raises TimeoutError after *within* seconds."""
        async with asyncio.timeout(within):
            while client not in self.hellos:
                self.hello_arrived.clear()
                await self.hello_arrived.wait()
        return self.hellos[client]

    async def collect(self, count: int, *, record: bool, within: float, during: Awaitable[Any]) -> Any:
        """Run *during* (which makes the servers send *count* messages) and wait until all arrived.

        Returns what *during* returned. Raises RuntimeError when fewer than
        *count* arrive within *within* seconds after *during* returned.
        """
        self.received = 0
        self.per_client.clear()
        self.latencies_ns = []
        self._expected = count
        self._recording = record
        self._done = done = asyncio.get_running_loop().create_future()
        result = await during
        try:
            await asyncio.wait_for(done, within)
        except TimeoutError:
            counts = sorted((n, c.transport is not None) for c, n in self.per_client.items())
            raise RuntimeError(
                f"only {self.received} of {count} messages arrived within {within} s; "
                f"(messages, still open) per connection that got any: {counts}; the senders said: {str(result)[:1000]}"
            ) from None
        finally:
            self._recording = False
        return result


async def open_clients(port: int, cfg: Config, receiver: Receiver) -> tuple[list[WsClient], dict[str, int]]:
    """Connect until each worker owns ``clients // workers`` clients; return them and connection id -> pid."""
    share = max(1, cfg.clients // cfg.workers)
    per_worker: Counter[int] = Counter()
    clients: list[WsClient] = []
    owner: dict[str, int] = {}
    for _ in range(cfg.clients * 20):
        if len(per_worker) == cfg.workers and all(n >= share for n in per_worker.values()):
            return clients, owner
        client = await connect("127.0.0.1", port, "/ws/", on_message=receiver.on_message)
        hello = await receiver.hello(client)
        if per_worker[hello["pid"]] >= share:
            client.close()
            continue
        per_worker[hello["pid"]] += 1
        owner[hello["id"]] = hello["pid"]
        clients.append(client)
    for client in clients:
        client.close()
    raise RuntimeError(f"could not spread {cfg.clients} clients over {cfg.workers} workers: {dict(per_worker)}")


def targets_for(mode: str, worker: int, owner: dict[str, int]) -> list[str]:
    """The connections *worker* sends to: its own in ``same-process``, every other worker's otherwise."""
    if mode == "same-process":
        return [cid for cid, pid in owner.items() if pid == worker]
    return [cid for cid, pid in owner.items() if pid != worker]


# ---------------------------------------------------------------- measuring


class Meter:
    """CPU use of the driver, the workers together and Redis over a window, as fractions of one core."""

    def __init__(self, workers: list[int], redis_pid: int | None) -> None:
        self.workers = workers
        self.redis_pid = redis_pid
        self._start: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def _now(self) -> tuple[float, float, float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return (
            time.perf_counter(),
            usage.ru_utime + usage.ru_stime,
            sum(cpu_seconds(pid) for pid in self.workers),
            cpu_seconds(self.redis_pid) if self.redis_pid else 0.0,
        )

    def start(self) -> None:
        self._start = self._now()

    def stop(self, prefix: str = "") -> dict[str, float]:
        now = self._now()
        wall = now[0] - self._start[0]
        names = ["loadgen_cpu", "server_cpu"] + (["redis_cpu"] if self.redis_pid else [])
        return {f"{prefix}{name}": (now[i + 1] - self._start[i + 1]) / wall for i, name in enumerate(names)}


async def _post(lane: aiohttp.ClientSession, port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with lane.post(f"http://127.0.0.1:{port}{path}", json=body) as response:
        response.raise_for_status()
        result: dict[str, Any] = await response.json()
        return result


async def measure_mode(
    mode: str,
    cfg: Config,
    port: int,
    lanes: dict[int, aiohttp.ClientSession],
    owner: dict[str, int],
    receiver: Receiver,
    meter: Meter,
    sender_index: int,
) -> dict[str, Any]:
    """Latency at the paced rate from one sender, then throughput with every worker sending."""
    pids = sorted(lanes)
    sender = pids[sender_index % len(pids)]
    targets = {pid: targets_for(mode, pid, owner) for pid in pids}
    if not all(targets.values()):
        raise RuntimeError(f"{mode}: a worker has no connections to send to; use more clients")

    def blast_all(count: int, concurrency: int) -> Awaitable[list[dict[str, Any]]]:
        bodies = {pid: {"targets": targets[pid], "count": count, "concurrency": concurrency} for pid in pids}
        return asyncio.gather(*(_post(lanes[pid], port, "/blast/", bodies[pid]) for pid in pids))

    # Warm-up: every worker's send path (and its connection to Redis) is used before anything counts.
    await receiver.collect(cfg.warmup_sends * len(pids), record=False, within=30, during=blast_all(cfg.warmup_sends, 1))

    body = {"targets": targets[sender], "count": cfg.latency_sends, "rate": cfg.rate}
    meter.start()
    paced = await receiver.collect(
        cfg.latency_sends, record=True, within=30, during=_post(lanes[sender], port, "/paced/", body)
    )
    cpu = meter.stop()
    if paced["pid"] != sender or paced["errors"]:
        raise RuntimeError(f"{mode}: paced sends went to worker {paced['pid']} (not {sender}) or failed: {paced}")
    latencies = sorted(receiver.latencies_ns)

    total = cfg.sends_per_worker * len(pids)
    meter.start()
    started = time.perf_counter()
    await receiver.collect(total, record=False, within=120, during=blast_all(cfg.sends_per_worker, cfg.concurrency))
    seconds = time.perf_counter() - started
    throughput_cpu = meter.stop("throughput_")
    return {
        "mode": mode,
        "sender_pid": sender,
        "targets": len(targets[sender]),
        "samples": len(latencies),
        "p50_ms": percentile(latencies, 0.50) / 1e6,
        "p99_ms": percentile(latencies, 0.99) / 1e6,
        "max_ms": latencies[-1] / 1e6,
        "achieved_rate": paced["achieved_rate"],
        "late_p99_ms": paced["late_p99_ms"],
        "sends_per_s": total / seconds,
        **cpu,
        **throughput_cpu,
    }


async def measure_server(
    port: int, modes: list[str], cfg: Config, redis_pid: int | None, first: int
) -> dict[str, dict[str, Any]]:
    """Open the clients once, then measure each of *modes* on this server (their order turns with *first*)."""
    receiver = Receiver()
    results: dict[str, dict[str, Any]] = {}
    async with lanes_to_workers(port, cfg.workers) as lanes:
        clients, owner = await open_clients(port, cfg, receiver)
        try:
            meter = Meter(sorted(lanes), redis_pid)
            shift = first % len(modes)
            for mode in modes[shift:] + modes[:shift]:
                results[mode] = await measure_mode(mode, cfg, port, lanes, owner, receiver, meter, first)
        finally:
            for client in clients:
                client.close()
    if receiver.bad:
        raise RuntimeError(f"{receiver.bad} messages carried no timestamp")
    return results


async def run_repetition(
    cfg: Config, *, first: int, use_uvloop: bool, server_core: int | None, driver_core: int | None
) -> dict[str, dict[str, Any]]:
    """Measure every mode of *cfg* once, on fresh servers; return mode -> figures.

    Raises RuntimeError when redis-server is missing (a Redis mode was asked
    for), a server does not start, or messages go missing.
    """
    servers = [(kind, [m for m in modes if m in cfg.modes]) for kind, modes in SERVERS]
    servers = [(kind, modes) for kind, modes in servers if modes]
    shift = first % len(servers)
    results: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        url, redis_pid = "", None
        if any(kind != "ipc" for kind, _ in servers):
            redis_core = driver_core if cfg.redis_on == "driver" else server_core
            url, redis = stack.enter_context(redis_server(redis_core))
            redis_pid = redis.pid
        for kind, modes in servers[shift:] + servers[:shift]:
            backend = {"redis": url, "fanout": f"fanout:{url}", "ipc": ""}[kind]
            with gunicorn(
                backend, preload=kind == "ipc", workers=cfg.workers, klass=worker_class(use_uvloop), core=server_core
            ) as port:
                _progress(f"cross-worker: {kind} server, modes {', '.join(modes)}")
                results.update(await measure_server(port, modes, cfg, None if kind == "ipc" else redis_pid, first))
    return results


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _redis_version() -> str | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    return next((part.removeprefix("v=") for part in out.split() if part.startswith("v=")), None)


def describe(cfg: Config, *, use_uvloop: bool, server_core: int | None, driver_core: int | None) -> dict[str, Any]:
    """The settings a reader needs next to the figures."""
    return {
        "config": dataclasses.asdict(cfg),
        "worker_class": worker_class(use_uvloop),
        "client_loop": f"uvloop {_version('uvloop')}" if use_uvloop else "asyncio",
        "redis": _redis_version(),
        "server_core": server_core,
        "redis_core": driver_core if cfg.redis_on == "driver" else server_core,
        "driver_core": driver_core,
    }


# ---------------------------------------------------------------- report


def _summary(samples: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": samples}


def summarise(runs: list[dict[str, dict[str, Any]]], meta: dict[str, Any]) -> dict[str, Any]:
    """Medians and min-max over repetitions per mode, Redis/same-process ratios, and the issue's p99 target."""
    modes: list[dict[str, Any]] = []
    for mode in MODES:
        if not all(mode in run for run in runs):
            continue
        keys = [k for k, v in runs[0][mode].items() if isinstance(v, int | float) and not k.endswith("_pid")]
        modes.append(
            {
                "mode": mode,
                "title": TITLES[mode],
                "metrics": {key: _summary([float(run[mode][key]) for run in runs]) for key in keys},
            }
        )
    by_mode = {entry["mode"]: entry["metrics"] for entry in modes}
    ratios: dict[str, float] = {}
    if "redis" in by_mode and "same-process" in by_mode:
        for key in ("p50_ms", "p99_ms", "sends_per_s"):
            floor = by_mode["same-process"][key]["median"]
            if floor:
                ratios[key] = by_mode["redis"][key]["median"] / floor
    target: dict[str, Any] | None = None
    if "redis" in by_mode:
        p99 = by_mode["redis"]["p99_ms"]
        target = {
            "mode": "redis",
            "metric": "p99_ms",
            "limit_ms": TARGET_P99_MS,
            "met": p99["median"] < TARGET_P99_MS,
            "repetitions_under": sum(1 for v in p99["samples"] if v < TARGET_P99_MS),
            "repetitions": len(p99["samples"]),
        }
    return {
        "id": "cross_worker",
        "meta": meta,
        "modes": modes,
        "ratios_redis_to_same_process": ratios,
        "target": target,
    }


def _cell(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "-"
    return f"{_number(summary['median'])} ({_number(summary['min'])}-{_number(summary['max'])})"


def render_markdown(section: dict[str, Any]) -> str:
    """The cross-worker table: one row per mode, absolute figures, the 2 ms target and Redis/same-process."""
    meta, cfg = section["meta"], section["meta"]["config"]
    others = cfg["workers"] - 1
    lines = [
        f"Cross-worker send: `gunicorn -w {cfg['workers']} -k {meta['worker_class']}` serving wsframe, "
        f"its processes pinned to core {meta['server_core']}; a private redis-server {meta['redis'] or ''} on core "
        f"{meta['redis_core']}; the driver ({meta['client_loop']}) on core {meta['driver_core']}. One worker sends "
        f"to the {cfg['clients'] - cfg['clients'] // cfg['workers']} connections the other {others} worker(s) own "
        f"(to its own {cfg['clients'] // cfg['workers']} in `same-process`), paced at {cfg['rate']:,.0f} "
        f"messages/s, {cfg['latency_sends']:,} per repetition; latency = client receipt minus the CLOCK_MONOTONIC "
        f"send timestamp in the message. Throughput: every worker sends {cfg['sends_per_worker']:,} with "
        f"{cfg['concurrency']} concurrent senders. Median (min-max) over repetitions; CPU in fractions of one core "
        "(median), paced phase / throughput phase.",
        "",
        "| mode | p50 ms | p99 ms | max ms | paced rate achieved, /s | throughput, sends/s "
        "| load generator CPU | workers' CPU | Redis CPU | issue 7 target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    target = section["target"]
    for entry in section["modes"]:
        m = entry["metrics"]

        def cpu(key: str, m: dict[str, Any] = m) -> str:
            if key not in m:
                return "-"
            return f"{m[key]['median']:.2f} / {m['throughput_' + key]['median']:.2f}"

        verdict = ""
        if target is not None and entry["mode"] == target["mode"]:
            verdict = (
                f"p99 < {target['limit_ms']:g} ms: {'met' if target['met'] else 'missed'} "
                f"({target['repetitions_under']} of {target['repetitions']} repetitions under)"
            )
        lines.append(
            f"| {entry['title']} | {_cell(m['p50_ms'])} | {_cell(m['p99_ms'])} | {_cell(m['max_ms'])} | "
            f"{_cell(m['achieved_rate'])} | {_cell(m['sends_per_s'])} | {cpu('loadgen_cpu')} | "
            f"{cpu('server_cpu')} | {cpu('redis_cpu')} | {verdict} |"
        )
    ratios = section["ratios_redis_to_same_process"]
    if ratios:
        lines += [
            "",
            "Redis / same process (no raw aiohttp equivalent exists): "
            + ", ".join(f"{label} {ratios[key]:.2f}x" for key, label in _RATIO_LABELS if key in ratios)
            + ".",
        ]
    return "\n".join(lines) + "\n"


_RATIO_LABELS = (("p50_ms", "p50"), ("p99_ms", "p99"), ("sends_per_s", "throughput"))

_CHART_COLOURS = {"same-process": "#90b4e0", "redis": "#2b6cb0", "ipc": "#4a9a5b", "fanout": "#7f7f7f"}
_CHART_LABELS = {"same-process": "same\nprocess", "redis": "Redis", "ipc": "IPC", "fanout": "Redis\nfan-out"}


def chart_panels(section: dict[str, Any]) -> list[tuple[str, list[tuple[str, dict[str, Any], str]], float | None]]:
    """Chart panels (title, bars as (label, summary, colour), reference line) for p99 latency and throughput."""
    cfg = section["meta"]["config"]
    panels: list[tuple[str, list[tuple[str, dict[str, Any], str]], float | None]] = []
    for key, title, line in (
        ("p99_ms", f"cross-worker send, {cfg['rate']:,.0f} messages/s paced\np99 latency, ms (target < 2 ms)", 2.0),
        ("sends_per_s", f"cross-worker send, all {cfg['workers']} workers sending\nsends/s (higher is better)", None),
    ):
        bars = [
            (_CHART_LABELS[entry["mode"]], entry["metrics"][key], _CHART_COLOURS[entry["mode"]])
            for entry in section["modes"]
        ]
        if bars:
            panels.append((title, bars, line if key == "p99_ms" else None))
    return panels


# ---------------------------------------------------------------- main


def _runner(use_uvloop: bool) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    if use_uvloop:
        import uvloop

        def run(coro: Coroutine[Any, Any, Any]) -> Any:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(coro)

        return run
    return asyncio.run


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
    parser.add_argument("--server-core", type=int, help="core for gunicorn and Redis (default: the first one)")
    parser.add_argument("--driver-core", type=int, help="core for this process (default: the second one)")
    parser.add_argument("--no-pin", action="store_true", help="pin nothing")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    cfg = Config(**{**(SMOKE if args.smoke else {}), **json.loads(args.config)})
    if args.modes:
        cfg.modes = args.modes
    server_core, driver_core = (None, None) if args.no_pin else cores()
    server_core = args.server_core if args.server_core is not None else server_core
    driver_core = args.driver_core if args.driver_core is not None else driver_core
    if driver_core is not None:
        os.sched_setaffinity(0, {driver_core})
    use_uvloop = uvloop_available() and not args.no_uvloop
    run = _runner(use_uvloop)
    meta = describe(cfg, use_uvloop=use_uvloop, server_core=server_core, driver_core=driver_core)
    runs = []
    for repetition in range(1 if args.json else args.repetitions):
        coro = run_repetition(
            cfg, first=args.first + repetition, use_uvloop=use_uvloop, server_core=server_core, driver_core=driver_core
        )
        runs.append(run(coro))
    if args.json:
        json.dump({"results": runs[0], "meta": meta}, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_markdown(summarise(runs, meta)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
