"""The app the metrics functional tests run under gunicorn and ``wsframe run``; it serves ``/metrics``.

``METRICS_REDIS`` in the environment picks the Redis backend (a URL); unset, the default applies.

- ``echo/``: accepts clients without an Origin or from ``http://good.example``. Answers
  ``node`` with ``<node id>:<worker pid>``, ``flood`` with 1 MiB messages, one after another
  without waiting, until the 1 MiB send buffer bound closes the client with 1013 as a slow
  consumer (a client that stops reading fills the kernel's buffers, then wsframe's), anything
  else with itself. One reply per message otherwise.
- ``GET pid/``: ``{"pid"}`` of the worker that answered.
"""

from __future__ import annotations

import os

from aiohttp import web

from wsframe import GenericWebsocket, create_app
from wsframe.registry import get_registry

__all__ = ["app", "ALLOWED_ORIGIN", "CLOSE_TIMEOUT", "FLOOD_CHUNK", "FLOOD_MAX", "FLOOD_UNSTOPPED", "OUTBOUND_LIMIT"]

ALLOWED_ORIGIN = "http://good.example"
OUTBOUND_LIMIT = 1 << 20
FLOOD_CHUNK = 1 << 20
FLOOD_MAX = 128
"""128 MiB in all: more than the kernel holds for a client that stopped reading (its buffers
for one connection are at most 4 MiB to send and 32 MiB to receive here), so the bound must apply."""
FLOOD_UNSTOPPED = "the flood was not stopped"
"""Sent after FLOOD_MAX messages if the buffer bound never closed the connection."""
CLOSE_TIMEOUT = 120.0
"""How long a closing slow consumer may sit without reading before it is cut off: the test
reads the flood only after /metrics shows the 1013 decision, which takes a few seconds."""


class Echo(GenericWebsocket):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, data: str) -> None:
        if data == "node":
            await self.send(f"{get_registry().node_id}:{os.getpid()}")
        elif data == "flood":
            chunk = "f" * FLOOD_CHUNK
            for _ in range(FLOOD_MAX):
                await self.send(chunk)  # raises ConnectionClosed(1013) past the bound: the receive loop ends
            await self.send(FLOOD_UNSTOPPED)
        else:
            await self.send(data)


async def pid(request: web.Request) -> web.Response:
    return web.json_response({"pid": os.getpid()})


app = create_app(
    {"echo/": Echo, "pid/": pid},
    redis=os.environ.get("METRICS_REDIS") or None,
    allowed_origins=[ALLOWED_ORIGIN],
    max_outbound_buffer=OUTBOUND_LIMIT,
    close_timeout=CLOSE_TIMEOUT,
    metrics=True,
)
