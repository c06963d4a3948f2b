"""Fan-out: one ``POST /fanout/`` makes the server send 64 bytes to every open connection; the time until the last
one received it, for the server's fastest way (``ms``; wsframe: a group send) and one send per id (``ms_per_id``)."""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

import aiohttp

from ..client import WsClient, connect_many
from ..harness import cpu_seconds, post
from ..servers import FANOUT_MESSAGE
from . import Config

__all__ = ["Deliveries", "fanout"]


class Deliveries:
    """Counts the deliveries of one fan-out and notes when the last one arrived."""

    def __init__(self) -> None:
        self.remaining = self.wrong = 0
        self.last_at = 0.0
        self.done: asyncio.Future[None] | None = None

    def on_message(self, client: WsClient, opcode: int, payload: bytes) -> None:
        if payload != FANOUT_MESSAGE.encode():
            self.wrong += 1
            return
        self.remaining -= 1
        if self.remaining == 0:
            self.last_at = time.perf_counter()
            if self.done is not None and not self.done.done():
                self.done.set_result(None)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def fanout(cfg: Config, clients: list[WsClient], size: int, counter: Deliveries) -> dict[str, Any]:
    """Grow *clients* to *size* connections, then time the fan-outs of both kinds. Raises RuntimeError when a connection
    gets nothing within 30 s, the server sent to another number of connections, or a delivery was not the message
    sent."""
    if len(clients) < size:
        clients += await connect_many(cfg.port, size - len(clients), on_message=counter.on_message)
    await asyncio.sleep(cfg.settle_seconds)
    # One keep-alive HTTP connection for every trigger, as a client of the app would keep.
    async with aiohttp.ClientSession(f"http://127.0.0.1:{cfg.port}", connector=aiohttp.TCPConnector(limit=1)) as http:
        times, server_times, cpu = await _time_fanouts(cfg, http, "/fanout/", size, counter)
        results: dict[str, Any] = {"ms": times, "server_ms": server_times, **cpu}
        times, server_times, _ = await _time_fanouts(cfg, http, "/fanout/?via=id", size, counter)
        results |= {"ms_per_id": times, "server_ms_per_id": server_times}
    if counter.wrong:
        raise RuntimeError(f"fanout_{size}: {counter.wrong} deliveries were not the message sent")
    return results


async def _time_fanouts(
    cfg: Config, http: aiohttp.ClientSession, path: str, size: int, counter: Deliveries
) -> tuple[list[float], list[float], dict[str, float]]:
    loop = asyncio.get_running_loop()
    times, server_times = list[float](), list[float]()
    # CPU is summed over all counted fan-outs: one is too short for /proc's 10 ms ticks.
    wall = own = server = 0.0
    for trigger in range(cfg.fanout_triggers + 1):
        counter.remaining = size
        counter.done = done = loop.create_future()
        own_before, server_before = _own_cpu(), cpu_seconds(cfg.server_pid)
        started = time.perf_counter()
        response_task = asyncio.ensure_future(post(http, path))
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout=30)
        except TimeoutError:
            response_task.cancel()
            raise RuntimeError(
                f"fanout_{size}: {counter.remaining} of {size} connections got nothing in 30 s"
            ) from None
        response = await response_task
        if response["sent"] != size:
            raise RuntimeError(f"fanout_{size}: the server sent to {response['sent']} connections, not {size}")
        if trigger == 0:
            continue  # warm-up
        wall += counter.last_at - started
        own += _own_cpu() - own_before
        server += cpu_seconds(cfg.server_pid) - server_before
        times.append((counter.last_at - started) * 1000)
        server_times.append(response["seconds"] * 1000)
        await asyncio.sleep(0.1)
    cpu = {"loadgen_cpu": own / wall if wall else 0.0, "server_cpu": server / wall if wall else 0.0}
    return times, server_times, cpu
