"""Does a flooding client hurt everyone else? Echo latency of quiet clients, idle, while one client floods and another
churns connections, and with the flooder rate-limited. ``python -m benchmarks.cases.flood [--smoke]`` (a minute)."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import aiohttp
from aiohttp import web

from ..harness import ROOT, cores, free_port, parser, percentile, pinned, stop, summary, wait_for_port, write
from ..report import table

__all__ = ["RATE_LIMIT", "app", "main", "run"]

MESSAGE = "m" * 64
RATE_LIMIT = 1000  # Messages per second the limited endpoint allows one connection.
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


async def _quiet_clients(url: str, count: int, seconds: float) -> list[float]:
    """*count* clients doing sequential echo round trips for *seconds*; their latencies, sorted."""
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:

        async def quiet_client() -> None:
            async with session.ws_connect(url) as ws:
                deadline = time.perf_counter() + seconds
                while (started := time.perf_counter()) < deadline:
                    await ws.send_str(MESSAGE)
                    if (msg := await ws.receive(timeout=10)).type is not aiohttp.WSMsgType.TEXT:
                        raise RuntimeError(f"quiet client got {msg.type}: the server hurt a client that did no wrong")
                    latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(quiet_client() for _ in range(count)))
    return sorted(latencies)


async def _attack(flood_url: str, churn_url: str, seconds: float) -> dict[str, int]:
    """Flood one connection (reading the echoes; reconnecting when closed) and churn connections, 8 at a time."""
    report = {"sent": 0, "received": 0, "connections": 0, "opened": 0}
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:

        async def flood() -> None:
            while time.monotonic() < deadline:
                async with session.ws_connect(flood_url) as ws:

                    async def reader(ws: aiohttp.ClientWebSocketResponse = ws) -> None:
                        async for msg in ws:
                            report["received"] += msg.type is aiohttp.WSMsgType.TEXT

                    task = asyncio.ensure_future(reader())
                    while time.monotonic() < deadline and not ws.closed:
                        try:
                            for _ in range(100):
                                await ws.send_str(MESSAGE)
                        except (ConnectionError, aiohttp.ClientError):
                            break
                        report["sent"] += 100
                        await asyncio.sleep(0)
                    await ws.close()
                    await task
                    report["connections"] += 1

        async def churn() -> None:
            while time.monotonic() < deadline:
                try:
                    async with session.ws_connect(churn_url):
                        report["opened"] += 1
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.01)

        await asyncio.gather(flood(), *(churn() for _ in range(8)))
    return report


def run(repetitions: int, seconds: float, quiet: int) -> dict[str, Any]:
    """Every phase *repetitions* times on one server; return the figures per phase and the attackers' reports. Raises
    RuntimeError when the server does not start or a quiet client is closed or gets no echo."""
    port, (server_core, client_core) = free_port(), cores()
    line = [sys.executable, "-m", "wsframe", "run", "benchmarks.cases.flood:app", "--port", str(port)]
    server = subprocess.Popen(pinned([*line, "--log-level", "error"], server_core), cwd=ROOT)
    phases: dict[str, list[dict[str, float]]] = {phase: [] for phase in PHASES}
    attackers: dict[str, list[dict[str, int]]] = {phase: [] for phase in PHASES[1:]}
    try:
        wait_for_port(port, server, timeout=20)
        url = f"ws://127.0.0.1:{port}/ws/"
        for _, phase in ((r, p) for r in range(repetitions) for p in PHASES):
            attacker = None
            if phase != "idle":
                # At the lowest priority: the attackers must not starve the quiet clients' process, or their
                # latency would show the client core, not the server.
                flood_url = url + ("limited/" if phase.endswith("rate-limited") else "")
                command = [sys.executable, "-m", "benchmarks.cases.flood", "--attack", flood_url, url]
                command = ["nice", "-n", "19", *pinned([*command, str(seconds + 1.5)], client_core)]
                attacker = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE)
                time.sleep(1.0)  # let the attack get going
            latencies = asyncio.run(_quiet_clients(url, quiet, seconds))
            if attacker is not None:
                attackers[phase].append(json.loads(attacker.communicate(timeout=seconds + 30)[0]))
            p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
            phases[phase].append({"p50_ms": p50, "p99_ms": p99, "round_trips": float(len(latencies))})
        return {"phases": phases, "attackers": attackers, "seconds": seconds, "quiet_clients": quiet}
    finally:
        stop(server)


def markdown(results: dict[str, Any]) -> str:
    """The quiet clients' latency per phase, as medians (min-max) and as ratios to the idle phase."""
    medians = {p: {k: summary([r[k] for r in rows]) for k in rows[0]} for p, rows in results["phases"].items()}
    body = []
    for phase, m in medians.items():
        attack = ""
        if reports := results["attackers"].get(phase):
            sent, over, opened = (summary([r[k] for r in reports])["median"] for k in ("sent", "connections", "opened"))
            attack = f"flooder sent {sent:,.0f} over {over:.0f} connection(s); churn opened {opened:,.0f}"
        cells = [f"{s['median']:.3g} ({s['min']:.3g}-{s['max']:.3g})" for s in m.values()]  # p50, p99, round trips
        ratios = [f"{m[k]['median'] / medians['idle'][k]['median']:.2f}x" for k in ("p50_ms", "p99_ms")]
        body.append([phase, *cells[:2], *ratios, cells[2], attack])
    header = ["phase", "quiet p50 ms", "quiet p99 ms", "p50 / idle", "p99 / idle", "quiet round trips", "attacker"]
    intro = f"{results['quiet_clients']} quiet clients doing 64-byte echo round trips for {results['seconds']} s "
    return "\n".join([intro + "per phase; median (min-max) over repetitions.", "", *table(header, body)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the phases; print the table and write ``flood.json`` and ``flood.md``."""
    parsed = parser("Echo latency of quiet clients, idle and under attack.", "one short repetition")
    parsed.add_argument("--attack", nargs=3, metavar=("FLOOD_URL", "CHURN_URL", "SECONDS"), help=argparse.SUPPRESS)
    args = parsed.parse_args(argv)
    if args.attack:
        print(json.dumps(asyncio.run(_attack(args.attack[0], args.attack[1], float(args.attack[2])))))
        return 0
    results = run(1, 1.0, 3) if args.smoke else run(3, 5.0, 10)
    write(args.results_dir, "flood", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
