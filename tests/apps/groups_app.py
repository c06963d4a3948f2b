"""The groups app the functional tests run, on whichever backend the environment picks.

- ``GROUPS_REDIS`` set: the Redis backend at that URL (the cluster backend for a
  ``redis+cluster://`` URL), with ``GROUPS_PREFIX`` as the key
  prefix and ``GROUPS_PRESENCE_TTL`` the presence TTL in seconds;
- else ``GROUPS_IPC_DIR`` set: the IPC backend, nodes meeting in that directory;
- else the default backend (IPC under gunicorn).

Routes:

- ``ws/<group>/``: joins the group, then sends ``{"id", "pid"}``; the text ``leave`` leaves it.
- ``POST send/<group>/``: sends the request body to the group.
- ``POST close/<group>/``: closes the group with 4001 and the request body as the reason.
- ``GET members/<group>/``: ``{"members": [...], "pid"}``.
"""

from __future__ import annotations

import os

from aiohttp import web

from wsframe import GenericWebsocket, close_group, create_app, group_members, send_message_to_group
from wsframe.backends import Backend, RedisBackend
from wsframe.backends.redis import RedisClusterBackend

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


def _backend() -> Backend | str | None:
    if url := os.environ.get("GROUPS_REDIS"):
        kind = RedisClusterBackend if url.startswith("redis+cluster:") else RedisBackend
        return kind(
            url,
            prefix=os.environ.get("GROUPS_PREFIX", "wsframe-groups-test:"),
            presence_ttl=float(os.environ.get("GROUPS_PRESENCE_TTL", "15")),
        )
    if directory := os.environ.get("GROUPS_IPC_DIR"):
        return f"ipc://{directory}"
    return None


app = create_app(
    {"ws/<group>/": Member, "send/<group>/": send, "close/<group>/": close, "members/<group>/": members},
    backend=_backend(),
    heartbeat=0,
)
