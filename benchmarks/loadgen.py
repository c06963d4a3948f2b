"""The load generator: runs every case against one server process and prints the results as JSON.

It runs as its own process (``benchmarks.run`` pins it to a core of its own)
and measures, besides each case's figures, its own CPU use and the server's
over the same window, so a reader can see which side was the bottleneck::

    python -m benchmarks.loadgen --target raw:8001:1234 --target wsframe:8002:1235 --config '{"echo_seconds": 1}'

Cases, in the order they run (on fresh servers, so memory is measured first,
before any other case has grown the heap); the servers take turns case by case:

``idle_memory``  RSS of the server with N idle connections minus its RSS before, per connection.
``echo_<n>``     n connections each sending a 64-byte text message and waiting for the echo,
                 back to back: round trips per second, p50/p99 round-trip latency.
``open_close``   connections opened (handshake), closed (closing handshake) per second.
``fanout_<n>``   one POST to ``/fanout/``; time until the last of n connections got the message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .servers import FANOUT_MESSAGE
from .wsclient import CLOSE_FRAME, OP_TEXT, WsClient, client_frame, connect, connect_many

__all__ = ["Config", "CpuMeter", "run_session", "main", "raise_file_limit", "server_rss_kib", "percentile"]

ECHO_PAYLOAD = b"e" * 64
Results = dict[str, dict[str, Any]]
WS_PATH = "/ws/"
FANOUT_PATH = "/fanout/"


@dataclasses.dataclass(kw_only=True)
class Config:
    """What one session measures; the defaults are the full run."""

    host: str = "127.0.0.1"
    port: int = 0
    server_pid: int = 0
    sources: list[str] = dataclasses.field(default_factory=lambda: [f"127.0.0.{i}" for i in range(2, 10)])
    """Loopback source addresses, used in turn, so 10,000+ connections never run out of ephemeral ports."""
    warmup_seconds: float = 0.5
    echo_seconds: float = 3.0
    echo_connections: list[int] = dataclasses.field(default_factory=lambda: [1, 100])
    open_close_seconds: float = 3.0
    open_close_concurrency: int = 16
    idle_connections: int = 5000
    settle_seconds: float = 1.0
    fanout_sizes: list[int] = dataclasses.field(default_factory=lambda: [1000, 10000])
    fanout_triggers: int = 5
    connect_concurrency: int = 100
    cases: list[str] = dataclasses.field(default_factory=lambda: ["idle_memory", "echo", "open_close", "fanout"])
    """Which kinds of case to run (the profiler runs one)."""
    fanout_via: list[str] = dataclasses.field(default_factory=lambda: ["fastest", "id"])
    """Fan-out kinds: ``fastest`` (wsframe: group send) and ``id`` (one send per connection id)."""


def raise_file_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; return it, or raise when below *needed*."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(
            f"benchmarks: need {needed} file descriptors but the limit is {soft}; raise it (ulimit -n {needed + 100})"
        )
    return soft


def server_rss_kib(pid: int) -> int:
    """Resident memory of process *pid* in KiB (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU use of the load generator and of the server over a window, as a fraction of one core."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self._wall = self._own = self._server = 0.0

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._own = _own_cpu_seconds()
        self._server = _process_cpu_seconds(self.server_pid)

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._wall
        return {
            "loadgen_cpu": (_own_cpu_seconds() - self._own) / wall,
            "server_cpu": (_process_cpu_seconds(self.server_pid) - self._server) / wall,
        }


def percentile(sorted_values: list[int], fraction: float) -> int:
    """The value below which *fraction* of *sorted_values* lie (nearest rank)."""
    if not sorted_values:
        raise ValueError("no samples")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def _close_all(clients: list[WsClient], settle: float) -> None:
    """Drop every connection, wait until each is gone, then give the server *settle* seconds to notice."""
    for client in clients:
        client.close()
    if clients:
        await asyncio.wait([client.closed for client in clients], timeout=10)
    await asyncio.sleep(settle)


async def warm_up(cfg: Config) -> None:
    """Open, use and close a few connections so that first-use costs are not in any figure."""
    replies = 0

    def on_message(client: WsClient, opcode: int, payload: bytes) -> None:
        nonlocal replies
        replies += 1

    clients = await connect_many(cfg.host, cfg.port, WS_PATH, 20, sources=cfg.sources, on_message=on_message)
    frame = client_frame(OP_TEXT, ECHO_PAYLOAD)
    for _ in range(5):
        for client in clients:
            client.send(frame)
        await asyncio.sleep(0.02)
    await _close_all(clients, settle=0.3)


async def idle_memory(cfg: Config) -> dict[str, float]:
    """Server RSS growth per idle connection with ``cfg.idle_connections`` open."""
    before = server_rss_kib(cfg.server_pid)
    clients = await connect_many(
        cfg.host, cfg.port, WS_PATH, cfg.idle_connections, sources=cfg.sources, concurrency=cfg.connect_concurrency
    )
    await asyncio.sleep(cfg.settle_seconds)
    after = server_rss_kib(cfg.server_pid)
    await _close_all(clients, settle=cfg.settle_seconds)
    return {
        "kib_per_connection": (after - before) / cfg.idle_connections,
        "rss_before_kib": float(before),
        "rss_after_kib": float(after),
    }


async def echo(cfg: Config, connections: int) -> dict[str, float]:
    """Closed-loop echo: every connection keeps exactly one 64-byte message in flight."""
    frame = client_frame(OP_TEXT, ECHO_PAYLOAD)
    latencies: list[int] = []
    record = latencies.append
    running = True
    recording = False
    wrong = 0
    clock = time.perf_counter_ns

    def on_message(client: WsClient, opcode: int, payload: bytes) -> None:
        nonlocal wrong
        now = clock()
        if payload != ECHO_PAYLOAD:
            wrong += 1
        if recording:
            record(now - client.sent_at)
        if running:
            client.sent_at = now
            client.send(frame)

    clients = await connect_many(cfg.host, cfg.port, WS_PATH, connections, sources=cfg.sources, on_message=on_message)
    meter = CpuMeter(cfg.server_pid)
    for client in clients:
        client.sent_at = clock()
        client.send(frame)
    await asyncio.sleep(cfg.warmup_seconds)
    _progress(f"echo_{connections}: measuring")
    recording = True
    meter.start()
    await asyncio.sleep(cfg.echo_seconds)
    cpu = meter.stop()
    recording = False
    running = False
    await asyncio.sleep(0.1)  # let the last messages in flight come back before closing
    await _close_all(clients, settle=0.3)
    if wrong:
        raise RuntimeError(f"echo_{connections}: {wrong} replies were not the message sent")
    if not latencies:
        raise RuntimeError(f"echo_{connections}: no reply arrived in {cfg.echo_seconds} s")
    latencies.sort()
    rate = len(latencies) / cfg.echo_seconds
    return {
        "msgs_per_s": rate,
        "msgs_per_cpu_s": rate / cpu["server_cpu"] if cpu["server_cpu"] else 0.0,
        "p50_ms": percentile(latencies, 0.50) / 1e6,
        "p99_ms": percentile(latencies, 0.99) / 1e6,
        **cpu,
    }


async def open_close(cfg: Config) -> dict[str, float]:
    """Open a connection, do the closing handshake, repeat: ``open_close_concurrency`` at a time."""
    counting = False
    stop = False
    completed = 0
    attempt = 0

    async def worker() -> None:
        nonlocal completed, attempt
        while not stop:
            attempt += 1
            client = await connect(cfg.host, cfg.port, WS_PATH, source=cfg.sources[attempt % len(cfg.sources)])
            client.send(CLOSE_FRAME)
            await client.close_received
            client.close()
            if counting:
                completed += 1

    workers = [asyncio.ensure_future(worker()) for _ in range(cfg.open_close_concurrency)]
    meter = CpuMeter(cfg.server_pid)
    await asyncio.sleep(cfg.warmup_seconds)
    _progress("open_close: measuring")
    counting = True
    meter.start()
    await asyncio.sleep(cfg.open_close_seconds)
    counting = False
    cpu = meter.stop()
    stop = True
    await asyncio.gather(*workers)
    await asyncio.sleep(cfg.settle_seconds)
    if not completed:
        raise RuntimeError(f"open_close: no connection completed in {cfg.open_close_seconds} s")
    rate = completed / cfg.open_close_seconds
    return {"per_s": rate, "per_cpu_s": rate / cpu["server_cpu"] if cpu["server_cpu"] else 0.0, **cpu}


class _Fanout:
    """Counts deliveries of one fan-out and notes when the last one arrived."""

    def __init__(self) -> None:
        self.remaining = 0
        self.last_at = 0.0
        self.wrong = 0
        self.done: asyncio.Future[None] | None = None
        self.expected = FANOUT_MESSAGE.encode()

    def on_message(self, client: WsClient, opcode: int, payload: bytes) -> None:
        if payload != self.expected:
            self.wrong += 1
            return
        self.remaining -= 1
        if self.remaining == 0:
            self.last_at = time.perf_counter()
            if self.done is not None and not self.done.done():
                self.done.set_result(None)


async def _http_post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> dict[str, Any]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length)
    if " 200 " not in status_line:
        raise RuntimeError(f"fan-out trigger answered {status_line}: {body[:200]!r}")
    result: dict[str, Any] = json.loads(body)
    return result


async def fanout(cfg: Config, clients: list[WsClient], size: int, counter: _Fanout) -> dict[str, Any]:
    """Grow *clients* to *size* connections, then time ``fanout_triggers`` fan-outs of each kind.

    ``ms``/``server_ms``: the server's fastest way (wsframe: one group send);
    ``ms_per_id``/``server_ms_per_id``: one send per connection id. Each kind
    starts with one fan-out that is not counted (warm-up).
    """
    if len(clients) < size:
        clients += await connect_many(
            cfg.host,
            cfg.port,
            WS_PATH,
            size - len(clients),
            sources=cfg.sources,
            concurrency=cfg.connect_concurrency,
            on_message=counter.on_message,
        )
    await asyncio.sleep(cfg.settle_seconds)
    reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
    results: dict[str, Any] = {}
    _progress(f"fanout_{size}: measuring")
    try:
        for suffix, query in (("", ""), ("_per_id", "?via=id")):
            if ("id" if query else "fastest") not in cfg.fanout_via:
                continue
            request = (
                f"POST {FANOUT_PATH}{query} HTTP/1.1\r\nHost: {cfg.host}:{cfg.port}\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            times, server_times, cpu = await _time_fanouts(cfg, reader, writer, request, size, counter)
            results[f"ms{suffix}"] = times
            results[f"server_ms{suffix}"] = server_times
            if not suffix or "loadgen_cpu" not in results:
                results.update(cpu)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    if counter.wrong:
        raise RuntimeError(f"fanout_{size}: {counter.wrong} deliveries were not the message sent")
    return results


async def _time_fanouts(
    cfg: Config,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    size: int,
    counter: _Fanout,
) -> tuple[list[float], list[float], dict[str, float]]:
    loop = asyncio.get_running_loop()
    times: list[float] = []
    server_times: list[float] = []
    # CPU is summed over all measured fan-outs: one is too short for /proc's 10 ms ticks.
    wall = own = server = 0.0
    for trigger in range(cfg.fanout_triggers + 1):
        counter.remaining = size
        counter.done = done = loop.create_future()
        own_before, server_before = _own_cpu_seconds(), _process_cpu_seconds(cfg.server_pid)
        started = time.perf_counter()
        response_task = asyncio.ensure_future(_http_post(reader, writer, request))
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout=30)
        except TimeoutError:
            response_task.cancel()
            raise RuntimeError(
                f"fanout_{size}: {counter.remaining} of {size} connections got nothing within 30 s"
            ) from None
        response = await response_task
        if response["sent"] != size:
            raise RuntimeError(f"fanout_{size}: the server sent to {response['sent']} connections, not {size}")
        if trigger == 0:
            continue  # warm-up
        wall += counter.last_at - started
        own += _own_cpu_seconds() - own_before
        server += _process_cpu_seconds(cfg.server_pid) - server_before
        times.append((counter.last_at - started) * 1000)
        server_times.append(response["seconds"] * 1000)
        await asyncio.sleep(0.1)
    cpu = {"loadgen_cpu": own / wall if wall else 0.0, "server_cpu": server / wall if wall else 0.0}
    return times, server_times, cpu


def _progress(case: str) -> None:
    # benchmarks.profiling starts sampling when it reads ": measuring".
    if os.environ.get("WSFRAME_BENCH_VERBOSE"):
        print(f"loadgen: {case}", file=sys.stderr, flush=True)


async def run_session(cfg: Config, targets: list[tuple[str, int, int]], first: int = 0) -> dict[str, dict[str, Any]]:
    """Run every case against every ``(name, port, pid)`` target; return name -> case id -> figures.

    The targets take turns case by case, and which goes first alternates (starting
    with ``targets[first % len(targets)]``), so a change in machine load between
    cases hits every server alike and each comparison is a few seconds apart.
    """
    per_target = {name: dataclasses.replace(cfg, port=port, server_pid=pid) for name, port, pid in targets}
    results: dict[str, dict[str, Any]] = {name: {} for name in per_target}
    turn = first

    def in_turn() -> list[tuple[str, Config]]:
        nonlocal turn
        items = list(per_target.items())
        shift = turn % len(items)
        turn += 1
        return items[shift:] + items[:shift]

    for name, target in in_turn():
        _progress(f"{name}: warm-up")
        await warm_up(target)
    if "idle_memory" in cfg.cases:
        for name, target in in_turn():
            _progress(f"{name}: idle_memory")
            results[name]["idle_memory"] = await idle_memory(target)
    if "echo" in cfg.cases:
        for connections in cfg.echo_connections:
            for name, target in in_turn():
                _progress(f"{name}: echo_{connections}")
                results[name][f"echo_{connections}"] = await echo(target, connections)
    if "open_close" in cfg.cases:
        for name, target in in_turn():
            _progress(f"{name}: open_close")
            results[name]["open_close"] = await open_close(target)
    if "fanout" in cfg.cases:
        # One server at a time: 10,000 connections to each at once would need twice the file descriptors.
        for name, target in in_turn():
            counter = _Fanout()
            clients: list[WsClient] = []
            try:
                for size in sorted(cfg.fanout_sizes):
                    _progress(f"{name}: fanout_{size}")
                    results[name][f"fanout_{size}"] = await fanout(target, clients, size, counter)
            finally:
                await _close_all(clients, settle=cfg.settle_seconds)
    return results


def _runner_factory(use_uvloop: bool) -> Callable[[Coroutine[Any, Any, Results]], Results]:
    if use_uvloop:
        import uvloop

        def run(coro: Coroutine[Any, Any, Results]) -> Results:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(coro)

        return run
    return asyncio.run


def _target(text: str) -> tuple[str, int, int]:
    name, port, pid = text.split(":")
    return name, int(port), int(pid)


def main(argv: list[str] | None = None) -> int:
    """Run one session and print ``{"results": {name: {case: figures}}, "uvloop": bool}`` as JSON on stdout."""
    parser = argparse.ArgumentParser(description="wsframe benchmark load generator (one session).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--target",
        type=_target,
        action="append",
        required=True,
        help="NAME:PORT:PID of a server to measure (PID for its memory and CPU); repeat for several",
    )
    parser.add_argument("--first", type=int, default=0, help="index of the target that goes first")
    parser.add_argument("--config", default="{}", help="JSON object of Config fields")
    parser.add_argument("--uvloop", action="store_true", help="use uvloop's event loop")
    args = parser.parse_args(argv)
    cfg = Config(**json.loads(args.config))
    cfg.host = args.host
    raise_file_limit(max([cfg.idle_connections, *cfg.fanout_sizes]) + 200)
    results = _runner_factory(args.uvloop)(run_session(cfg, args.target, args.first))
    json.dump({"results": results, "uvloop": args.uvloop}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
