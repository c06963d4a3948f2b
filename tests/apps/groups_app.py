"""The app the groups functional tests run under gunicorn with the Redis backend.

``GROUPS_REDIS`` is the Redis URL, ``GROUPS_PREFIX`` the key prefix and
``GROUPS_PRESENCE_TTL`` the presence TTL in seconds.

- ``ws/<group>/``: joins the group, then sends ``{"id", "pid"}``; the text ``leave`` leaves it.
- ``POST send/<group>/``: sends the request body to the group.
- ``GET members/<group>/``: ``{"members": [...], "pid"}``.
"""

from __future__ import annotations

import os

from aiohttp import web

from wsframe import GenericWebsocket, create_app, group_members, send_message_to_group
from wsframe.backends import RedisBackend

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


async def members(request: web.Request) -> web.Response:
    ids = await group_members(request.match_info["group"])
    return web.json_response({"members": sorted(ids), "pid": os.getpid()})


backend = RedisBackend(
    os.environ.get("GROUPS_REDIS", "redis://127.0.0.1:6379/0"),
    prefix=os.environ.get("GROUPS_PREFIX", "wsframe-groups-test:"),
    presence_ttl=float(os.environ.get("GROUPS_PRESENCE_TTL", "15")),
)
app = create_app(
    {"ws/<group>/": Member, "send/<group>/": send, "members/<group>/": members}, backend=backend, heartbeat=0
)
