"""The benchmark cases: one module each.

The load generator (:mod:`benchmarks.loadgen`) runs :mod:`.memory`, :mod:`.echo`, :mod:`.open_close`
and :mod:`.fanout` against every server of a run in turn, with the :class:`Config` defined here;
:mod:`.cross_worker`, :mod:`.scale` and :mod:`.flood` start their own servers and clients.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys

from ..client import WsClient

__all__ = ["WS_PATH", "Config", "close_all", "progress"]

WS_PATH = "/ws/"


@dataclasses.dataclass(kw_only=True)
class Config:
    """What one load-generator session measures against one server; the defaults are the full run."""

    host: str = "127.0.0.1"
    port: int = 0
    server_pid: int = 0
    sources: list[str] = dataclasses.field(default_factory=lambda: [f"127.0.0.{i}" for i in range(2, 10)])
    """Loopback source addresses, used in turn, so 10,000+ connections never run out of ephemeral ports."""
    warmup_seconds: float = 0.5
    echo_seconds: float = 3.0
    echo_connections: list[int] = dataclasses.field(default_factory=lambda: [1, 100])
    open_close_seconds: float = 3.0
    open_close_concurrency: int = 16
    idle_connections: int = 5000
    settle_seconds: float = 1.0
    fanout_sizes: list[int] = dataclasses.field(default_factory=lambda: [1000, 10000])
    fanout_triggers: int = 5
    connect_concurrency: int = 100
    cases: list[str] = dataclasses.field(default_factory=lambda: ["idle_memory", "echo", "open_close", "fanout"])
    """Which kinds of case to run (the profiler runs one)."""
    fanout_via: list[str] = dataclasses.field(default_factory=lambda: ["fastest", "id"])
    """Fan-out kinds: ``fastest`` (wsframe: group send) and ``id`` (one send per connection id)."""


async def close_all(clients: list[WsClient], settle: float) -> None:
    """Drop every connection, wait until each is gone, then give the server *settle* seconds to notice."""
    for client in clients:
        client.close()
    if clients:
        await asyncio.wait([client.closed for client in clients], timeout=10)
    await asyncio.sleep(settle)


def progress(line: str) -> None:
    """Say on stderr what the load generator does, when ``WSFRAME_BENCH_VERBOSE`` is set.

    ``benchmarks.tools.profiling`` starts sampling when it reads a line ending in ``: measuring``.
    """
    if os.environ.get("WSFRAME_BENCH_VERBOSE"):
        print(f"loadgen: {line}", file=sys.stderr, flush=True)
