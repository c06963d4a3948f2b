"""Fan-out triggered by a websocket message: a client sends one message on ``/trigger/`` and the server sends 64 bytes
to a group of N (wsframe: ``send_message_to_group`` from ``receive()``; raw aiohttp: a loop over its clients). The time
from the trigger's send until the last member received it, beside the HTTP-triggered fan-out of
:mod:`benchmarks.cases.fanout`. ``python -m benchmarks.cases.ws_fanout [--size 1000] [--triggers 5] [--smoke]``."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import aiohttp

from ..client import connect_many
from ..harness import ROOT, free_port, parser, raise_file_limit, stop, summary, uvloop_available, wait_for_port, write
from ..report import table
from ..servers import KINDS, command, label
from .fanout import Deliveries

__all__ = ["main", "measure", "render_markdown"]

SETTLE_SECONDS = 1.0
"""Seconds between opening the members and the first trigger (every join is done)."""


async def _trigger_fanouts(port: int, size: int, triggers: int, settle: float) -> dict[str, list[float]]:
    """Open *size* members and one trigger client; time *triggers* fan-outs after one uncounted. Raises RuntimeError
    when a member gets nothing within 30 s or a delivery was not the message sent."""
    loop = asyncio.get_running_loop()
    counter = Deliveries()
    members = await connect_many(port, size, on_message=counter.on_message)
    times, server_times = list[float](), list[float]()
    try:
        await asyncio.sleep(settle)
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/trigger/") as trigger:
            for index in range(triggers + 1):
                counter.remaining = size
                counter.done = done = loop.create_future()
                started = time.perf_counter()
                await trigger.send_str("go")
                try:
                    await asyncio.wait_for(asyncio.shield(done), timeout=30)
                except TimeoutError:
                    raise RuntimeError(f"{counter.remaining} of {size} members got nothing in 30 s") from None
                answer = await trigger.receive_json(timeout=30)
                if index:  # the first is a warm-up
                    times.append((counter.last_at - started) * 1000)
                    server_times.append(answer["seconds"] * 1000)
                await asyncio.sleep(0.1)
    finally:
        for member in members:
            member.close()
    if counter.wrong:
        raise RuntimeError(f"{counter.wrong} deliveries were not the message sent")
    return {"ms": times, "server_ms": server_times}


def measure(kind: str, size: int, triggers: int, settle: float = SETTLE_SECONDS) -> dict[str, Any]:
    """Serve *kind* (``raw`` or ``wsframe``) on a fresh port and time its websocket-triggered fan-outs."""
    port = free_port()
    process = subprocess.Popen(command(kind, port, uvloop_available()), cwd=ROOT)
    try:
        wait_for_port(port, process, timeout=60)
        results = asyncio.run(_trigger_fanouts(port, size, triggers, settle))
    finally:
        stop(process)
    return {key: summary(values) for key, values in results.items()}


def render_markdown(report: dict[str, Any]) -> str:
    """Medians (min-max) of both servers and wsframe's ratio to raw aiohttp."""
    size = report["meta"]["size"]
    rows = []
    for key, title in (("ms", "ms until the last member received it"), ("server_ms", "ms in the server's sends")):
        raw, ours = report["servers"]["raw"][key], report["servers"]["wsframe"][key]
        cells = [f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})" for s in (raw, ours)]
        rows.append([title, *cells, f"{ours['median'] / raw['median']:.2f}x" if raw["median"] else "-"])
    header = ["websocket-triggered fan-out to " + f"{size:,}", label("raw"), label("wsframe"), "wsframe/raw"]
    meta = report["meta"]
    intro = f"{meta['triggers']} fan-outs per server after one warm-up ({meta['when']}, {meta['loop']})."
    return "\n".join([intro, "", *table(header, rows)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure raw aiohttp and wsframe; print the table and write ``ws_fanout.json`` and ``ws_fanout.md``."""
    parsed = parser("Fan-out to a group, triggered by a websocket message.", "20 members, 1 fan-out")
    parsed.add_argument("--size", type=int, default=1000, help="group members (default 1000)")
    parsed.add_argument("--triggers", type=int, default=5, help="counted fan-outs per server (default 5)")
    args = parsed.parse_args(argv)
    size, triggers, settle = (20, 1, 0.1) if args.smoke else (args.size, args.triggers, SETTLE_SECONDS)
    raise_file_limit(size + 200)
    servers = {kind: measure(kind, size, triggers, settle) for kind in KINDS}
    meta = {"size": size, "triggers": triggers, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    meta |= {"loop": "uvloop" if uvloop_available() else "asyncio", "mode": "smoke" if args.smoke else "full"}
    report = {"meta": meta, "servers": servers}
    write(args.results_dir, "ws_fanout", report, render_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
