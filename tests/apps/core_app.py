"""The app the functional tests serve with `python -m wsframe run tests.apps.core_app:app`."""

from __future__ import annotations

from aiohttp import web

from wsframe import GenericWebsocket, create_app, send_message_to_websocket, status


class Echo(GenericWebsocket):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, data: str | bytes) -> None:
        if data == "crash":
            raise RuntimeError("handler crashed on purpose")
        if data == "close-me":
            await self.close(4004, "you asked")
            return
        await self.send(data)


class UserRoom(GenericWebsocket):
    async def connect(self, user_id: int, room_id: str) -> None:
        await self.accept()
        await self.send({"user_id": user_id, "room_id": room_id, "id": self.connection_id})


class Refuse(GenericWebsocket):
    async def connect(self) -> None:
        if self.query_params.get("token") == "good":
            await self.accept()


class CloseInConnect(GenericWebsocket):
    async def connect(self) -> None:
        await self.close(status.WS_1008_POLICY_VIOLATION, "Closing connection")


async def notify(request: web.Request) -> web.Response:
    await send_message_to_websocket(request.match_info["connection_id"], await request.text())
    return web.json_response({"sent": True})


urls = {
    "ws/echo/": Echo,
    "ws/<user_id>/<room_id>/": UserRoom,
    "ws/refuse/": Refuse,
    "ws/close-in-connect/": CloseInConnect,
    "notify/<connection_id>/": notify,
}

app = create_app(urls)
