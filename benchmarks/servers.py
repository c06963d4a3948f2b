"""The two servers under test: a wsframe app and the same behaviour hand-written on raw aiohttp.

Both serve the same two URLs:

- ``/ws/``: a websocket that echoes every message back as it came (text as text,
  binary as binary);
- ``POST /fanout/``: sends one 64-byte text message to every open websocket
  and answers ``{"sent": n, "seconds": s}`` once the last one is handed to its
  transport (``?via=id``: one send per connection id, for wsframe; raw aiohttp
  always loops over ``send_str``).

Both use the same websocket settings (heartbeat 25 s, the wsframe default;
1 MiB message limit), the same ``web.run_app`` with logging at WARNING (so no
access log lines), and uvloop when it is installed and asked for.

wsframe runs through its own command line, as a user would::

    python -m wsframe run benchmarks.servers:wsframe_app --port 8001 --log-level warning --uvloop

and the raw server through this module::

    python -m benchmarks.servers --port 8002 --uvloop
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

__all__ = ["FANOUT_MESSAGE", "GROUP", "HEARTBEAT", "MAX_MESSAGE_SIZE", "raw_app", "wsframe_app", "main"]

FANOUT_MESSAGE = "f" * 64
"""The 64-byte text message the fan-out case delivers to every connection."""

HEARTBEAT = 25.0
"""Ping interval of both servers: wsframe's default, given to raw aiohttp explicitly so both do the same work."""

MAX_MESSAGE_SIZE = 1024 * 1024
"""Message size limit of both servers (wsframe's default)."""

GROUP = "everyone"
"""The group every wsframe benchmark connection joins."""


def wsframe_app() -> web.Application:
    """Return the wsframe server: an echo ``GenericWebsocket`` and a fan-out handler.

    Every connection joins one group. ``POST /fanout/`` sends with
    :func:`wsframe.send_message_to_group`, the fastest public way to reach many
    connections (framed once); ``POST /fanout/?via=id`` loops over
    :func:`wsframe.group_members` calling :func:`wsframe.send_message_to_websocket`
    for each, the way an app without groups would.
    """
    from wsframe import GenericWebsocket, create_app, group_members, send_message_to_group, send_message_to_websocket

    class EchoWebsocket(GenericWebsocket):
        async def connect(self, **path_variables: Any) -> None:
            await self.accept()
            await self.join_group(GROUP)

        async def receive(self, data: str | bytes) -> None:
            await self.send(data)

    async def fanout(request: web.Request) -> web.Response:
        started = time.perf_counter()
        if request.query.get("via") == "id":
            ids = await group_members(GROUP)
            for connection_id in ids:
                await send_message_to_websocket(connection_id, FANOUT_MESSAGE)
            sent = len(ids)
        else:
            sent = len(await group_members(GROUP))
            started = time.perf_counter()  # counting members is not part of the group send
            await send_message_to_group(GROUP, FANOUT_MESSAGE)
        return web.json_response({"sent": sent, "seconds": time.perf_counter() - started})

    return create_app({"ws/": EchoWebsocket, "fanout/": fanout})


def raw_app() -> web.Application:
    """Return the raw aiohttp server: what someone would write by hand with ``web.WebSocketResponse``."""
    clients: set[web.WebSocketResponse] = set()

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_MESSAGE_SIZE)
        await ws.prepare(request)
        clients.add(ws)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
        finally:
            clients.discard(ws)
        return ws

    async def fanout(request: web.Request) -> web.Response:
        started = time.perf_counter()
        targets = list(clients)
        for ws in targets:
            await ws.send_str(FANOUT_MESSAGE)
        return web.json_response({"sent": len(targets), "seconds": time.perf_counter() - started})

    app = web.Application()
    app.router.add_get("/ws/", echo)
    app.router.add_post("/fanout/", fanout)
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the raw aiohttp app until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="The raw aiohttp benchmark server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true", help="use uvloop's event loop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.uvloop:
        import uvloop

        uvloop.install()
    web.run_app(raw_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
