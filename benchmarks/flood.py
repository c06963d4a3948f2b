"""Does a flooding client hurt everyone else? Echo latency of quiet clients, idle vs under attack.

One command::

    python -m benchmarks.flood            # about a minute
    python -m benchmarks.flood --smoke    # seconds: checks that it runs

The wsframe server (``python -m wsframe run benchmarks.flood_app:app``) is pinned to
core 0; everything else to core 1. In each phase ten *quiet* clients do sequential
64-byte echo round trips for a few seconds and we record their latencies:

- ``idle``: nothing else happens;
- ``flood``: meanwhile one client sends 64-byte messages as fast as it can (reading
  the echoes back), and another opens and closes connections in a loop, both on
  the default endpoint (no rate limit: the server's fairness is all there is);
- ``flood, rate-limited``: the same, with the flooder on an endpoint with
  ``rate_limit = 1000``: it is closed with 1008 and reconnects, over and over.

Every phase runs ``--repetitions`` times; the table gives medians (min-max) and
each phase's p50/p99 as a ratio to idle. The figures come from this machine
only: they compare phases with each other, not with other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = "m" * 64


def _pinned(core: int, command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core), *command]
    return command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server did not listen on {port} within {timeout} s")


async def _quiet_client(url: str, seconds: float) -> list[float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url, autoping=True) as ws:
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


# --------------------------------------------------------------- attackers


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
                        if msg.type is aiohttp.WSMsgType.TEXT:
                            received += 1

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


def _attacker_main(kind: str, url: str, seconds: float, out: str) -> None:
    result = asyncio.run(_flood(url, seconds) if kind == "flood" else _churn(url, seconds))
    Path(out).write_text(json.dumps(result))


# ------------------------------------------------------------------ driver


def _start_attacker(kind: str, url: str, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "benchmarks.flood", "--attacker", kind, url, str(seconds), str(out)]
    # The attackers share core 1 with the quiet clients, at the lowest priority: on a
    # 2-core machine this keeps them from starving the measuring process itself, so the
    # quiet clients' latency shows what the server does, not what the client core does.
    return subprocess.Popen(["nice", "-n", "19", *_pinned(1, command)], cwd=ROOT)


def _percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))]


def run(repetitions: int, seconds: float, quiet: int) -> dict[str, Any]:
    port = _free_port()
    server = subprocess.Popen(
        _pinned(0, [sys.executable, "-m", "wsframe", "run", "benchmarks.flood_app:app", "--port", str(port),
                    "--log-level", "error"]),
        cwd=ROOT,
    )  # fmt: skip
    try:
        _wait_for_port(port)
        base = f"ws://127.0.0.1:{port}"
        phases: dict[str, list[dict[str, float]]] = {"idle": [], "flood": [], "flood, rate-limited": []}
        attackers: dict[str, list[dict[str, int]]] = {"flood": [], "flood, rate-limited": []}
        for _ in range(repetitions):
            for phase in phases:
                processes: list[tuple[subprocess.Popen[bytes], Path]] = []
                if phase != "idle":
                    flood_url = f"{base}/ws/limited/" if phase.endswith("rate-limited") else f"{base}/ws/"
                    for kind, url in (("flood", flood_url), ("churn", f"{base}/ws/")):
                        out = Path(f"/tmp/wsframe-flood-{os.getpid()}-{kind}.json")
                        processes.append((_start_attacker(kind, url, seconds + 1.5, out), out))
                    time.sleep(1.0)  # let the attack get going
                latencies = asyncio.run(_quiet_clients(f"{base}/ws/", quiet, seconds))
                report: dict[str, int] = {}
                for process, out in processes:
                    process.wait(timeout=seconds + 30)
                    report.update(json.loads(out.read_text()))
                    out.unlink()
                if phase != "idle":
                    attackers[phase].append(report)
                phases[phase].append(
                    {
                        "p50_ms": _percentile(latencies, 0.5) * 1000,
                        "p99_ms": _percentile(latencies, 0.99) * 1000,
                        "round_trips": float(len(latencies)),
                    }
                )
        return {"phases": phases, "attackers": attackers, "seconds": seconds, "quiet_clients": quiet}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


def _table(results: dict[str, Any]) -> str:
    phases = results["phases"]
    idle = {k: statistics.median(r[k] for r in phases["idle"]) for k in ("p50_ms", "p99_ms")}

    def cell(rows: list[dict[str, float]], key: str) -> str:
        values = [r[key] for r in rows]
        return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"

    lines = [
        f"{results['quiet_clients']} quiet clients doing 64-byte echo round trips for {results['seconds']} s "
        "per phase; median (min-max) over repetitions.",
        "",
        "| phase | quiet p50 ms | quiet p99 ms | p50 / idle | p99 / idle | quiet round trips | attacker |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase, rows in phases.items():
        p50 = statistics.median(r["p50_ms"] for r in rows)
        p99 = statistics.median(r["p99_ms"] for r in rows)
        attack = ""
        if phase in results["attackers"]:
            reports = results["attackers"][phase]
            attack = (
                f"flooder sent {statistics.median(r['sent'] for r in reports):,.0f} over "
                f"{statistics.median(r['connections'] for r in reports):.0f} connection(s); "
                f"churn opened {statistics.median(r['opened'] for r in reports):,.0f}"
            )
        lines.append(
            f"| {phase} | {cell(rows, 'p50_ms')} | {cell(rows, 'p99_ms')} | {p50 / idle['p50_ms']:.2f}x | "
            f"{p99 / idle['p99_ms']:.2f}x | {cell(rows, 'round_trips')} | {attack} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one short repetition: checks that it runs")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quiet-clients", type=int, default=10)
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--attacker", nargs=4, metavar=("KIND", "URL", "SECONDS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.attacker:
        kind, url, seconds, out = args.attacker
        _attacker_main(kind, url, float(seconds), out)
        return 0
    repetitions, seconds = (1, 1.0) if args.smoke else (args.repetitions, args.seconds)
    results = run(repetitions, seconds, 3 if args.smoke else args.quiet_clients)
    table = _table(results)
    print(table)
    directory = Path(args.results_dir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "flood.json").write_text(json.dumps(results, indent=2))
    (directory / "flood.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
