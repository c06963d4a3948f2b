"""Connection open + close: 16 clients in a loop, each doing a TCP connect, the handshake, a close frame,
waiting for the server's close frame, then dropping the socket."""

from __future__ import annotations

import asyncio

from ..client import CLOSE_FRAME, SOURCES, connect
from ..harness import CpuMeter
from . import Config

__all__ = ["open_close"]


async def open_close(cfg: Config) -> dict[str, float]:
    """Connections opened and closed per second (and per server CPU-second); RuntimeError when none completed."""
    counting, stop, completed, attempt = False, False, 0, 0

    async def worker() -> None:
        nonlocal completed, attempt
        while not stop:
            attempt += 1
            client = await connect(cfg.port, source=SOURCES[attempt % len(SOURCES)])
            client.send(CLOSE_FRAME)
            await client.close_received
            client.close()
            completed += counting

    workers = [asyncio.ensure_future(worker()) for _ in range(16)]
    meter = CpuMeter(server_cpu=[cfg.server_pid])
    await asyncio.sleep(cfg.warmup_seconds)
    counting = True
    meter.start()
    await asyncio.sleep(cfg.open_close_seconds)
    counting = False
    cpu = meter.stop()
    stop = True
    await asyncio.gather(*workers)
    await asyncio.sleep(cfg.settle_seconds)
    if not completed:
        raise RuntimeError(f"open_close: no connection completed in {cfg.open_close_seconds} s")
    rate = completed / cfg.open_close_seconds
    return {"per_s": rate, "per_cpu_s": rate / cpu["server_cpu"] if cpu["server_cpu"] else 0.0, **cpu}
