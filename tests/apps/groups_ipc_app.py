"""A groups app on the local IPC backend, for gunicorn workers or separately started processes.

With ``GROUPS_IPC_DIR`` set, nodes meet in that directory (``ipc:///dir``);
without it, the default backend applies (IPC under gunicorn).

- ``ws/<group>/``: joins the group, then sends ``{"id", "pid"}``; the text ``leave`` leaves it.
- ``POST send/<group>/``: sends the request body to the group.
- ``POST close/<group>/``: closes the group with 4001 and the request body as the reason.
- ``GET members/<group>/``: ``{"members": [...], "pid"}``.
"""

from __future__ import annotations

import os

from aiohttp import web

from wsframe import GenericWebsocket, close_group, create_app, group_members, send_message_to_group

__all__ = ["app"]


class Member(GenericWebsocket):
    async def connect(self, group: str) -> None:
        await self.accept()
        await self.join_group(group)
        await self.send({"id": self.connection_id, "pid": os.getpid()})

    async def receive(self, data: str | bytes) -> None:
        if data == "leave":
            for group in self.groups:
                await self.leave_group(group)
            await self.send("left")


async def send(request: web.Request) -> web.Response:
    await send_message_to_group(request.match_info["group"], await request.text())
    return web.json_response({"pid": os.getpid()})


async def close(request: web.Request) -> web.Response:
    await close_group(request.match_info["group"], 4001, await request.text())
    return web.json_response({"pid": os.getpid()})


async def members(request: web.Request) -> web.Response:
    ids = await group_members(request.match_info["group"])
    return web.json_response({"members": sorted(ids), "pid": os.getpid()})


directory = os.environ.get("GROUPS_IPC_DIR")
app = create_app(
    {"ws/<group>/": Member, "send/<group>/": send, "close/<group>/": close, "members/<group>/": members},
    backend=f"ipc://{directory}" if directory else None,
    heartbeat=0,
)
