"""The app the metrics functional tests run under gunicorn and ``wsframe run``; it serves ``/metrics``.

``METRICS_REDIS`` in the environment picks the Redis backend (a URL); unset, the default applies.

- ``echo/``: accepts clients without an Origin or from ``http://good.example``. Answers
  ``node`` with ``<node id>:<worker pid>``, ``flood`` with a 16 MiB message and a second
  one right behind it (past the 1 MiB send buffer bound: the client is closed with 1013 as a
  slow consumer), anything else with itself. One reply per message otherwise.
- ``GET pid/``: ``{"pid"}`` of the worker that answered.
"""

from __future__ import annotations

import os

from aiohttp import web

from wsframe import GenericWebsocket, create_app
from wsframe.registry import get_registry

__all__ = ["app", "ALLOWED_ORIGIN", "FLOOD_BYTES", "OUTBOUND_LIMIT"]

ALLOWED_ORIGIN = "http://good.example"
OUTBOUND_LIMIT = 1 << 20
FLOOD_BYTES = 16 << 20
"""Bigger than what the kernel can take at once (its send buffer is at most 4 MiB here)."""


class Echo(GenericWebsocket):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, data: str) -> None:
        if data == "node":
            await self.send(f"{get_registry().node_id}:{os.getpid()}")
        elif data == "flood":
            await self.send("f" * FLOOD_BYTES)
            await self.send("too much")  # raises ConnectionClosed(1013): the receive loop ends
        else:
            await self.send(data)


async def pid(request: web.Request) -> web.Response:
    return web.json_response({"pid": os.getpid()})


app = create_app(
    {"echo/": Echo, "pid/": pid},
    redis=os.environ.get("METRICS_REDIS") or None,
    allowed_origins=[ALLOWED_ORIGIN],
    max_outbound_buffer=OUTBOUND_LIMIT,
    metrics=True,
)
