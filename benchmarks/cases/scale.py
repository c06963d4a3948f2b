"""Scale: hold N open websockets (heartbeat on), then deliver one group message to every one of them.

``python -m benchmarks.cases.scale [--n N ...] [--backend ipc|redis] [--gc-freeze S] [--smoke]`` (default
N = 10,000 then 100,000). gunicorn serves :func:`make_app` with N / 12,500 workers (at least 2) on one
core; as many ``--loadgen`` processes hold the clients on the other. See docs/benchmarks.md for what each
column measures. Writes ``benchmarks/results/scale.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from ..client import OP_TEXT, WsClient, connect_many, post
from ..harness import ROOT, cpu_seconds, gunicorn, percentile, pinned, redis_server, rss_kib, run_loop, uvloop_available

__all__ = ["PER_PROCESS", "main", "make_app", "run_size"]

PER_PROCESS = 12_500
"""Connections per server worker and per load-generator process: well under the 20,000 open-file limit."""
GROUP, MESSAGE = "everyone", "m" * 64


async def make_app() -> web.Application:
    """The app gunicorn serves: ``/ws/`` joins the group, ``POST /trigger/`` sends MESSAGE to it.

    ``SCALE_BACKEND``: a URL, or empty (IPC); ``SCALE_HEARTBEAT``: seconds, or empty (wsframe's default);
    ``SCALE_GC_LOG``: where each worker writes its generation 1 and 2 collections (``[start, seconds,
    generation]``) at shutdown; ``SCALE_GC_FREEZE``: call ``gc.freeze()`` every so many seconds.
    """
    from wsframe import GenericWebsocket, create_app, send_message_to_group

    class Member(GenericWebsocket):
        local = 0  # this worker's members

        async def connect(self) -> None:
            await self.accept()
            await self.join_group(GROUP)
            Member.local += 1

        async def disconnect(self, code: int) -> None:
            Member.local -= 1

    async def trigger(request: web.Request) -> web.Response:
        started = time.monotonic()
        await send_message_to_group(GROUP, MESSAGE)
        answer = {"pid": os.getpid(), "local_members": Member.local, "seconds": time.monotonic() - started}
        return web.json_response(answer)

    heartbeat = os.environ.get("SCALE_HEARTBEAT", "")
    backend = os.environ.get("SCALE_BACKEND") or None
    app = create_app({"ws/": Member, "trigger/": trigger}, backend=backend, heartbeat=float(heartbeat or 0) or None)
    collections: list[tuple[float, float, int]] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.monotonic()
        elif info["generation"] > 0:
            collections.append((started[0], time.monotonic() - started[0], info["generation"]))

    async def gc_log(app: web.Application) -> AsyncIterator[None]:
        directory, freeze = os.environ.get("SCALE_GC_LOG"), os.environ.get("SCALE_GC_FREEZE")
        gc.callbacks.append(on_gc)

        async def freezer(seconds: float) -> None:
            while True:
                await asyncio.sleep(seconds)
                gc.freeze()

        task = asyncio.create_task(freezer(float(freeze))) if freeze else None
        yield
        if task is not None:
            task.cancel()
        gc.callbacks.remove(on_gc)
        if directory:
            with open(os.path.join(directory, f"{os.getpid()}.json"), "w") as file:  # noqa: ASYNC230 - at shutdown
                json.dump({"collections": collections}, file)

    app.cleanup_ctx.append(gc_log)
    return app


async def _loadgen(port: int, count: int, sources: list[str]) -> None:
    """Open *count* clients, report, then answer ``status``, ``arm``, ``wait DEADLINE SETTLE`` and ``exit`` lines."""
    received: Counter[WsClient] = Counter()
    first_at: dict[WsClient, float] = {}
    waiting, all_received, errors, clients = 0, asyncio.Event(), Counter[str](), list[WsClient]()

    def on_message(client: WsClient, opcode: int, payload: bytes) -> None:
        nonlocal waiting
        if opcode == OP_TEXT:
            received[client] += 1
            if received[client] == 1:
                first_at[client] = time.monotonic()
                waiting -= 1
                if waiting == 0:
                    all_received.set()

    def emit(event: str, **fields: Any) -> None:
        still = sum(not c.closed.done() for c in clients)
        fields |= {"event": event, "open": still, "lost": len(clients) - still, "pings": sum(c.pings for c in clients)}
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    started = time.monotonic()
    clients = await connect_many("127.0.0.1", port, "/ws/", count, sources=sources, concurrency=64,
                                 on_message=on_message, attempts=6, errors=errors)
    emit("opened", opened=len(clients), errors=dict(errors), started=started, finished=time.monotonic())
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (line := (await reader.readline()).decode().split()) and line[0] != "exit":
        if line[0] == "arm":
            waiting = sum(not c.closed.done() for c in clients)
            all_received.clear()
            if waiting == 0:
                all_received.set()
        elif line[0] == "wait":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_received.wait(), max(0.0, float(line[1]) - time.monotonic()))
            await asyncio.sleep(float(line[2]))  # a second copy would arrive in this time
            counts = Counter(min(received[c], 2) for c in clients)
            emit("received", times=list(first_at.values()), exactly_one=counts[1], none=counts[0], more=counts[2])
            continue
        emit(line[0])
    for client in clients:
        client.close()


Loadgen = asyncio.subprocess.Process
"""A load-generator process: spoken to in lines on its stdin, answering in JSON lines on its stdout."""


async def _send(lg: Loadgen, line: str) -> None:
    assert lg.stdin is not None
    lg.stdin.write(line.encode() + b"\n")
    await lg.stdin.drain()


async def _read(lg: Loadgen, seconds: float) -> dict[str, Any]:
    assert lg.stdout is not None
    if not (line := await asyncio.wait_for(lg.stdout.readline(), seconds)):
        raise RuntimeError(f"load generator {lg.pid} exited with {await lg.wait()}")
    event: dict[str, Any] = json.loads(line)
    return event


async def _all(group: list[Loadgen], command: str | None, seconds: float) -> list[dict[str, Any]]:
    """Send *command* (when given) to every load generator, then read each one's next event; TimeoutError."""
    for lg in group if command else []:
        await _send(lg, command or "")
    return list(await asyncio.gather(*(_read(lg, seconds) for lg in group)))


@contextlib.asynccontextmanager
async def loadgens(n: int, port: int, core: int | None, run_index: int) -> AsyncIterator[list[Loadgen]]:
    """Start the load-generator processes (each opens its share at once); ended with ``exit``, then killed."""
    processes, group = max(2, math.ceil(n / PER_PROCESS)), list[Loadgen]()
    try:
        for i in range(processes):
            share = n // processes + (1 if i < n % processes else 0)
            sources = f"127.{run_index % 200 + 1}.0.{i + 2},127.{run_index % 200 + 1}.1.{i + 2}"
            line = [sys.executable, "-m", "benchmarks.cases.scale", "--loadgen", str(port), str(share), sources]
            pipe = asyncio.subprocess.PIPE
            group.append(await asyncio.create_subprocess_exec(*pinned(line, core), cwd=ROOT, stdin=pipe, stdout=pipe,
                                                              limit=1 << 26))
        yield group
    finally:
        for lg in group:
            with contextlib.suppress(OSError, RuntimeError):
                await _send(lg, "exit")
        for lg in group:
            try:
                await asyncio.wait_for(lg.wait(), 20)
            except TimeoutError:
                lg.kill()
                await lg.wait()


def _tcp_kernel_bytes() -> int:
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            return int(line.split()[line.split().index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def _sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def _cpu(pids: list[int], *, system_only: bool = False) -> float:
    return sum(cpu_seconds(pid, system_only=system_only) for pid in pids)


def _gc_summary(directory: Path, windows: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Seconds the workers spent in generation 1/2 collections during each window, from their logs."""
    collections: list[list[float]] = []
    files = list(directory.glob("*.json"))
    for file in files:
        with contextlib.suppress(OSError, ValueError):
            collections += json.loads(file.read_text())["collections"]
    result: dict[str, Any] = {"gc_logs": len(files)}
    for name, (start, end) in windows.items():
        inside = [c for c in collections if start <= c[0] <= end]
        result[f"gc_full_s_{name}"] = round(sum(c[1] for c in inside if c[2] == 2), 3)
        result[f"gc_full_count_{name}"] = sum(1 for c in inside if c[2] == 2)
        result[f"gc_gen1_s_{name}"] = round(sum(c[1] for c in inside if c[2] == 1), 3)
        result[f"gc_longest_ms_{name}"] = round(max((c[1] for c in inside), default=0.0) * 1000, 1)
    return result


async def _trigger(port: int) -> tuple[float, float, dict[str, Any]]:
    """POST /trigger/; return when it was sent, when its answer began (monotonic) and the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        sent_at = time.monotonic()
        return (sent_at, *await post(reader, writer, "127.0.0.1", port, "/trigger/"))
    finally:
        writer.close()


async def run_size(n: int, *, backend: str, hold: float, heartbeat: float | None, pin: bool, run_index: int,
                   gc_freeze: float | None = None) -> dict[str, Any]:
    """Measure one N on a fresh server; return the result row (see the module docstring).

    Raises RuntimeError or TimeoutError when a server or load generator does not start or answer in time.
    """
    server_core, loadgen_core = (0, 1) if pin else (None, None)
    workers = max(2, math.ceil(n / PER_PROCESS))
    r: dict[str, Any] = {"n": n, "backend": backend, "workers": workers, "pinned": pin, "gc_freeze_every_s": gc_freeze}
    windows: dict[str, tuple[float, float]] = {}
    with contextlib.ExitStack() as stack:
        gc_log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-gc-")))
        # Runs once gunicorn has stopped (exit callbacks run last-in, first-out): its workers wrote their GC logs.
        stack.callback(lambda: r.update(_gc_summary(gc_log, windows)))
        url = stack.enter_context(redis_server(None))[0] if backend == "redis" else ""
        env = {"SCALE_BACKEND": url, "SCALE_HEARTBEAT": str(heartbeat or ""), "SCALE_GC_LOG": str(gc_log),
               "SCALE_GC_FREEZE": str(gc_freeze or "")}
        args = ("--backlog", "4096", "--graceful-timeout", "30", "--timeout", "120")
        server = stack.enter_context(gunicorn("benchmarks.cases.scale:make_app", workers=workers, core=server_core,
                                              use_uvloop=uvloop_available(), env=env, args=args))
        everyone, port = [server.process.pid, *server.workers], server.port
        async with loadgens(64, port, loadgen_core, run_index) as group:  # warm-up: a delivery to a few
            await _all(group, None, 60)
            await _all(group, "arm", 10)
            await _trigger(port)
            await _all(group, f"wait {time.monotonic() + 10} 0", 20)
        await asyncio.sleep(1.0)
        rss_0, tcp_0, cpu_0 = sum(map(rss_kib, server.workers)), _tcp_kernel_bytes(), _cpu(everyone)
        async with loadgens(n, port, loadgen_core, run_index + 1) as group:
            loadgen_pids = [lg.pid for lg in group]
            opened = await _all(group, None, 240)
            errors = sum((Counter(e["errors"]) for e in opened), Counter[str]())
            windows["open"] = (min(e["started"] for e in opened), max(e["finished"] for e in opened))
            seconds = windows["open"][1] - windows["open"][0]
            r.update(opened=sum(e["opened"] for e in opened), connect_errors_retried=dict(errors))
            r.update(failed=n - r["opened"], open_seconds=round(seconds, 3), loadgen_processes=len(group))
            r["opens_per_s"] = round(r["opened"] / seconds) if seconds > 0 else None
            r["server_cpu_open_s"] = round(_cpu(everyone) - cpu_0, 2)
            r["loadgen_cpu_open_s"] = round(_cpu(loadgen_pids), 2)
            r.update(sockets_per_worker=[_sockets(pid) for pid in server.workers])
            rss_open, hold_started, cpu_hold_0 = sum(map(rss_kib, server.workers)), time.monotonic(), _cpu(everyone)
            await asyncio.sleep(hold)  # at least one heartbeat: every connection pinged and answered
            statuses = await _all(group, "status", 10)
            rss_n, tcp_n = sum(map(rss_kib, server.workers)), _tcp_kernel_bytes()
            windows["hold"] = (hold_started, time.monotonic())
            held = r["held"] = sum(s["open"] for s in statuses)
            busy = (_cpu(everyone) - cpu_hold_0) / (windows["hold"][1] - hold_started)
            r["server_cpu_per_s_holding"] = round(busy, 3)
            r.update(hold_seconds=hold, lost_while_holding=sum(s["lost"] for s in statuses))
            r.update(pings_answered=sum(s["pings"] for s in statuses), server_rss_0_mb=round(rss_0 / 1024, 1))
            r.update(server_rss_n_mb=round(rss_n / 1024, 1), server_rss_after_open_mb=round(rss_open / 1024, 1))
            r["server_bytes_per_connection"] = round((rss_n - rss_0) * 1024 / held) if held else None
            r["kernel_tcp_bytes_per_connection_both_ends"] = round((tcp_n - tcp_0) / held) if held else None
            await _all(group, "arm", 10)
            cpu_before, sys_before, lg_before = _cpu(everyone), _cpu(everyone, system_only=True), _cpu(loadgen_pids)
            sent_at, answered_at, answer = await _trigger(port)
            received = await _all(group, f"wait {sent_at + 60} 1.0", 90)
            times = sorted(t - sent_at for e in received for t in e["times"])
            windows["delivery"] = (sent_at, sent_at + (times[-1] if times else 0.0))
            for key in ("exactly_one", "none", "more"):
                r[f"delivered_{'exactly_once' if key == 'exactly_one' else key}"] = sum(e[key] for e in received)
            r["trigger_answered_ms"] = round((answered_at - sent_at) * 1000, 1)
            r["triggering_worker_members"] = answer["local_members"]
            r["send_call_ms"] = round(answer["seconds"] * 1000, 1)
            if times:
                points = (times[0], statistics.median(times), percentile(times, 0.99), times[-1])
                for key, value in zip(("first", "median", "p99", "last"), points, strict=True):
                    r[f"{key}_received_ms"] = round(value * 1000, 1)
            r["server_cpu_delivery_s"] = round(_cpu(everyone) - cpu_before, 2)
            r["server_system_cpu_delivery_s"] = round(_cpu(everyone, system_only=True) - sys_before, 2)
            r["loadgen_cpu_delivery_s"] = round(_cpu(loadgen_pids) - lg_before, 2)
    r["ok"] = r["opened"] == n and r["delivered_exactly_once"] == n and r["lost_while_holding"] == 0
    return r


async def drive(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every size on every backend in turn, each on a fresh server; a size that fails is a row with its error."""
    results: list[dict[str, Any]] = []
    for index, (backend, n) in enumerate((b, n) for b in args.backend for n in args.n):
        settings = {"backend": backend, "hold": args.hold, "heartbeat": args.heartbeat, "pin": args.pin}
        try:
            row = await asyncio.wait_for(run_size(n, run_index=2 * index + 2, gc_freeze=args.gc_freeze, **settings),
                                         args.hold + 420)
        except (RuntimeError, TimeoutError, OSError) as exc:
            row = {"n": n, "backend": backend, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--loadgen PORT COUNT SOURCES``, one load generator); exit 1 if a size failed."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--loadgen"]:
        run_loop(_loadgen(int(argv[1]), int(argv[2]), argv[3].split(",")), uvloop_available())
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="connections (repeat for several sizes)")
    parser.add_argument("--backend", choices=["ipc", "redis"], action="append", help="default: ipc")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds to hold N open before sending")
    parser.add_argument("--heartbeat", type=float, default=None, help="server heartbeat (default: wsframe's, 25 s)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server/loadgen to cores")
    parser.add_argument("--smoke", action="store_true", help="N=200, 1 s heartbeat, 2.5 s hold: checks that it runs")
    parser.add_argument("--gc-freeze", type=float, help="server workers call gc.freeze() every this many seconds")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.heartbeat, args.hold = args.n or [200], args.heartbeat or 1.0, 2.5
    args.n, args.backend = args.n or [10_000, 100_000], args.backend or ["ipc"]
    if any(n < 1 for n in args.n):
        parser.error("--n must be at least 1")
    started = time.time()
    results = asyncio.run(drive(args))
    meta = {"command": "python -m benchmarks.cases.scale " + " ".join(argv), "hold": args.hold, "pin": args.pin,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)), "cores": os.cpu_count(),
            "heartbeat": f"{args.heartbeat} s" if args.heartbeat else "25 s (default)",
            "seconds": round(time.time() - started, 1)}
    from ..report import scale_markdown

    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "scale.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (args.results_dir / "scale.md").write_text(scale_markdown(results, meta))
    print(scale_markdown(results, meta))
    return 0 if all(row.get("ok") for row in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
