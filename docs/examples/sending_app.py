"""The sending page's examples: what send() makes of each type, and closing by id."""

import dataclasses
import datetime

from aiohttp import web

from wsframe import GenericWebsocket, close_websocket_connection, create_app, send_message_to_websocket


# --8<-- [start:encodings]
@dataclasses.dataclass
class Book:
    title: str
    year: int


class ShowcaseWebsocket(GenericWebsocket):
    async def connect(self):
        await self.accept()
        await self.send("plain text")  # text frame, as-is
        await self.send(b"\x89PNG")  # binary frame
        await self.send({"detail": "ok"})  # text frame: {"detail":"ok"}
        await self.send(Book("Dune", 1965))  # text frame: {"title":"Dune","year":1965}
        await self.send(datetime.date(1965, 8, 1))  # text frame: "1965-08-01"
        await self.send(None)  # text frame: null


# --8<-- [end:encodings]


# --8<-- [start:by-id]
class ReaderWebsocket(GenericWebsocket):
    async def connect(self):
        await self.accept()
        await self.send({"your_id": self.connection_id})  # a real app stores it (database, cache)


async def push(request: web.Request) -> web.Response:
    await send_message_to_websocket(connection_id=request.match_info["connection_id"], data=await request.json())
    return web.json_response({"sent": True})


async def kick(request: web.Request) -> web.Response:
    await close_websocket_connection(request.match_info["connection_id"], code=4008, reason="kicked")
    return web.json_response({"closed": True})


urls = {
    "ws/showcase/": ShowcaseWebsocket,
    "ws/reader/": ReaderWebsocket,
    "push/<connection_id>/": push,
    "kick/<connection_id>/": kick,
}
# --8<-- [end:by-id]


def make_app():
    return create_app(urls)
