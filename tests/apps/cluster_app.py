"""The app the cluster functional tests run under ``gunicorn -k aiohttp.GunicornWebWorker``.

``CLUSTER_BACKEND`` in the environment picks the backend (a URL such as
``redis://127.0.0.1:6390/0``); unset, the default applies (IPC under gunicorn).

- ``ws/``: accepts, then sends ``{"id": <connection id>, "pid": <worker pid>}``.
- ``POST send/<id>/``: sends the request body to that id (``?binary=1`` as bytes)
  and answers ``{"pid", "elapsed"}``; 503 with the error when the backend is down;
  with ``?remote=1`` answers 409 instead of sending when this worker owns the id,
  so a test can insist on a cross-worker hop.
- ``POST close/<id>/?code=&reason=``: closes that id, same answers.
- ``GET pid/``: ``{"pid"}`` of the worker that answered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from wsframe import BackendUnavailableError, GenericWebsocket, close_websocket_connection, create_app
from wsframe import send_message_to_websocket as send_message
from wsframe.registry import REGISTRY_KEY

__all__ = ["app"]


class Hello(GenericWebsocket):
    """Tells the client its id and the pid of the worker that owns it."""

    async def connect(self) -> None:
        await self.accept()
        await self.send({"id": self.connection_id, "pid": os.getpid()})


async def _by_id(request: web.Request, action: Callable[[str], Awaitable[None]]) -> web.Response:
    connection_id = request.match_info["connection_id"]
    if request.query.get("remote") == "1" and connection_id in request.app[REGISTRY_KEY].connections:
        return web.json_response({"pid": os.getpid(), "owner": True}, status=409)
    started = time.monotonic()
    try:
        await action(connection_id)
    except BackendUnavailableError as exc:
        elapsed = time.monotonic() - started
        return web.json_response({"pid": os.getpid(), "error": str(exc), "elapsed": elapsed}, status=503)
    return web.json_response({"pid": os.getpid(), "elapsed": time.monotonic() - started})


async def send(request: web.Request) -> web.Response:
    body = await request.read()
    data: str | bytes = body if request.query.get("binary") == "1" else body.decode()
    return await _by_id(request, lambda connection_id: send_message(connection_id, data))


async def close(request: web.Request) -> web.Response:
    code = int(request.query.get("code", "1000"))
    reason = request.query.get("reason", "")
    return await _by_id(request, lambda connection_id: close_websocket_connection(connection_id, code, reason))


async def pid(request: web.Request) -> web.Response:
    return web.json_response({"pid": os.getpid()})


urls = {
    "ws/": Hello,
    "send/<connection_id>/": send,
    "close/<connection_id>/": close,
    "pid/": pid,
}

app = create_app(urls, backend=os.environ.get("CLUSTER_BACKEND") or None, heartbeat=0)
