"""Echo: n connections each keep one 64-byte text message in flight (closed loop).

Send, wait for the echo, send again, for ``echo_seconds`` after ``warmup_seconds``: round trips per
second, per server CPU-second, and the p50/p99 round-trip latency. Also the warm-up of every session.
"""

from __future__ import annotations

import asyncio
import time

from ..client import OP_TEXT, WsClient, client_frame, connect_many
from ..harness import CpuMeter, percentile
from . import WS_PATH, Config, close_all, progress

__all__ = ["ECHO_PAYLOAD", "echo", "warm_up"]

ECHO_PAYLOAD = b"e" * 64


async def warm_up(cfg: Config) -> None:
    """Open, use and close a few connections so that first-use costs are not in any figure."""
    clients = await connect_many(cfg.host, cfg.port, WS_PATH, 20, sources=cfg.sources)
    frame = client_frame(OP_TEXT, ECHO_PAYLOAD)
    for _ in range(5):
        for client in clients:
            client.send(frame)
        await asyncio.sleep(0.02)
    await close_all(clients, settle=0.3)


async def echo(cfg: Config, connections: int) -> dict[str, float]:
    """Closed-loop echo over *connections*; raises RuntimeError when a reply is wrong or none arrives."""
    frame = client_frame(OP_TEXT, ECHO_PAYLOAD)
    latencies: list[int] = []
    record = latencies.append
    running = True
    recording = False
    wrong = 0
    clock = time.perf_counter_ns

    def on_message(client: WsClient, opcode: int, payload: bytes) -> None:
        nonlocal wrong
        now = clock()
        if payload != ECHO_PAYLOAD:
            wrong += 1
        if recording:
            record(now - client.sent_at)
        if running:
            client.sent_at = now
            client.send(frame)

    clients = await connect_many(cfg.host, cfg.port, WS_PATH, connections, sources=cfg.sources, on_message=on_message)
    meter = CpuMeter(server_cpu=[cfg.server_pid])
    for client in clients:
        client.sent_at = clock()
        client.send(frame)
    await asyncio.sleep(cfg.warmup_seconds)
    progress(f"echo_{connections}: measuring")
    recording = True
    meter.start()
    await asyncio.sleep(cfg.echo_seconds)
    cpu = meter.stop()
    recording = running = False
    await asyncio.sleep(0.1)  # let the last messages in flight come back before closing
    await close_all(clients, settle=0.3)
    if wrong:
        raise RuntimeError(f"echo_{connections}: {wrong} replies were not the message sent")
    if not latencies:
        raise RuntimeError(f"echo_{connections}: no reply arrived in {cfg.echo_seconds} s")
    latencies.sort()
    rate = len(latencies) / cfg.echo_seconds
    return {"msgs_per_s": rate, "msgs_per_cpu_s": rate / cpu["server_cpu"] if cpu["server_cpu"] else 0.0,
            "p50_ms": percentile(latencies, 0.50) / 1e6, "p99_ms": percentile(latencies, 0.99) / 1e6, **cpu}
