"""The benchmark cases, one module each: :mod:`benchmarks.loadgen` runs memory, echo, open_close and fanout
against every server of a run with the :class:`Config` here; cross_worker, scale and flood run on their own."""

from __future__ import annotations

import asyncio
import dataclasses

from ..client import WsClient

__all__ = ["CASES", "Config", "close_all"]

CASES = ["idle_memory", "echo", "open_close", "fanout"]  # The kinds of case the load generator runs, in order.


@dataclasses.dataclass(kw_only=True)
class Config:
    """What one load-generator session measures against one server; the defaults are the full run."""

    port: int = 0
    server_pid: int = 0
    warmup_seconds: float = 0.5
    echo_seconds: float = 3.0
    echo_connections: list[int] = dataclasses.field(default_factory=lambda: [1, 100])
    open_close_seconds: float = 3.0
    idle_connections: int = 5000
    settle_seconds: float = 1.0
    fanout_sizes: list[int] = dataclasses.field(default_factory=lambda: [1000, 10000])
    fanout_triggers: int = 5
    cases: list[str] = dataclasses.field(default_factory=lambda: list(CASES))


async def close_all(clients: list[WsClient], settle: float) -> None:
    """Drop every connection, wait until each is gone, then give the server *settle* seconds to notice."""
    for client in clients:
        client.close()
    if clients:
        await asyncio.wait([client.closed for client in clients], timeout=10)
    await asyncio.sleep(settle)
