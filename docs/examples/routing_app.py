"""The routing page's url table: path variables of several types, a nested prefix, HTTP next to websockets."""

import enum
import uuid

from aiohttp import web

from wsframe import GenericWebsocket, create_app


# --8<-- [start:handlers]
class Shelf(enum.Enum):
    FICTION = "fiction"
    SCIENCE = "science"


class RoomWebsocket(GenericWebsocket):
    async def connect(self, user_id: int, room_id: str):
        await self.accept()
        await self.send({"user_id": user_id, "room_id": room_id})


class LobbyWebsocket(GenericWebsocket):
    async def connect(self, user_id: int):
        await self.accept()
        await self.send({"lobby_of": user_id})


class OrderWebsocket(GenericWebsocket):
    async def connect(self, order_id: uuid.UUID):
        await self.accept()
        await self.send({"order": order_id.hex})


class ShelfWebsocket(GenericWebsocket):
    async def connect(self, shelf: Shelf, signed: bool):
        await self.accept()
        await self.send({"shelf": shelf.value, "signed": signed})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


# --8<-- [end:handlers]


# --8<-- [start:urls]
urls = {
    "ws/<user_id>/lobby/": LobbyWebsocket,  # a static segment beats <room_id> below
    "ws/<user_id>/<room_id>/": RoomWebsocket,  # connect(self, user_id: int, room_id: str)
    "ws/orders/<order_id>/": OrderWebsocket,  # 'orders' beats <user_id>: statics first
    "ws/shelves/<shelf>/<signed>/": ShelfWebsocket,  # Enum and bool
    "api/": {  # a nested table is a prefix
        "health/": health,  # plain aiohttp handlers live in the same table
    },
}
app = create_app(urls)
# --8<-- [end:urls]
