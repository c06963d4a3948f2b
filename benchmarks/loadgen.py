"""The load generator, in a process of its own: the single-server cases against every server in turn, as JSON
(``--target NAME:PORT:PID ... [--config JSON]``), or (``--hold``) the scale case's clients."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import sys
import time
from collections import Counter
from typing import Any

from .cases import Config, close_all
from .cases.echo import echo, warm_up
from .cases.fanout import Deliveries, fanout
from .cases.memory import idle_memory
from .cases.open_close import open_close
from .client import OP_TEXT, WsClient, connect_many
from .harness import raise_file_limit, run_loop, uvloop_available

__all__ = ["hold", "main", "run_session"]


async def run_session(cfg: Config, targets: list[tuple[str, int, int]], first: int = 0) -> dict[str, dict[str, Any]]:
    """Run every case against every ``(name, port, pid)`` target; return name -> case id -> figures. The targets take
    turns case by case, and which goes first rotates (from ``targets[first % len(targets)]``), so a change in machine
    load between cases hits every server alike and each comparison is seconds apart."""
    items = [(name, dataclasses.replace(cfg, port=port, server_pid=pid)) for name, port, pid in targets]
    results: dict[str, dict[str, Any]] = {name: {} for name, _ in items}
    turns = (items[i % len(items) :] + items[: i % len(items)] for i in itertools.count(first))
    in_turn = turns.__next__

    for _, target in in_turn():
        await warm_up(target)
    for name, target in in_turn() if "idle_memory" in cfg.cases else []:
        results[name]["idle_memory"] = await idle_memory(target)
    for connections in cfg.echo_connections if "echo" in cfg.cases else []:
        for name, target in in_turn():
            results[name][f"echo_{connections}"] = await echo(target, connections)
    for name, target in in_turn() if "open_close" in cfg.cases else []:
        results[name]["open_close"] = await open_close(target)
    # One server at a time: 10,000 connections to each at once would need twice the file descriptors.
    for name, target in in_turn() if "fanout" in cfg.cases else []:
        counter, clients = Deliveries(), list[WsClient]()
        try:
            for size in sorted(cfg.fanout_sizes):
                results[name][f"fanout_{size}"] = await fanout(target, clients, size, counter)
        finally:
            await close_all(clients, settle=cfg.settle_seconds)
    return results


async def hold(port: int, count: int, sources: list[str]) -> None:
    """The scale case's clients: open *count*, report, then answer ``status``, ``arm``, ``wait DEADLINE SETTLE``
    lines on stdin with JSON lines on stdout, until ``exit``."""
    received: Counter[WsClient] = Counter()
    first_at: dict[WsClient, float] = {}
    waiting, all_received, errors, clients = 0, asyncio.Event(), Counter[str](), list[WsClient]()

    def on_message(client: WsClient, opcode: int, payload: bytes) -> None:
        nonlocal waiting
        received[client] += opcode == OP_TEXT
        if opcode == OP_TEXT and received[client] == 1:
            first_at[client], waiting = time.monotonic(), waiting - 1
            if waiting == 0:
                all_received.set()

    def emit(event: str, **fields: Any) -> None:
        still = sum(not c.closed.done() for c in clients)
        fields |= {"event": event, "open": still, "lost": len(clients) - still, "pings": sum(c.pings for c in clients)}
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    started = time.monotonic()
    clients = await connect_many(port, count, sources=sources, concurrency=64, on_message=on_message, errors=errors)
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


def main(argv: list[str] | None = None) -> int:
    """Run one session and print ``{"results": {name: {case: figures}}}`` as JSON on stdout (or ``--hold``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--hold"]:
        run_loop(hold(int(argv[1]), int(argv[2]), argv[3].split(",")), uvloop_available())
        return 0
    parser = argparse.ArgumentParser(description="wsframe benchmark load generator (one session).")
    parser.add_argument("--target", action="append", required=True, help="NAME:PORT:PID; repeat")
    parser.add_argument("--first", type=int, default=0, help="index of the target that goes first")
    parser.add_argument("--config", default="{}", help="JSON object of benchmarks.cases.Config fields")
    parser.add_argument("--uvloop", action="store_true", help="use uvloop's event loop")
    args = parser.parse_args(argv)
    cfg, targets = Config(**json.loads(args.config)), [target.split(":") for target in args.target]
    raise_file_limit(max([cfg.idle_connections, *cfg.fanout_sizes]) + 200)
    session = run_session(cfg, [(name, int(port), int(pid)) for name, port, pid in targets], args.first)
    json.dump({"results": run_loop(session, args.uvloop)}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
