"""Optional peers on uvicorn (``pip install -e '.[peers]'``), written the way their users write them, serving what
:mod:`benchmarks.servers` serves with a 25 s ping and a 1 MiB limit: ``benchmarks.servers --peer starlette``."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
import time
import types
from importlib.metadata import version
from typing import Any

from .servers import FANOUT_MESSAGE, HEARTBEAT, MAX_MESSAGE_SIZE

__all__ = ["PEERS", "available", "describe", "label", "panther_app", "serve", "starlette_app"]

PEERS = {"starlette": ("Starlette", ("starlette", "uvicorn")), "panther": ("Panther", ("panther", "uvicorn"))}
"""Peer id -> (label, modules it needs). Order is the order of the columns."""


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available() -> list[str]:
    """The peers whose modules can all be imported here."""
    return [peer for peer, (_, modules) in PEERS.items() if all(_installed(m) for m in modules)]


def label(kind: str) -> str:
    """How a peer is named in tables and charts."""
    return PEERS[kind][0]


def describe(kind: str) -> str:
    """``Starlette 1.10.0 on uvicorn 0.54.0 (ws websockets-sansio, http httptools)`` for the results header."""
    ws = "websockets-sansio" if _installed("websockets") else "wsproto" if _installed("wsproto") else "none"
    http = "httptools" if _installed("httptools") else "h11"
    return f"{label(kind)} {version(PEERS[kind][1][0])} on uvicorn {version('uvicorn')} (ws {ws}, http {http})"


def starlette_app() -> Any:
    """The Starlette server: a websocket echo route and a fan-out POST route."""
    from starlette.applications import Starlette  # type: ignore[import-not-found,unused-ignore]
    from starlette.requests import Request  # type: ignore[import-not-found,unused-ignore]
    from starlette.responses import JSONResponse  # type: ignore[import-not-found,unused-ignore]
    from starlette.routing import Route, WebSocketRoute  # type: ignore[import-not-found,unused-ignore]
    from starlette.websockets import WebSocket  # type: ignore[import-not-found,unused-ignore]

    clients: set[WebSocket] = set()

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        clients.add(websocket)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is not None:
                    await websocket.send_text(text)
                else:
                    await websocket.send_bytes(message["bytes"])
        finally:
            clients.discard(websocket)

    async def fanout(request: Request) -> JSONResponse:
        started = time.perf_counter()
        targets = list(clients)
        for websocket in targets:
            await websocket.send_text(FANOUT_MESSAGE)
        return JSONResponse({"sent": len(targets), "seconds": time.perf_counter() - started})

    return Starlette(routes=[WebSocketRoute("/ws/", echo), Route("/fanout/", fanout, methods=["POST"])])


def panther_app(workdir: str) -> Any:
    """The Panther server: a ``GenericWebsocket`` echo and a fan-out API over Panther's connection table. Importing
    Panther creates a ``logs/`` directory in the current directory, so this moves the process to *workdir* first."""
    os.chdir(workdir)
    from panther import Panther  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from panther.app import API  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from panther.configs import config  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from panther.websocket import GenericWebsocket  # type: ignore[import-untyped,import-not-found,unused-ignore]

    for name in ("panther", "monitoring", "query"):
        logging.getLogger(name).setLevel(logging.WARNING)

    class EchoWebsocket(GenericWebsocket):  # type: ignore[misc]
        # No annotations: Panther hands connect()'s annotations to issubclass(), and under
        # `from __future__ import annotations` they are strings.
        async def connect(self, **kwargs):  # type: ignore[no-untyped-def]
            await self.accept()

        async def receive(self, data: str | bytes) -> None:
            await self.send(data)

    @API(methods=["POST"])  # type: ignore[untyped-decorator]
    async def fanout() -> dict[str, Any]:
        started = time.perf_counter()
        targets = list(config.WEBSOCKET_CONNECTIONS.connections.values())
        for connection in targets:
            await connection.send(FANOUT_MESSAGE)
        return {"sent": len(targets), "seconds": time.perf_counter() - started}

    # An empty configs module: Panther's defaults, nothing read from this one.
    configs = types.ModuleType("benchmarks_panther_configs")
    sys.modules[configs.__name__] = configs
    urls = {"ws": EchoWebsocket, "fanout": fanout}
    return Panther(os.path.join(os.getcwd(), "app"), configs=configs.__name__, urls=urls)


def serve(kind: str, port: int, use_uvloop: bool) -> None:
    """Serve peer *kind* on uvicorn at 127.0.0.1:*port* until SIGINT or SIGTERM."""
    import uvicorn  # type: ignore[import-not-found,unused-ignore]

    with tempfile.TemporaryDirectory(prefix="wsframe-bench-peer-") as workdir:
        app = starlette_app() if kind == "starlette" else panther_app(workdir)
        limits: dict[str, Any] = {"ws_ping_interval": HEARTBEAT, "ws_max_size": MAX_MESSAGE_SIZE}
        loop = "uvloop" if use_uvloop else "asyncio"
        uvicorn.run(app, host="127.0.0.1", port=port, loop=loop, log_level="warning", access_log=False, **limits)
