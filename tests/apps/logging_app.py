"""The app the logging functional tests serve under gunicorn: refusals to provoke, and its own logging or none.

``/ws/`` allows only the origin ``https://app.example`` and one connection per address,
so a test can provoke a 403 and a 429; ``/pid/`` answers the worker's pid. With
``LOGGING_APP_OWN_FORMAT`` set, the app configures logging itself at import (as an
app that chose its own format does), with that value as the format.
"""

from __future__ import annotations

import logging
import os

from aiohttp import web

from wsframe import GenericWebsocket, create_app

__all__ = ["app"]


class OnePerAddress(GenericWebsocket):
    max_connections_per_ip = 1

    async def connect(self) -> None:
        await self.accept()


async def pid(request: web.Request) -> web.Response:
    return web.json_response({"pid": os.getpid()})


if own_format := os.environ.get("LOGGING_APP_OWN_FORMAT"):
    logging.basicConfig(level=logging.INFO, format=own_format)

app = create_app({"ws/": OnePerAddress}, allowed_origins=["https://app.example"])
app.router.add_get("/pid/", pid)
