"""The load generator: runs the single-server cases against every server of a run in turn; prints JSON.

``python -m benchmarks.loadgen --target raw:8001:PID --target wsframe:8002:PID [--config JSON]``. It runs
in a process of its own (``benchmarks.run`` pins it to its own core) and measures its own CPU and the
server's over each window. Cases, in order: memory, echo, open + close, fan-out (:mod:`benchmarks.cases`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from .cases import Config, close_all, progress
from .cases.echo import echo, warm_up
from .cases.fanout import Deliveries, fanout
from .cases.memory import idle_memory
from .cases.open_close import open_close
from .client import WsClient
from .harness import raise_file_limit, run_loop

__all__ = ["main", "run_session"]


async def run_session(cfg: Config, targets: list[tuple[str, int, int]], first: int = 0) -> dict[str, dict[str, Any]]:
    """Run every case against every ``(name, port, pid)`` target; return name -> case id -> figures.

    The targets take turns case by case, and which goes first alternates (starting with
    ``targets[first % len(targets)]``), so a change in machine load between cases hits every server
    alike and each comparison is a few seconds apart.
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
        progress(f"{name}: warm-up")
        await warm_up(target)
    if "idle_memory" in cfg.cases:
        for name, target in in_turn():
            progress(f"{name}: idle_memory")
            results[name]["idle_memory"] = await idle_memory(target)
    if "echo" in cfg.cases:
        for connections in cfg.echo_connections:
            for name, target in in_turn():
                progress(f"{name}: echo_{connections}")
                results[name][f"echo_{connections}"] = await echo(target, connections)
    if "open_close" in cfg.cases:
        for name, target in in_turn():
            progress(f"{name}: open_close")
            results[name]["open_close"] = await open_close(target)
    if "fanout" in cfg.cases:
        # One server at a time: 10,000 connections to each at once would need twice the file descriptors.
        for name, target in in_turn():
            counter = Deliveries()
            clients: list[WsClient] = []
            try:
                for size in sorted(cfg.fanout_sizes):
                    progress(f"{name}: fanout_{size}")
                    results[name][f"fanout_{size}"] = await fanout(target, clients, size, counter)
            finally:
                await close_all(clients, settle=cfg.settle_seconds)
    return results


def _target(text: str) -> tuple[str, int, int]:
    name, port, pid = text.split(":")
    return name, int(port), int(pid)


def main(argv: list[str] | None = None) -> int:
    """Run one session and print ``{"results": {name: {case: figures}}, "uvloop": bool}`` as JSON on stdout."""
    parser = argparse.ArgumentParser(description="wsframe benchmark load generator (one session).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--target", type=_target, action="append", required=True, help="NAME:PORT:PID; repeat")
    parser.add_argument("--first", type=int, default=0, help="index of the target that goes first")
    parser.add_argument("--config", default="{}", help="JSON object of benchmarks.cases.Config fields")
    parser.add_argument("--uvloop", action="store_true", help="use uvloop's event loop")
    args = parser.parse_args(argv)
    cfg = Config(**json.loads(args.config))
    cfg.host = args.host
    raise_file_limit(max([cfg.idle_connections, *cfg.fanout_sizes]) + 200)
    results = run_loop(run_session(cfg, args.target, args.first), args.uvloop)
    json.dump({"results": results, "uvloop": args.uvloop}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
