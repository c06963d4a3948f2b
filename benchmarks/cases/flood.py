"""Does a flooding client hurt everyone else? Echo latency of quiet clients, idle vs under attack.

::

    python -m benchmarks.cases.flood            # about a minute
    python -m benchmarks.cases.flood --smoke    # seconds: checks that it runs

The wsframe server (``python -m wsframe run benchmarks.cases.flood:app``) is pinned to the server core. In
each phase ten *quiet* clients do sequential 64-byte echo round trips for a few seconds: ``idle``
(nothing else happens); ``flood`` (one client sends 64-byte messages as fast as it can, reading the
echoes, and another opens and closes connections in a loop, both on the default endpoint);
``flood, rate-limited`` (the same, the flooder on an endpoint with ``rate_limit = 1000``: it is closed
with 1008 and reconnects). The attackers run on the other core at the lowest priority. Every phase runs
``--repetitions`` times; the table gives medians (min-max) and p50/p99 as ratios to idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ..harness import ROOT, cores, free_port, percentile, pinned, stop, wait_for_port

__all__ = ["RATE_LIMIT", "app", "main", "run"]

MESSAGE = "m" * 64
RATE_LIMIT = 1000
"""Messages per second the limited endpoint allows one connection."""
PHASES = ("idle", "flood", "flood, rate-limited")


def app() -> web.Application:
    """The server: an echo handler on ``/ws/``, and the same with :data:`RATE_LIMIT` on ``/ws/limited/``."""
    from wsframe import GenericWebsocket, create_app

    class Echo(GenericWebsocket):
        async def receive(self, data: str | bytes) -> None:
            await self.send(data)

    class LimitedEcho(Echo):
        rate_limit = RATE_LIMIT

    return create_app({"ws/": Echo, "ws/limited/": LimitedEcho})


async def _quiet_client(url: str, seconds: float) -> list[float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await ws.send_str(MESSAGE)
            msg = await ws.receive(timeout=10)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"quiet client got {msg.type}: the server hurt a client that did nothing wrong")
            latencies.append(time.perf_counter() - started)
    return latencies


async def _quiet_clients(url: str, count: int, seconds: float) -> list[float]:
    results = await asyncio.gather(*(_quiet_client(url, seconds) for _ in range(count)))
    return sorted(latency for result in results for latency in result)


async def _flood(url: str, seconds: float) -> dict[str, int]:
    """Send as fast as possible on one connection, reading echoes; reconnect when closed."""
    sent = received = closes = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.ws_connect(url) as ws:

                async def reader(ws: aiohttp.ClientWebSocketResponse = ws) -> None:
                    nonlocal received
                    async for msg in ws:
                        received += msg.type is aiohttp.WSMsgType.TEXT

                task = asyncio.ensure_future(reader())
                try:
                    while time.monotonic() < deadline and not ws.closed:
                        for _ in range(100):
                            await ws.send_str(MESSAGE)
                        sent += 100
                        await asyncio.sleep(0)
                except (ConnectionError, aiohttp.ClientError):
                    pass
                await ws.close()
                await task
                closes += 1
    return {"sent": sent, "received": received, "connections": closes}


async def _churn(url: str, seconds: float, concurrency: int = 8) -> dict[str, int]:
    """Open and close connections in a loop."""
    opened = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            nonlocal opened
            while time.monotonic() < deadline:
                try:
                    async with session.ws_connect(url):
                        opened += 1
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"opened": opened}


def run(repetitions: int, seconds: float, quiet: int) -> dict[str, Any]:
    """Every phase *repetitions* times on one server; return the figures per phase and the attackers' reports.

    Raises RuntimeError when the server does not start or a quiet client is closed or gets no echo.
    """
    port, (server_core, client_core) = free_port(), cores()
    line = [sys.executable, "-m", "wsframe", "run", "benchmarks.cases.flood:app", "--port", str(port)]
    server = subprocess.Popen(pinned([*line, "--log-level", "error"], server_core), cwd=ROOT)
    phases: dict[str, list[dict[str, float]]] = {phase: [] for phase in PHASES}
    attackers: dict[str, list[dict[str, int]]] = {phase: [] for phase in PHASES[1:]}
    try:
        wait_for_port(port, server, timeout=20)
        base = f"ws://127.0.0.1:{port}"
        for _ in range(repetitions):
            for phase in PHASES:
                processes: list[tuple[subprocess.Popen[bytes], Path]] = []
                flood_url = f"{base}/ws/limited/" if phase.endswith("rate-limited") else f"{base}/ws/"
                for kind, url in (("flood", flood_url), ("churn", f"{base}/ws/")) if phase != "idle" else ():
                    out = Path(f"/tmp/wsframe-flood-{os.getpid()}-{kind}.json")
                    attacker = [sys.executable, "-m", "benchmarks.cases.flood", "--attacker", kind, url]
                    attacker = pinned([*attacker, str(seconds + 1.5), str(out)], client_core)
                    # On the client core at the lowest priority: the attackers must not starve the quiet
                    # clients' process, or their latency would show the client core, not the server.
                    processes.append((subprocess.Popen(["nice", "-n", "19", *attacker], cwd=ROOT), out))
                if processes:
                    time.sleep(1.0)  # let the attack get going
                latencies = asyncio.run(_quiet_clients(f"{base}/ws/", quiet, seconds))
                report: dict[str, int] = {}
                for process, out in processes:
                    process.wait(timeout=seconds + 30)
                    report.update(json.loads(out.read_text()))
                    out.unlink()
                if processes:
                    attackers[phase].append(report)
                p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
                phases[phase].append({"p50_ms": p50, "p99_ms": p99, "round_trips": float(len(latencies))})
        return {"phases": phases, "attackers": attackers, "seconds": seconds, "quiet_clients": quiet}
    finally:
        stop(server)


def main(argv: list[str] | None = None) -> int:
    """Run the phases; print the table and write ``flood.json`` and ``flood.md``."""
    parser = argparse.ArgumentParser(prog="benchmarks.cases.flood", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one short repetition: checks that it runs")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quiet-clients", type=int, default=10)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--attacker", nargs=4, metavar=("KIND", "URL", "SECONDS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.attacker:
        kind, url, seconds, out = args.attacker
        result = asyncio.run(_flood(url, float(seconds)) if kind == "flood" else _churn(url, float(seconds)))
        Path(out).write_text(json.dumps(result))
        return 0
    repetitions, seconds = (1, 1.0) if args.smoke else (args.repetitions, args.seconds)
    results = run(repetitions, seconds, 3 if args.smoke else args.quiet_clients)
    from ..report import flood_markdown

    print(flood_markdown(results))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "flood.json").write_text(json.dumps(results, indent=2))
    (args.results_dir / "flood.md").write_text(flood_markdown(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
