"""The app the cross-worker benchmark serves under gunicorn: ``benchmarks.cross_worker_app:make_app``.

``BENCH_BACKEND`` picks the backend: a ``redis://`` URL (targeted delivery,
wsframe's design), ``fanout:redis://...`` (every send published on one channel
that every worker reads: the Panther / python-socketio design), or empty for
the default (local IPC under gunicorn ``--preload``).

URLs:

- ``/ws/``: a websocket that, once accepted, sends ``{"id": connection_id, "pid": pid}`` and
  then only receives what others send to it;
- ``GET /pid/``: this worker's pid and node id;
- ``POST /paced/`` ``{"targets": [...], "count": n, "rate": r}``: sends *n* messages to
  the targets in turn, the i-th due at start + i/r on the event loop's clock (a late sender
  catches up, so the time sends take does not lower the rate); every message is the
  ``CLOCK_MONOTONIC`` nanoseconds at its send call. Answers once all are sent, with the achieved
  rate and how far behind schedule the sends started;
- ``POST /blast/`` ``{"targets": [...], "count": n, "concurrency": c}``: the same *n* sends as
  fast as *c* concurrent senders go (throughput).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["make_app", "paced_sends"]

LEAD = 0.005
"""Seconds between the request and the first scheduled send, so the first is not already late."""
SLACK = 0.0005
"""A send goes once it is due within this many seconds. uvloop's clock counts whole milliseconds
and rounds a sleep to them, so waiting out less than half of one would not sleep at all: the
sender would spin, burning the core every worker shares."""


async def paced_sends(
    send: Callable[[str, str], Awaitable[object]], targets: list[str], count: int, rate: float
) -> dict[str, Any]:
    """Call ``send(target, text)`` *count* times at *rate* per second; return the pacing figures.

    The i-th send is due at ``start + i / rate`` on the loop's clock (uvloop's
    has millisecond resolution, asyncio's is ``time.monotonic``), whatever the
    sends before it took: when the sender is behind, the sends already due go
    back to back until it has caught up, so the rate holds on average and the
    achieved rate says whether it did. ``late_*`` is how far behind schedule
    the sends started (down to -:data:`SLACK`: a send may go half a
    millisecond early). A send that raises is counted in ``errors``.

    Sends go one at a time rather than each in a task of its own: after a
    stall (another process had the core) a task per send would release a burst
    of concurrent publishes, and beyond 100 in flight redis-py's connection
    pool raises instead of waiting.
    """
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    late: list[float] = []
    errors: list[str] = []
    first_ns = last_ns = 0
    start = loop.time() + LEAD
    for i in range(count):
        due = start + i * interval
        now = loop.time()
        while due - now > SLACK:
            await asyncio.sleep(due - now)
            now = loop.time()
        late.append(now - due)
        last_ns = time.monotonic_ns()
        first_ns = first_ns or last_ns
        try:
            await send(targets[i % len(targets)], str(last_ns))
        except Exception as exc:
            errors.append(repr(exc))
    late.sort()
    span = (last_ns - first_ns) / 1e9
    return {
        "pid": os.getpid(),
        "sent": count - len(errors),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "achieved_rate": (count - 1) / span if span else 0.0,
        "late_p50_ms": late[len(late) // 2] * 1000 if late else 0.0,
        "late_p99_ms": late[min(len(late) - 1, int(0.99 * len(late)))] * 1000 if late else 0.0,
        "late_max_ms": late[-1] * 1000 if late else 0.0,
    }


async def make_app() -> web.Application:
    """The app gunicorn serves (see the module docstring); raises ConfigurationError for a bad ``BENCH_BACKEND``."""
    from wsframe import GenericWebsocket, create_app, send_message_to_websocket
    from wsframe.backends import RedisBackend
    from wsframe.registry import REGISTRY_KEY

    class FanoutRedisBackend(RedisBackend):
        """Every node listens on one channel; every send goes to all of them (the design wsframe avoids)."""

        def channel_for(self, node_id: str) -> str:
            return f"{self.prefix}all"

    class Hello(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.send({"id": self.connection_id, "pid": os.getpid()})

    async def paced(request: web.Request) -> web.Response:
        spec = await request.json()
        result = await paced_sends(send_message_to_websocket, spec["targets"], spec["count"], spec["rate"])
        return web.json_response(result)

    async def blast(request: web.Request) -> web.Response:
        spec = await request.json()
        targets: list[str] = spec["targets"]
        cursor = iter(range(spec["count"]))

        async def one_sender() -> None:
            for n in cursor:
                await send_message_to_websocket(targets[n % len(targets)], str(time.monotonic_ns()))

        started = time.monotonic()
        await asyncio.gather(*(one_sender() for _ in range(spec["concurrency"])))
        return web.json_response({"pid": os.getpid(), "seconds": time.monotonic() - started})

    async def pid(request: web.Request) -> web.Response:
        registry = request.app[REGISTRY_KEY]
        return web.json_response({"pid": os.getpid(), "node": registry.node_id})

    spec = os.environ.get("BENCH_BACKEND", "")
    urls = {"ws/": Hello, "paced/": paced, "blast/": blast, "pid/": pid}
    if spec.startswith("fanout:"):
        return create_app(urls, backend=FanoutRedisBackend(spec.removeprefix("fanout:")), heartbeat=0)
    return create_app(urls, backend=spec or None, heartbeat=0)
