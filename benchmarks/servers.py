"""The servers under test: wsframe as a user gets it, and the same behaviour hand-written on raw aiohttp.

Both serve ``/ws/`` (echo every message back as it came) and ``POST /fanout/`` (send one 64-byte text
message to every open websocket; answer ``{"sent": n, "seconds": s}`` once the last one is handed to its
transport; ``?via=id``: one send per connection id, for wsframe). Each runs with its own defaults:
wsframe's (heartbeat 25 s, 1 MiB message limit) and aiohttp's (no heartbeat, 4 MiB); ``raw-matched`` is
raw aiohttp given wsframe's heartbeat and limit, a like-for-like row beside the headline one. All run
``web.run_app`` with logging at WARNING, and uvloop when asked (see :func:`command`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from aiohttp import WSMsgType, web

__all__ = ["FANOUT_MESSAGE", "GROUP", "HEARTBEAT", "KINDS", "MAX_MESSAGE_SIZE", "command", "label", "main"]
__all__ += ["raw_app", "wsframe_app"]

FANOUT_MESSAGE = "f" * 64
"""The 64-byte text message the fan-out case delivers to every connection."""
HEARTBEAT = 25.0
"""wsframe's default ping interval: given to the ``raw-matched`` server (and the peers)."""
MAX_MESSAGE_SIZE = 1024 * 1024
"""wsframe's default message size limit: given to the ``raw-matched`` server (and the peers)."""
GROUP = "everyone"
"""The group every wsframe benchmark connection joins."""
KINDS = ("raw", "wsframe")
"""The two servers every run measures; ``raw-matched`` and the peers come after them."""
LABELS = {"raw": "raw aiohttp", "wsframe": "wsframe", "raw-matched": "raw aiohttp, wsframe's heartbeat"}


def wsframe_app() -> web.Application:
    """The wsframe server: an echo ``GenericWebsocket`` in one group, and a fan-out handler.

    ``POST /fanout/`` sends with :func:`wsframe.send_message_to_group`, the fastest public way to reach
    many connections (framed once); ``?via=id`` loops over :func:`wsframe.group_members` calling
    :func:`wsframe.send_message_to_websocket` for each, the way an app without groups would.
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


def raw_app(*, matched: bool = False) -> web.Application:
    """The raw aiohttp server, as written by hand with ``web.WebSocketResponse``: aiohttp's defaults,
    or wsframe's heartbeat and message limit when *matched*."""
    clients: set[web.WebSocketResponse] = set()
    settings: dict[str, Any] = {"heartbeat": HEARTBEAT, "max_msg_size": MAX_MESSAGE_SIZE} if matched else {}

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(**settings)
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


def label(kind: str) -> str:
    """How a server is named in tables and charts."""
    from . import peers

    return LABELS.get(kind) or peers.label(kind)


def command(kind: str, port: int, use_uvloop: bool) -> list[str]:
    """The command line serving *kind* (``raw``, ``wsframe``, ``raw-matched`` or a peer) on 127.0.0.1:*port*."""
    if kind == "wsframe":
        line = [sys.executable, "-m", "wsframe", "run", "benchmarks.servers:wsframe_app", "--host", "127.0.0.1"]
        return [*line, "--port", str(port), "--log-level", "warning", "--loop", "uvloop" if use_uvloop else "asyncio"]
    if kind in ("raw", "raw-matched"):
        line = [sys.executable, "-m", "benchmarks.servers", "--port", str(port)]
        line += ["--matched"] if kind == "raw-matched" else []
    else:
        line = [sys.executable, "-m", "benchmarks.peers", kind, "--port", str(port)]
    return [*line, "--uvloop"] if use_uvloop else line


def main(argv: list[str] | None = None) -> None:
    """Serve the raw aiohttp app until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="The raw aiohttp benchmark server.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--matched", action="store_true", help="wsframe's heartbeat and message limit")
    parser.add_argument("--uvloop", action="store_true", help="use uvloop's event loop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.uvloop:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        uvloop.install()
    web.run_app(raw_app(matched=args.matched), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
