"""The server of the flood benchmark: an echo handler, and the same with a rate limit."""

from __future__ import annotations

from aiohttp import web

from wsframe import GenericWebsocket, create_app

__all__ = ["app", "RATE_LIMIT"]

RATE_LIMIT = 1000
"""Messages per second the limited endpoint allows one connection."""


class Echo(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        await self.send(data)


class LimitedEcho(Echo):
    rate_limit = RATE_LIMIT


def app() -> web.Application:
    return create_app({"ws/": Echo, "ws/limited/": LimitedEcho})
