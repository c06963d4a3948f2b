"""Scale: hold N websockets open through heartbeats, then one group message to all of them; GC pauses included.

python -m benchmarks.cases.scale [--n N ...] [--backend ipc|redis] [--gc-freeze S] [--smoke]
"""

from __future__ import annotations

import asyncio
import contextlib
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

import aiohttp

from .. import harness
from ..harness import ROOT, cpu_seconds, gunicorn, parser, percentile, pinned, post, redis_server, rss_kib, write
from ..report import scale_markdown

__all__ = ["PER_PROCESS", "main", "run_size"]

PER_PROCESS = 12_500
"""Connections per server worker and per load-generator process: well under the 20,000 open-file limit."""
Loadgen = asyncio.subprocess.Process
"""A ``benchmarks.loadgen --hold`` process, told lines on its stdin and answering in JSON lines."""


async def _all(group: list[Loadgen], command: str | None, seconds: float) -> list[dict[str, Any]]:
    """Send *command* (when given) to every load generator, then read each one's next event; TimeoutError."""
    for lg in group if command else []:
        assert lg.stdin is not None
        lg.stdin.write(f"{command}\n".encode())
        await lg.stdin.drain()

    async def read(lg: Loadgen) -> dict[str, Any]:
        assert lg.stdout is not None
        if not (line := await asyncio.wait_for(lg.stdout.readline(), seconds)):
            raise RuntimeError(f"load generator {lg.pid} exited with {await lg.wait()}")
        event: dict[str, Any] = json.loads(line)
        return event

    return list(await asyncio.gather(*(read(lg) for lg in group)))


@contextlib.asynccontextmanager
async def loadgens(n: int, port: int, core: int | None, run_index: int) -> AsyncIterator[list[Loadgen]]:
    """Start the load-generator processes (each opens its share at once); ended with ``exit``, then killed."""
    processes, group, net = max(2, math.ceil(n / PER_PROCESS)), list[Loadgen](), run_index % 200 + 1
    try:
        for i in range(processes):
            share, sources = n // processes + (i < n % processes), f"127.{net}.0.{i + 2},127.{net}.1.{i + 2}"
            line = [sys.executable, "-m", "benchmarks.loadgen", "--hold", str(port), str(share), sources]
            pipe = asyncio.subprocess.PIPE
            lg = await asyncio.create_subprocess_exec(
                *pinned(line, core), cwd=ROOT, stdin=pipe, stdout=pipe, limit=1 << 26
            )
            group.append(lg)
        yield group
    finally:
        for lg in group:
            with contextlib.suppress(OSError, RuntimeError):
                lg.stdin.write(b"exit\n")  # type: ignore[union-attr]
        for lg in group:
            try:
                await asyncio.wait_for(lg.wait(), 20)
            except TimeoutError:
                lg.kill()
                await lg.wait()


def _sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def _cpu(pids: list[int], *, system_only: bool = False) -> float:
    return sum(cpu_seconds(pid, system_only=system_only) for pid in pids)


def _gc_summary(directory: Path, windows: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Seconds and counts of the workers' generation 2 collections during each window, from their logs."""
    collections: list[list[float]] = []
    files = list(directory.glob("*.json"))
    for file in files:
        with contextlib.suppress(OSError, ValueError):
            collections += json.loads(file.read_text())["collections"]
    result: dict[str, Any] = {"gc_logs": len(files)}
    for name, (start, end) in windows.items():
        inside = [c for c in collections if start <= c[0] <= end]
        full = [c[1] for c in inside if c[2] == 2]
        result |= {f"gc_full_s_{name}": round(sum(full), 3), f"gc_full_count_{name}": len(full)}
        result[f"gc_longest_ms_{name}"] = round(max((c[1] for c in inside), default=0.0) * 1000, 1)
    return result


async def _trigger(port: int) -> tuple[float, dict[str, Any]]:
    """POST /trigger/; return when it was sent (monotonic) and the answer."""
    async with aiohttp.ClientSession() as http:
        sent_at = time.monotonic()
        return sent_at, await post(http, f"http://127.0.0.1:{port}/trigger/")


async def run_size(
    n: int, *, backend: str, hold: float, heartbeat: float | None, run_index: int, gc_freeze: float | None
) -> dict[str, Any]:
    """Measure one N on a fresh server; return the result row (the columns of ``report.scale_markdown``). Raises
    RuntimeError or TimeoutError when a server or load generator does not start or answer in time."""
    workers = max(2, math.ceil(n / PER_PROCESS))
    r: dict[str, Any] = {"n": n, "backend": backend, "workers": workers, "gc_freeze_every_s": gc_freeze}
    windows: dict[str, tuple[float, float]] = {}
    with contextlib.ExitStack() as stack:
        gc_log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-gc-")))
        # Runs once gunicorn has stopped (exit callbacks run last-in, first-out): its workers wrote their GC logs.
        stack.callback(lambda: r.update(_gc_summary(gc_log, windows)))
        url = stack.enter_context(redis_server(None))[0] if backend == "redis" else ""
        env = {"SCALE_BACKEND": url, "SCALE_HEARTBEAT": str(heartbeat or ""), "SCALE_GC_LOG": str(gc_log)}
        env["SCALE_GC_FREEZE"] = str(gc_freeze or "")
        args = ("--backlog", "4096", "--graceful-timeout", "30", "--timeout", "120")
        uv = harness.uvloop_available()
        app = gunicorn("benchmarks.servers:scale_app", workers=workers, core=0, use_uvloop=uv, env=env, args=args)
        server = stack.enter_context(app)
        everyone, port = [server.process.pid, *server.workers], server.port
        async with loadgens(64, port, 1, run_index) as group:  # warm-up: a delivery to a few
            await _all(group, None, 60)
            await _all(group, "arm", 10)
            await _trigger(port)
            await _all(group, f"wait {time.monotonic() + 10} 0", 20)
        await asyncio.sleep(1.0)
        rss_0, cpu_0 = sum(map(rss_kib, server.workers)), _cpu(everyone)
        async with loadgens(n, port, 1, run_index + 1) as group:
            loadgen_pids = [lg.pid for lg in group]
            opened = await _all(group, None, 240)
            windows["open"] = (min(e["started"] for e in opened), max(e["finished"] for e in opened))
            seconds = windows["open"][1] - windows["open"][0]
            r["opened"] = sum(e["opened"] for e in opened)
            r["connect_errors_retried"] = dict(sum((Counter(e["errors"]) for e in opened), Counter[str]()))
            r |= {"failed": n - r["opened"], "open_seconds": round(seconds, 3), "loadgen_processes": len(group)}
            r["opens_per_s"] = round(r["opened"] / seconds) if seconds > 0 else None
            r["server_cpu_open_s"] = round(_cpu(everyone) - cpu_0, 2)
            r["loadgen_cpu_open_s"] = round(_cpu(loadgen_pids), 2)
            r["sockets_per_worker"] = [_sockets(pid) for pid in server.workers]
            hold_started, cpu_hold_0 = time.monotonic(), _cpu(everyone)
            await asyncio.sleep(hold)  # at least one heartbeat: every connection pinged and answered
            statuses = await _all(group, "status", 10)
            rss_n, windows["hold"] = sum(map(rss_kib, server.workers)), (hold_started, time.monotonic())
            held = r["held"] = sum(s["open"] for s in statuses)
            busy = (_cpu(everyone) - cpu_hold_0) / (windows["hold"][1] - hold_started)
            r["server_cpu_per_s_holding"] = round(busy, 3)
            r |= {"hold_seconds": hold, "lost_while_holding": sum(s["lost"] for s in statuses)}
            r |= {"pings_answered": sum(s["pings"] for s in statuses), "server_rss_0_mb": round(rss_0 / 1024, 1)}
            r["server_rss_n_mb"] = round(rss_n / 1024, 1)
            r["server_bytes_per_connection"] = round((rss_n - rss_0) * 1024 / held) if held else None
            await _all(group, "arm", 10)
            cpu_before, sys_before, lg_before = _cpu(everyone), _cpu(everyone, system_only=True), _cpu(loadgen_pids)
            sent_at, answer = await _trigger(port)
            received = await _all(group, f"wait {sent_at + 60} 1.0", 90)
            times = sorted(t - sent_at for e in received for t in e["times"])
            windows["delivery"] = (sent_at, sent_at + (times[-1] if times else 0.0))
            for key, name in (("exactly_one", "exactly_once"), ("none", "none"), ("more", "more")):
                r[f"delivered_{name}"] = sum(e[key] for e in received)
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


async def drive(sizes: list[tuple[str, int]], **settings: Any) -> list[dict[str, Any]]:
    """Every (backend, N) in turn, each on a fresh server; a size that fails is a row with its error."""
    results: list[dict[str, Any]] = []
    for index, (backend, n) in enumerate(sizes):
        try:
            measuring = run_size(n, backend=backend, run_index=2 * index + 2, **settings)
            row = await asyncio.wait_for(measuring, settings["hold"] + 420)
        except (RuntimeError, TimeoutError, OSError) as exc:
            row = {"n": n, "backend": backend, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if a size failed."""
    argv = sys.argv[1:] if argv is None else argv
    parsed = parser("Scale: N open websockets, one group message to all.", "N=200, 1 s heartbeat, 2.5 s hold")
    parsed.add_argument("--n", type=int, action="append", help="connections (repeat for several sizes)")
    parsed.add_argument("--backend", choices=["ipc", "redis"], action="append", help="default: ipc")
    parsed.add_argument("--gc-freeze", type=float, help="server workers call gc.freeze() every this many seconds")
    args = parsed.parse_args(argv)
    if args.smoke:
        args.n = args.n or [200]
    hold, heartbeat = (2.5, 1.0) if args.smoke else (30.0, None)  # held through one heartbeat at least
    if any(n < 1 for n in args.n or []):
        parsed.error("--n must be at least 1")
    started, sizes = time.time(), [(b, n) for b in args.backend or ["ipc"] for n in args.n or [10_000, 100_000]]
    results = asyncio.run(drive(sizes, hold=hold, heartbeat=heartbeat, gc_freeze=args.gc_freeze))
    meta = {"command": "python -m benchmarks.cases.scale " + " ".join(argv), "hold": hold, "cores": os.cpu_count()}
    meta["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    meta["seconds"] = round(time.time() - started, 1)
    meta["heartbeat"] = f"{heartbeat} s" if heartbeat else "25 s (default)"
    write(args.results_dir, "scale", {"meta": meta, "results": results}, scale_markdown(results, meta))
    return 0 if all(row.get("ok") for row in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
