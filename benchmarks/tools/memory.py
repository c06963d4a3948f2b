"""Where a server's memory per idle connection goes, by allocation site (``tracemalloc``).

    python -m benchmarks.tools.memory wsframe [--connections 5000 --top 40]      # or: raw

Serves the app in this process (asyncio's loop: tracemalloc sees Python allocations, not uvloop's), opens
the connections from a subprocess, and prints the traced growth per connection and the allocation sites
in wsframe's code (and the benchmark handlers) with their bytes per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tracemalloc

from aiohttp import web

from ..harness import ROOT
from ..servers import raw_app, wsframe_app

__all__ = ["main", "measure"]

_CLIENT = """
import asyncio, sys
from benchmarks.client import connect_many
async def main():
    clients = await connect_many("127.0.0.1", {port}, "/ws/", {count}, sources=["127.0.0.2", "127.0.0.3"])
    print("open", flush=True)
    await asyncio.sleep({hold})
asyncio.run(main())
"""


async def _open_clients(port: int, count: int, hold: float) -> asyncio.subprocess.Process:
    """Start a subprocess holding *count* idle connections for *hold* seconds; return once they are open."""
    process = await asyncio.create_subprocess_exec(sys.executable, "-c",
                                                   _CLIENT.format(port=port, count=count, hold=hold), cwd=ROOT,
                                                   stdout=asyncio.subprocess.PIPE)
    if process.stdout is None or await process.stdout.readline() != b"open\n":
        raise RuntimeError("the client process did not open its connections")
    return process


async def measure(kind: str, connections: int, top: int) -> str:
    """Return the report for *kind* (``wsframe`` or ``raw``) with *connections* idle connections."""
    app = wsframe_app() if kind == "wsframe" else raw_app()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        warm = await _open_clients(port, 50, hold=0.5)  # first-use allocations are not per connection
        await warm.wait()
        await asyncio.sleep(0.5)
        gc.collect()
        tracemalloc.start(4)
        before = tracemalloc.take_snapshot()
        holder = await _open_clients(port, connections, hold=5)
        await asyncio.sleep(1.5)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        await holder.wait()
    finally:
        await runner.cleanup()
    total = sum(stat.size_diff for stat in after.compare_to(before, "traceback"))
    lines = [f"{kind}: traced growth {total / connections:,.0f} bytes per connection ({connections} connections)"]
    lines.append("bytes/conn  blocks/conn  allocated at (innermost frame in wsframe/, benchmarks/ or a middleware)")
    mine = ("wsframe/", "benchmarks/servers", "web_middlewares")
    stats = [s for s in after.compare_to(before, "lineno") if s.size_diff / connections >= 8
             and any(part in s.traceback[0].filename for part in mine)]
    for stat in stats[:top]:
        where = stat.traceback[0].filename.split(f"{ROOT}/")[-1].split("site-packages/")[-1]
        lines.append(f"{stat.size_diff / connections:10,.0f}  {stat.count_diff / connections:11.1f}  "
                     f"{where}:{stat.traceback[0].lineno}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the memory report of one server."""
    parser = argparse.ArgumentParser(description="Memory per idle connection by allocation site.")
    parser.add_argument("server", choices=["wsframe", "raw"])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    sys.stdout.write(asyncio.run(measure(args.server, args.connections, args.top)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
