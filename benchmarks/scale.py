"""Scale: hold N open websockets (heartbeat on), then deliver one group message to every one of them.

One Linux process may hold at most 20,000 open files on the benchmark machine
(a hard limit), so neither side fits in one process at 100,000 connections:

- the server is ``gunicorn -w W -k aiohttp.GunicornUVLoopWebWorker benchmarks.scale_app:make_app``
  (W = N / 12,500 rounded up, at least 2), each worker holding its share, the
  group spanning the workers through the default local IPC backend
  (``--backend redis``: through a redis-server started for the run);
- the load generator is L processes (``python -m benchmarks.scale --loadgen``,
  N / 12,500 rounded up, at least 2), each holding its share of connections
  as lightweight asyncio protocols (no task or stream per socket; pings are
  answered with masked pongs inside ``data_received``), from its own loopback
  source addresses (127.0.0.2, 127.0.1.2, 127.0.0.3, ...) so the ephemeral
  ports of one source address (32768-60999) never run out.

Server processes run on core 0 and load generators on core 1 (``taskset``;
``--no-pin`` lets the scheduler place them). For each N the driver measures:

- server memory: the sum of the workers' RSS (``/proc/<pid>/status``) with 0
  connections (after a warm-up of a few connections, closed again) and with N
  (after holding them ``--hold`` seconds, longer than one heartbeat, so every
  connection has been pinged and has answered), and the kernel's TCP buffer
  memory (``/proc/net/sockstat``, both ends);
- the time to open the N connections, and the connect errors retried on the way;
- the delivery: ``POST /trigger/`` makes one worker call
  ``send_message_to_group(group, 64-byte text)``; every load generator records
  when each of its clients first received a text frame (``time.monotonic()``,
  the system-wide ``CLOCK_MONOTONIC`` the driver reads too); reported: the time
  from the POST to the last receipt, the median and p99 over clients, and how
  many clients got 0, 1 or more messages (every one must get exactly one);
- the CPU seconds of the server and of the load generators in each phase.

Run::

    python -m benchmarks.scale                      # N = 10,000 then 100,000 (about 4 minutes)
    python -m benchmarks.scale --n 50000 --backend redis
    python -m benchmarks.scale --n 100000 --gc-freeze 5   # workers call gc.freeze() every 5 s
    python -m benchmarks.scale --n 100000 --profile /tmp/scale  # py-spy the server during the delivery
    python -m benchmarks.scale --smoke              # N = 200, 1 s heartbeat: checks that it runs

Each worker logs its generation-1/2 garbage collections (``gc.callbacks``); the
row reports the collections and the longest pause in each phase (open, hold, delivery).

Writes ``benchmarks/results/scale.json`` and ``scale.md`` (``--results-dir`` to change).
Every wait is bounded; a run that cannot open every connection reports how
many it reached and which errors stopped the rest.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import errno
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import next_frame

__all__ = ["main", "loadgen_main", "run_size", "PER_PROCESS"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
PER_PROCESS = 12_500
"""Connections per server worker and per load-generator process: well under the 20,000 open-file limit."""

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
CONNECT_ATTEMPTS = 6
"""Tries per connection: refused, reset and timed-out connects are retried with a growing pause."""

# ===================================================================== load generator


_MASK = os.urandom(4)
_MASK_INT = int.from_bytes(_MASK, "big")


def _masked(opcode: int, payload: bytes) -> bytes:
    """A final, masked client frame (payloads here are control frames: under 126 bytes)."""
    if payload:
        repeat = (_MASK * (len(payload) // 4 + 1))[: len(payload)]
        body = (int.from_bytes(payload, "big") ^ int.from_bytes(repeat, "big")).to_bytes(len(payload), "big")
    else:
        body = b""
    return bytes((0x80 | opcode, 0x80 | len(payload))) + _MASK + body


_EMPTY_PONG = _masked(0xA, b"")


class HandshakeError(Exception):
    """The server answered the upgrade with something other than 101."""


class State:
    """What one load generator knows about its clients, in flat arrays (one slot per client)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.first_at = array.array("d", bytes(8 * count))
        self.received = array.array("I", bytes(4 * count))
        self.waiting = 0
        self.all_received: asyncio.Event | None = None
        self.pings = 0
        self.lost = 0
        self.open = 0
        self.close_frames = 0

    def arm(self) -> None:
        """Start counting a delivery: every open client is waited for."""
        self.waiting = self.open
        self.all_received = asyncio.Event()
        if self.waiting == 0:
            self.all_received.set()


class Client(asyncio.Protocol):
    """One websocket client: handshake, then count text frames and answer pings, all in callbacks."""

    __slots__ = ("buffer", "index", "state", "transport", "upgraded", "waiter")

    def __init__(self, index: int, state: State, request: bytes, waiter: asyncio.Future[None]) -> None:
        self.index = index
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.buffer = request  # the upgrade request until connection_made sends it
        self.upgraded = False
        self.waiter: asyncio.Future[None] | None = waiter

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        transport.write(self.buffer)  # type: ignore[attr-defined]
        self.buffer = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("connection lost during the handshake"))
        elif self.upgraded:
            self.state.open -= 1
            self.state.lost += 1

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = data
                return
            waiter = self.waiter
            self.waiter = None
            if not data.startswith(b"HTTP/1.1 101"):
                line = data.split(b"\r\n", 1)[0].decode(errors="replace")
                if waiter is not None and not waiter.done():
                    waiter.set_exception(HandshakeError(line))
                return
            self.upgraded = True
            self.state.open += 1
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            data = data[end + 4 :]
        self._frames(data)

    def _frames(self, data: bytes) -> None:
        pos, size = 0, len(data)
        state = self.state
        while (frame := next_frame(data, pos, size)) is not None:
            opcode, start, end = frame
            if opcode == 0x1:
                index = self.index
                count = state.received[index]
                state.received[index] = count + 1
                if count == 0:
                    state.first_at[index] = time.monotonic()
                    state.waiting -= 1
                    if state.waiting == 0 and state.all_received is not None:
                        state.all_received.set()
            elif opcode == 0x9:
                state.pings += 1
                transport = self.transport
                if transport is not None:
                    transport.write(_EMPTY_PONG if end == start else _masked(0xA, data[start:end]))
            elif opcode == 0x8:
                state.close_frames += 1
            pos = end
        if pos < size:
            self.buffer = data[pos:]


def _error_name(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    name = type(exc).__name__
    return f"{name}[{errno.errorcode.get(code, code)}]" if code else name


async def _open_all(
    state: State, host: str, port: int, sources: list[str], concurrency: int
) -> tuple[list[Client], Counter[str]]:
    loop = asyncio.get_running_loop()
    request = (
        f"GET /ws/ HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    clients: list[Client] = []
    errors: Counter[str] = Counter()
    cursor = iter(range(state.count))

    async def one(index: int) -> Client | None:
        source = sources[index % len(sources)]
        for attempt in range(CONNECT_ATTEMPTS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            transport: Any = None
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((source, 0))
                await asyncio.wait_for(loop.sock_connect(sock, (host, port)), CONNECT_TIMEOUT)
                waiter: asyncio.Future[None] = loop.create_future()
                transport, client = await loop.create_connection(
                    lambda w=waiter: Client(index, state, request, w),  # type: ignore[misc]
                    sock=sock,
                )
                await asyncio.wait_for(waiter, HANDSHAKE_TIMEOUT)
                return client
            except (OSError, TimeoutError, HandshakeError) as exc:
                errors[_error_name(exc)] += 1
                if transport is not None:
                    transport.abort()
                else:
                    sock.close()
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
        return None

    async def worker() -> None:
        for index in cursor:
            client = await one(index)
            if client is not None:
                clients.append(client)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, state.count)))))
    return clients, errors


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _loadgen(args: argparse.Namespace) -> None:
    state = State(args.count)
    started = time.monotonic()
    clients, errors = await _open_all(state, args.host, args.port, args.sources.split(","), args.concurrency)
    _emit(
        {
            "event": "opened",
            "pid": os.getpid(),
            "opened": len(clients),
            "failed": args.count - len(clients),
            "errors": dict(errors),
            "started": started,
            "finished": time.monotonic(),
        }
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "exit":
            break
        command = line[0]
        if command == "status":
            _emit({"event": "status", "open": state.open, "lost": state.lost, "pings": state.pings})
        elif command == "arm":
            state.arm()
            _emit({"event": "armed", "waiting": state.waiting})
        elif command == "wait":
            deadline, settle = float(line[1]), float(line[2])
            assert state.all_received is not None, "wait before arm"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.all_received.wait(), max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(settle)  # a second copy would arrive in this time
            counts = Counter(min(n, 2) for n in state.received)
            times = [t for t, n in zip(state.first_at, state.received, strict=True) if n]
            _emit(
                {
                    "event": "received",
                    "times": times,
                    "exactly_one": counts[1],
                    "none": counts[0] - (state.count - len(clients)),
                    "more": counts[2],
                    "open": state.open,
                    "lost": state.lost,
                    "pings": state.pings,
                    "close_frames": state.close_frames,
                }
            )
    for client in clients:
        if client.transport is not None:
            client.transport.abort()
    await asyncio.sleep(0)


def loadgen_main(argv: list[str]) -> int:
    """Run one load-generator process (started by the driver; speaks JSON lines on stdin/stdout)."""
    parser = argparse.ArgumentParser(prog="benchmarks.scale --loadgen")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--sources", required=True, help="comma-separated loopback source addresses")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.run(_loadgen(args))
    except ImportError:
        asyncio.run(_loadgen(args))
    return 0


# ===================================================================== driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry))
    return sorted(found)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int, *, system_only: bool = False) -> float:
    """User + system CPU seconds of *pid* (system only with *system_only*)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[12]) if system_only else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
    return count


def _tcp_kernel_bytes() -> int:
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            parts = line.split()
            return int(parts[parts.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    workers: list[int] = field(default_factory=list)

    def rss(self) -> int:
        return sum(_rss_bytes(pid) for pid in self.workers)

    def cpu(self, *, system_only: bool = False) -> float:
        return sum(_cpu_seconds(pid, system_only=system_only) for pid in [self.process.pid, *self.workers])

    def sockets(self) -> list[int]:
        return [_sockets(pid) for pid in self.workers]


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server on a free port, killed afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
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


def _pin(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []


@contextlib.contextmanager
def gunicorn(
    workers: int, backend: str, heartbeat: float | None, core: int | None, gc_log: Path, gc_freeze: float | None
) -> Iterator[Server]:
    """``gunicorn -w workers`` serving ``benchmarks.scale_app``; stopped with SIGTERM (SIGKILL after 45 s).

    Each worker writes its garbage-collection log into *gc_log* when it stops.
    """
    port = free_port()
    try:
        import uvloop  # noqa: F401

        worker_class = "aiohttp.GunicornUVLoopWebWorker"
    except ImportError:
        worker_class = "aiohttp.GunicornWebWorker"
    args = [*_pin(core), sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", worker_class]
    args += ["-b", f"127.0.0.1:{port}", "--backlog", "4096", "--no-control-socket", "--log-level", "warning"]
    args += ["--graceful-timeout", "30", "--timeout", "120"]
    env = {**os.environ, "SCALE_BACKEND": backend, "SCALE_HEARTBEAT": "" if heartbeat is None else str(heartbeat)}
    env["SCALE_GC_LOG"] = str(gc_log)
    env["SCALE_GC_FREEZE"] = "" if gc_freeze is None else str(gc_freeze)
    process = subprocess.Popen([*args, "benchmarks.scale_app:make_app"], cwd=ROOT, env=env)
    server = Server(process, port)
    try:
        deadline = time.monotonic() + 30
        while len(server.workers) < workers:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"gunicorn did not start {workers} workers (has {len(server.workers)})")
            time.sleep(0.1)
            server.workers = _children(process.pid)
        while True:  # every worker listening: the port answers
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn's port never answered")
            time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(45)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Loadgen:
    process: asyncio.subprocess.Process
    count: int

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def read(self, seconds: float) -> dict[str, Any]:
        """The next JSON event; raises TimeoutError after *seconds*, RuntimeError if the process exited."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), seconds)
        if not line:
            raise RuntimeError(f"load generator {self.process.pid} exited with {await self.process.wait()}")
        event: dict[str, Any] = json.loads(line)
        return event

    def cpu(self) -> float:
        with contextlib.suppress(OSError):
            return _cpu_seconds(self.process.pid)
        return 0.0


@contextlib.asynccontextmanager
async def loadgens(n: int, port: int, core: int | None, run_index: int) -> AsyncIterator[list[Loadgen]]:
    """Start the load-generator processes (each opens its share at once); ended with ``exit``, then killed."""
    processes = max(2, math.ceil(n / PER_PROCESS))
    shares = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    started: list[Loadgen] = []
    try:
        for i, share in enumerate(shares):
            sources = f"127.{run_index % 200 + 1}.0.{i + 2},127.{run_index % 200 + 1}.1.{i + 2}"
            process = await asyncio.create_subprocess_exec(
                *_pin(core),
                sys.executable,
                "-m",
                "benchmarks.scale",
                "--loadgen",
                "--port",
                str(port),
                "--count",
                str(share),
                "--sources",
                sources,
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 26,
            )
            started.append(Loadgen(process, share))
        yield started
    finally:
        for loadgen in started:
            with contextlib.suppress(OSError, RuntimeError):
                await loadgen.send("exit")
        for loadgen in started:
            try:
                await asyncio.wait_for(loadgen.process.wait(), 20)
            except TimeoutError:
                loadgen.process.kill()
                await loadgen.process.wait()


async def _trigger(port: int) -> tuple[float, float, dict[str, Any]]:
    """POST /trigger/ on an already open connection; return (sent at, answered at, answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = f"POST /trigger/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n".encode()
        sent_at = time.monotonic()
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        answered_at = time.monotonic()
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        body = await asyncio.wait_for(reader.readexactly(length), 10)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"trigger failed: {head.decode(errors='replace')} {body!r}")
        answer: dict[str, Any] = json.loads(body)
        return sent_at, answered_at, answer
    finally:
        writer.close()


async def _gather_events(group: list[Loadgen], seconds: float) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(lg.read(seconds) for lg in group)))


async def _warm_up(port: int, core: int | None, run_index: int) -> None:
    """A few connections and one delivery, closed again, so lazy imports and caches are in the 0-connection RSS."""
    async with loadgens(64, port, core, run_index) as group:
        await _gather_events(group, 60)
        for lg in group:
            await lg.send("arm")
        await _gather_events(group, 10)
        await _trigger(port)
        for lg in group:
            await lg.send(f"wait {time.monotonic() + 10} 0")
        await _gather_events(group, 20)


def _gc_summary(files: list[Path], windows: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Seconds the server workers spent in generation 1/2 garbage collections during each window, from their logs."""
    collections: list[tuple[float, float, int]] = []
    for file in files:
        with contextlib.suppress(OSError, ValueError):
            collections += [(c[0], c[1], c[2]) for c in json.loads(file.read_text())["collections"]]
    summary: dict[str, Any] = {"gc_logs": len(files)}
    for name, (start, end) in windows.items():
        inside = [c for c in collections if start <= c[0] <= end]
        summary[f"gc_full_s_{name}"] = round(sum(c[1] for c in inside if c[2] == 2), 3)
        summary[f"gc_full_count_{name}"] = sum(1 for c in inside if c[2] == 2)
        summary[f"gc_gen1_s_{name}"] = round(sum(c[1] for c in inside if c[2] == 1), 3)
        summary[f"gc_longest_ms_{name}"] = round(max((c[1] for c in inside), default=0.0) * 1000, 1)
    return summary


def _py_spy(server: Server, output: Path) -> subprocess.Popen[bytes] | None:
    """Sample every server process for 15 s with py-spy (collapsed stacks in *output*), if py-spy is installed."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(binary).exists():
        return None
    args = [binary, "record", "--subprocesses", "--pid", str(server.process.pid), "--duration", "15"]
    args += ["--rate", "250", "--format", "raw", "--output", str(output)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run_size(
    n: int,
    *,
    backend_name: str,
    hold: float,
    heartbeat: float | None,
    pin: bool,
    run_index: int,
    args_profile: Path | None = None,
    gc_freeze: float | None = None,
) -> dict[str, Any]:
    """Measure one N on a fresh server; returns the result row (see the module docstring)."""
    server_core, loadgen_core = (0, 1) if pin else (None, None)
    workers = max(2, math.ceil(n / PER_PROCESS))
    result: dict[str, Any] = {"n": n, "backend": backend_name, "workers": workers, "pinned": pin}
    result["gc_freeze_every_s"] = gc_freeze
    gc_log = Path(tempfile.mkdtemp(prefix="scale-gc-"))
    windows: dict[str, tuple[float, float]] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, gc_log, ignore_errors=True)
        # Runs once gunicorn has stopped (exit callbacks run last-in, first-out): its workers wrote their GC logs.
        stack.callback(lambda: result.update(_gc_summary(list(gc_log.glob("*.json")), windows)))
        backend = stack.enter_context(redis_server()) if backend_name == "redis" else ""
        server = stack.enter_context(gunicorn(workers, backend, heartbeat, server_core, gc_log, gc_freeze))
        await _warm_up(server.port, loadgen_core, run_index)
        await asyncio.sleep(1.0)
        rss_0, tcp_0 = server.rss(), _tcp_kernel_bytes()
        cpu_0 = server.cpu()
        async with loadgens(n, server.port, loadgen_core, run_index + 1) as group:
            opened_events = await _gather_events(group, 240)
            opened = sum(e["opened"] for e in opened_events)
            errors: Counter[str] = Counter()
            for e in opened_events:
                errors.update(e["errors"])
            open_seconds = max(e["finished"] for e in opened_events) - min(e["started"] for e in opened_events)
            cpu_open = server.cpu()
            lg_cpu_open = sum(lg.cpu() for lg in group)
            result.update(
                opened=opened,
                failed=n - opened,
                connect_errors_retried=dict(errors),
                open_seconds=round(open_seconds, 3),
                opens_per_s=round(opened / open_seconds) if open_seconds > 0 else None,
                server_cpu_open_s=round(cpu_open - cpu_0, 2),
                loadgen_cpu_open_s=round(lg_cpu_open, 2),
                loadgen_processes=len(group),
                sockets_per_worker=server.sockets(),
            )
            rss_open = server.rss()
            windows["open"] = (min(e["started"] for e in opened_events), max(e["finished"] for e in opened_events))
            hold_started, cpu_hold_0 = time.monotonic(), server.cpu()
            await asyncio.sleep(hold)  # at least one heartbeat: every connection pinged and answered
            for lg in group:
                await lg.send("status")
            statuses = await _gather_events(group, 10)
            rss_n, tcp_n = server.rss(), _tcp_kernel_bytes()
            windows["hold"] = (hold_started, time.monotonic())
            held = sum(s["open"] for s in statuses)
            result["server_cpu_per_s_holding"] = round(
                (server.cpu() - cpu_hold_0) / (time.monotonic() - hold_started), 3
            )
            result.update(
                hold_seconds=hold,
                held=held,
                lost_while_holding=sum(s["lost"] for s in statuses),
                pings_answered=sum(s["pings"] for s in statuses),
                server_rss_0_mb=round(rss_0 / 2**20, 1),
                server_rss_n_mb=round(rss_n / 2**20, 1),
                server_rss_after_open_mb=round(rss_open / 2**20, 1),
                server_bytes_per_connection=round((rss_n - rss_0) / held) if held else None,
                kernel_tcp_bytes_per_connection_both_ends=round((tcp_n - tcp_0) / held) if held else None,
            )
            for lg in group:
                await lg.send("arm")
            await _gather_events(group, 10)
            cpu_before, lg_cpu_before = server.cpu(), sum(lg.cpu() for lg in group)
            sys_before = server.cpu(system_only=True)
            profiler = _py_spy(server, args_profile) if args_profile else None
            sent_at, answered_at, answer = await _trigger(server.port)
            for lg in group:
                await lg.send(f"wait {sent_at + 60} 1.0")
            received = await _gather_events(group, 90)
            times = sorted(t - sent_at for e in received for t in e["times"])
            windows["delivery"] = (sent_at, sent_at + (times[-1] if times else 0.0))
            result.update(
                delivered_exactly_once=sum(e["exactly_one"] for e in received),
                delivered_none=sum(e["none"] for e in received),
                delivered_more=sum(e["more"] for e in received),
                trigger_answered_ms=round((answered_at - sent_at) * 1000, 1),
                send_call_ms=round(answer["seconds"] * 1000, 1),
                triggering_worker_members=answer["local_members"],
                last_received_ms=round(times[-1] * 1000, 1) if times else None,
                first_received_ms=round(times[0] * 1000, 1) if times else None,
                median_received_ms=round(statistics.median(times) * 1000, 1) if times else None,
                p99_received_ms=round(_percentile(times, 0.99) * 1000, 1) if times else None,
                server_cpu_delivery_s=round(server.cpu() - cpu_before, 2),
                server_system_cpu_delivery_s=round(server.cpu(system_only=True) - sys_before, 2),
                loadgen_cpu_delivery_s=round(sum(lg.cpu() for lg in group) - lg_cpu_before, 2),
            )
            if profiler is not None:
                try:
                    await asyncio.to_thread(profiler.wait, 30)
                except subprocess.TimeoutExpired:
                    profiler.kill()
                result["profile"] = str(args_profile)

    result["ok"] = result["opened"] == n and result["delivered_exactly_once"] == n and result["lost_while_holding"] == 0
    return result


COLUMNS = [
    ("n", "N"),
    ("backend", "backend"),
    ("workers", "workers"),
    ("pinned", "pinned"),
    ("gc_freeze_every_s", "gc.freeze every s"),
    ("opened", "opened"),
    ("open_seconds", "open s"),
    ("opens_per_s", "opens/s"),
    ("held", "held after hold"),
    ("server_rss_0_mb", "RSS 0 (MB)"),
    ("server_rss_n_mb", "RSS N (MB)"),
    ("server_bytes_per_connection", "server B/conn"),
    ("send_call_ms", "send call ms"),
    ("median_received_ms", "median ms"),
    ("p99_received_ms", "p99 ms"),
    ("last_received_ms", "last ms"),
    ("delivered_exactly_once", "got exactly 1"),
    ("server_cpu_delivery_s", "server CPU s (delivery)"),
    ("server_cpu_per_s_holding", "server cores busy holding N idle"),
    ("gc_full_count_hold", "full GCs while holding"),
    ("gc_longest_ms_hold", "longest GC ms (hold)"),
    ("gc_full_s_delivery", "full GC s in delivery"),
    ("loadgen_cpu_open_s", "loadgen CPU s (open)"),
    ("loadgen_cpu_delivery_s", "loadgen CPU s (delivery)"),
]


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The results as a Markdown table (one row per N and backend) with how they were measured."""
    command = meta["command"] if "`" in meta["command"] else f"`{meta['command']}`"
    lines = [
        "# Scale: N open websockets, one group message to all",
        "",
        f"Command: {command}; {meta['when']}; heartbeat {meta['heartbeat']}; "
        f"hold {meta['hold']} s; pinned: server on core 0, load generators on core 1 (taskset).",
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in results:
        lines.append("| " + " | ".join(str(row.get(key, "")) for key, _ in COLUMNS) + " |")
    lines += [
        "",
        "Times are from the POST that triggers `send_message_to_group` to each client's receipt. GC figures are "
        "wall-clock seconds inside generation-2 collections, summed over the workers that wrote a GC log.",
    ]
    for row in results:
        if row.get("connect_errors_retried") or not row.get("ok", False):
            lines.append(
                f"- N={row['n']} {row['backend']} (gc.freeze {row.get('gc_freeze_every_s')}): ok={row.get('ok')}, "
                f"connect errors retried {row.get('connect_errors_retried')}, never opened {row.get('failed')}, "
                f"closed after the upgrade, before the send {row.get('lost_while_holding')}, got no message "
                f"{row.get('delivered_none')}, more than one {row.get('delivered_more')}"
                + (f", error {row['error']}" if "error" in row else "")
            )
    return "\n".join(lines) + "\n"


async def drive(args: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    run_index = 0
    for backend in args.backend:
        for n in args.n:
            run_index += 2
            try:
                row = await asyncio.wait_for(
                    run_size(
                        n,
                        backend_name=backend,
                        hold=args.hold,
                        heartbeat=args.heartbeat,
                        pin=args.pin,
                        run_index=run_index,
                        gc_freeze=args.gc_freeze,
                        args_profile=args.profile.with_suffix(f".{backend}.{n}.txt") if args.profile else None,
                    ),
                    args.hold + 420,
                )
            except (RuntimeError, TimeoutError, OSError) as exc:
                row = {"n": n, "backend": backend, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--loadgen`` first, one load-generator process); exit 1 if a size failed."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--loadgen"]:
        return loadgen_main(argv[1:])
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="connections (repeat for several sizes)")
    parser.add_argument("--backend", choices=["ipc", "redis"], action="append", help="default: ipc")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds to hold N open before sending")
    parser.add_argument("--heartbeat", type=float, default=None, help="server heartbeat (default: wsframe's, 25 s)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server/loadgen to cores")
    parser.add_argument("--smoke", action="store_true", help="N=200, 1 s heartbeat, 2.5 s hold: checks that it runs")
    parser.add_argument("--profile", type=Path, help="py-spy the server during delivery into PROFILE.<backend>.<n>.txt")
    parser.add_argument("--gc-freeze", type=float, help="server workers call gc.freeze() every this many seconds")
    parser.add_argument("--append", action="store_true", help="add the rows to those already in scale.json")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.smoke:
        args.n = args.n or [200]
        args.heartbeat = args.heartbeat or 1.0
        args.hold = 2.5
    args.n = args.n or [10_000, 100_000]
    args.backend = args.backend or ["ipc"]
    if any(n < 1 for n in args.n):
        parser.error("--n must be at least 1")
    started = time.time()
    results = asyncio.run(drive(args))
    meta = {
        "command": "python -m benchmarks.scale " + " ".join(argv),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "heartbeat": f"{args.heartbeat} s" if args.heartbeat else "25 s (default)",
        "hold": args.hold,
        "pin": args.pin,
        "cores": os.cpu_count(),
        "seconds": round(time.time() - started, 1),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    if args.append and (args.results_dir / "scale.json").exists():
        with contextlib.suppress(ValueError, KeyError):
            earlier = json.loads((args.results_dir / "scale.json").read_text())
            results = earlier["results"] + results
            meta["command"] = f"{earlier['meta']['command']}, then {meta['command']}"
    (args.results_dir / "scale.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (args.results_dir / "scale.md").write_text(markdown(results, meta))
    print(markdown(results, meta))
    return 0 if all(row.get("ok") for row in results[-len(args.n) * len(args.backend) :]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
