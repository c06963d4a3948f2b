"""Echo: n connections each keep one 64-byte text message in flight (send, wait for the echo, send again):
round trips per second and per server CPU-second, p50/p99 latency. Also the warm-up of every session."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from ..client import OP_TEXT, WsClient, client_frame, connect_many
from ..harness import CpuMeter, percentile
from . import Config, close_all

__all__ = ["ECHO_PAYLOAD", "echo", "warm_up"]

ECHO_PAYLOAD = b"e" * 64


async def warm_up(cfg: Config) -> None:
    """Echo briefly over 20 connections, so that first-use costs are not in any figure."""
    await echo(dataclasses.replace(cfg, warmup_seconds=0.1, echo_seconds=0.2), 20)


async def echo(cfg: Config, connections: int) -> dict[str, float]:
    """Closed-loop echo over *connections*; raises RuntimeError when a reply is wrong or none arrives."""
    frame = client_frame(OP_TEXT, ECHO_PAYLOAD)
    latencies: list[int] = []
    record, running, recording, wrong, clock = latencies.append, True, False, 0, time.perf_counter_ns

    def on_message(client: WsClient, opcode: int, payload: bytes) -> None:
        nonlocal wrong
        now = clock()
        wrong += payload != ECHO_PAYLOAD
        if recording:
            record(now - client.sent_at)
        if running:
            client.sent_at = now
            client.send(frame)

    clients = await connect_many(cfg.port, connections, on_message=on_message)
    meter = CpuMeter(server_cpu=[cfg.server_pid])
    for client in clients:
        client.sent_at = clock()
        client.send(frame)
    await asyncio.sleep(cfg.warmup_seconds)
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
    p50, p99 = (percentile(latencies, fraction) / 1e6 for fraction in (0.5, 0.99))
    per_cpu = rate / cpu["server_cpu"] if cpu["server_cpu"] else 0.0
    return {"msgs_per_s": rate, "msgs_per_cpu_s": per_cpu, "p50_ms": p50, "p99_ms": p99, **cpu}
