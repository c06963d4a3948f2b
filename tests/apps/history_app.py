"""The history app the tests run: groups under ``chat:`` keep history; ``vip:`` keeps less.

``make_app(backend)`` builds it for in-process tests; ``app`` is the module-level app gunicorn
serves, on the Redis backend at ``HISTORY_REDIS`` (key prefix ``HISTORY_PREFIX``, history size
``HISTORY_SIZE``) or, without it, the default backend.

Routes:

- ``ws/<group>/?epoch=E&offset=N``: joins the group resuming after ``(E, N)`` (no query: from now),
  then sends ``{"joined": {"recovered", "epoch", "offset"}, "pid"}``; the text ``say <text>`` sends
  ``<text>`` to the group.
- ``POST send/<group>/``: sends the request body (a str) to the group; ``?count=N`` sends N messages
  ``"<body> <i>"``, i = 1..N, in order. Answers ``{"pid"}``.
- ``GET pid/``: ``{"pid"}``.
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from wsframe import GenericWebsocket, History, create_app, send_message_to_group
from wsframe.backends import Backend, RedisBackend

__all__ = ["app", "make_app", "Chat"]


class Chat(GenericWebsocket):
    async def connect(self, group: str) -> None:
        await self.accept()
        query = self.query_params
        since = (query["epoch"], int(query["offset"])) if "epoch" in query else None
        joined = await self.join_group(group, since=since)
        await self.send(
            {
                "joined": {"recovered": joined.recovered, "epoch": joined.epoch, "offset": joined.offset},
                "pid": os.getpid(),
            }
        )

    async def receive(self, data: str | bytes) -> None:
        assert isinstance(data, str)
        command, _, argument = data.partition(" ")
        if command == "say":
            (group,) = self.path_variables.values()
            await send_message_to_group(group, argument)
        elif command == "bytes":
            (group,) = self.path_variables.values()
            try:
                await send_message_to_group(group, argument.encode())
            except TypeError as exc:
                await self.send({"error": str(exc)})


async def send(request: web.Request) -> web.Response:
    group, body = request.match_info["group"], await request.text()
    count = request.query.get("count")
    if count is None:
        await send_message_to_group(group, body)
    else:
        for n in range(1, int(count) + 1):
            await send_message_to_group(group, f"{body} {n}")
    return web.json_response({"pid": os.getpid()})


async def pid(request: web.Request) -> web.Response:
    return web.json_response({"pid": os.getpid()})


def make_app(
    backend: Backend | str | None = None, *, size: int = 100, ttl: float = 300, **options: Any
) -> web.Application:
    """The app on *backend*: ``chat:`` keeps *size* messages for *ttl* s, ``chat:vip:`` keeps 2."""
    return create_app(
        {"ws/<group>/": Chat, "send/<group>/": send, "pid/": pid},
        backend=backend,
        history={"chat:": History(size=size, ttl=ttl), "chat:vip:": History(size=2, ttl=ttl)},
        heartbeat=0,
        **options,
    )


def _backend() -> Backend | None:
    if url := os.environ.get("HISTORY_REDIS"):
        return RedisBackend(url, prefix=os.environ.get("HISTORY_PREFIX", "wsframe-history-test:"))
    return None


app = make_app(_backend(), size=int(os.environ.get("HISTORY_SIZE", "100")))
