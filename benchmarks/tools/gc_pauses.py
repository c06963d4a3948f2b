"""The longest garbage-collection pause of a ``wsframe run`` server opening, holding and closing N websockets.
``python -m benchmarks.tools.gc_pauses [--connections 18000] [--hold 10] [--smoke]``: once with ``gc_freeze`` on (the
default), once with it off; each collection is timed in the server with ``gc.callbacks``. Pauses are wall time, so on
a shared machine they also include waiting for the CPU; compare the two runs of one invocation."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import harness
from ..client import CLOSE_FRAME, connect_many
from ..report import table

__all__ = ["app", "main", "measure", "render_markdown"]

LOG_ENV, FREEZE_ENV = "GC_PAUSES_LOG", "GC_PAUSES_FREEZE"


def app() -> web.Application:
    """The server: a ``GenericWebsocket`` that accepts and echoes; logs every collection to ``$GC_PAUSES_LOG``."""
    from wsframe import GenericWebsocket, create_app

    class Echo(GenericWebsocket):
        async def receive(self, data: str | bytes) -> None:
            await self.send(data)

    served = create_app({"ws/": Echo}, gc_freeze=os.environ.get(FREEZE_ENV) != "0")
    collections: list[tuple[int, float]] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            collections.append((info["generation"], time.perf_counter() - started[0]))

    async def log(_: web.Application) -> AsyncIterator[None]:
        gc.callbacks.append(on_gc)
        yield
        gc.callbacks.remove(on_gc)
        Path(os.environ[LOG_ENV]).write_text(json.dumps(collections))  # noqa: ASYNC240 - at shutdown

    served.cleanup_ctx.append(log)
    return served


async def _drive(port: int, count: int, hold: float) -> float:
    started = time.monotonic()
    clients = await connect_many(port, count, concurrency=64)
    opened = time.monotonic() - started
    await asyncio.sleep(hold)
    for client in clients:
        client.send(CLOSE_FRAME)
    await asyncio.sleep(1.0)
    for client in clients:
        client.close()
    return opened


def measure(count: int, hold: float, freeze: bool) -> dict[str, Any]:
    """Serve, open *count* connections, hold them *hold* s, close them; the server's collections, summed up."""
    port = harness.free_port()
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "gc.json"
        env = {**os.environ, LOG_ENV: str(log), FREEZE_ENV: "1" if freeze else "0"}
        line = [sys.executable, "-m", "wsframe", "run", "benchmarks.tools.gc_pauses:app", "--host", "127.0.0.1"]
        line += ["--port", str(port), "--log-level", "warning"]
        process = subprocess.Popen(line, cwd=harness.ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            harness.wait_for_port(port, process, timeout=60)
            opened = asyncio.run(_drive(port, count, hold))
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
        collections = json.loads(log.read_text())
    full = [seconds for generation, seconds in collections if generation == 2]
    return {
        "gc_freeze": freeze,
        "connections": count,
        "open_seconds": round(opened, 2),
        "collections": len(collections),
        "full_collections": len(full),
        "longest_full_ms": round(max(full, default=0.0) * 1000, 1),
        "longest_any_ms": round(max((s for _, s in collections), default=0.0) * 1000, 1),
        "full_total_ms": round(sum(full) * 1000, 1),
    }


def render_markdown(rows: list[dict[str, Any]]) -> str:
    """The two runs as a Markdown table."""
    header = ["gc_freeze", "connections", "full collections", "longest full (ms)", "longest any (ms)"]
    header.append("full total (ms)")
    keys = ["gc_freeze", "connections", "full_collections", "longest_full_ms", "longest_any_ms", "full_total_ms"]
    return "\n".join(table(header, [[str(r[k]) for k in keys] for r in rows])) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure with and without gc_freeze; print and write the table."""
    parser = harness.parser("Longest GC pause of wsframe holding N connections, gc_freeze on and off.", "200, 1 s")
    parser.add_argument("--connections", type=int, default=18_000, help="websockets to open (default 18000)")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds to hold them open (default 10)")
    args = parser.parse_args(argv)
    count, hold = (200, 1.0) if args.smoke else (args.connections, args.hold)
    harness.raise_file_limit()
    rows = [measure(count, hold, freeze) for freeze in (True, False)]
    harness.write(args.results_dir, "gc_pauses", {"rows": rows}, render_markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
