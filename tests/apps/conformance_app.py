"""The app the protocol-conformance suite and the fuzz tests run against.

Run it with ``python -m wsframe run tests.apps.conformance_app:app --port N``
from the repository root (``:deflate_app`` for the same routes with
``create_app(compression=True)``). Every setting is the default (1 MiB messages,
compression off) except where a handler class says otherwise, so the suite
checks what users get out of the box.

Routes:

- ``ws/echo/``: echoes every message (text as text, binary as binary).
- ``ws/deflate/``: the same with ``compression = True`` (permessage-deflate).
- ``ws/tracked/``: sends its connection id first, then echoes; the code its
  ``disconnect()`` received is at ``GET /disconnects/<connection_id>/``.
- ``ws/<user_id>/<room_id>/``: typed path variables (``user_id: int``); sends
  them back as JSON first, then echoes.
- ``ws/fail-connect/``: ``connect()`` raises, the one route where HTTP 500 is expected.
- ``GET /registry/``: ``{"connections": n}``, the size of the process registry.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from wsframe import create_app
from wsframe.registry import REGISTRY_KEY
from wsframe.websocket import GenericWebsocket

__all__ = ["app", "deflate_app", "build_app", "DISCONNECTS_KEY", "LEAK_MARKER"]

DISCONNECTS_KEY = web.AppKey("conformance_disconnects", dict[str, int])

LEAK_MARKER = "conformance-secret-detail"
"""Text of the exception ``ws/fail-connect/`` raises; it must never reach a client."""

_MAX_REMEMBERED = 10_000


class EchoWebsocket(GenericWebsocket):
    """Echoes every message back as it came."""

    async def receive(self, data: str | bytes) -> None:
        await self.send(data)


class DeflateEchoWebsocket(EchoWebsocket):
    """Echo with permessage-deflate offered."""

    compression = True


class TrackedEchoWebsocket(EchoWebsocket):
    """Echo that tells the client its id and records the code ``disconnect()`` got."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(self.connection_id)

    async def disconnect(self, code: int) -> None:
        remembered = self.app[DISCONNECTS_KEY]
        if len(remembered) >= _MAX_REMEMBERED:
            remembered.clear()
        remembered[self.connection_id] = code


class RoomWebsocket(EchoWebsocket):
    """Typed path variables: answers with what it was given, then echoes."""

    async def connect(self, user_id: int, room_id: str) -> None:
        await self.accept()
        await self.send({"user_id": user_id, "room_id": room_id})


class FailingConnectWebsocket(GenericWebsocket):
    """``connect()`` raises before accept: the client must get a bare 500."""

    async def connect(self) -> None:
        raise RuntimeError(LEAK_MARKER)


async def registry_size(request: web.Request) -> web.Response:
    """How many connections the process registry holds right now."""
    return web.json_response({"connections": len(request.app[REGISTRY_KEY].connections)})


async def disconnect_code(request: web.Request) -> web.Response:
    """The code ``TrackedEchoWebsocket.disconnect()`` received for a connection, 404 until it ran."""
    code = request.app[DISCONNECTS_KEY].get(request.match_info["connection_id"])
    if code is None:
        return web.json_response({"detail": "Not found"}, status=404)
    return web.json_response({"code": code})


urls: dict[str, Any] = {
    "ws/echo/": EchoWebsocket,
    "ws/deflate/": DeflateEchoWebsocket,
    "ws/tracked/": TrackedEchoWebsocket,
    "ws/fail-connect/": FailingConnectWebsocket,
    "ws/<user_id>/<room_id>/": RoomWebsocket,
    "registry/": registry_size,
    "disconnects/<connection_id>/": disconnect_code,
}


def build_app(**settings: Any) -> web.Application:
    """The conformance app with *settings* given to ``create_app``."""
    application = create_app(urls, **settings)
    application[DISCONNECTS_KEY] = {}
    return application


app = build_app()

deflate_app = build_app(compression=True)
"""The same routes with ``create_app(compression=True)``: every handler offers permessage-deflate."""
