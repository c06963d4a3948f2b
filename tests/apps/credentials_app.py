"""An app for the credential tests: a token in the URL, a first-message login, tokens that expire.

Tokens: ``s3cret`` is alice for good; ``exp<seconds>:<name>`` is *name* until that many seconds
from now (an :class:`~wsframe.Expiring`); anything else is refused. ``GET /connects/`` answers how
many times ``connect()`` ran in this process, and the pid.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web

from wsframe import Expiring, GenericWebsocket, MessageAuth, TokenAuth, create_app

__all__ = ["app", "verify", "connects", "WhoAmI"]

connects = [0]
"""How many times connect() ran: a refused login must leave it alone."""


def verify(token: str) -> Any:
    if token == "s3cret":
        return "alice"
    kind, _, name = token.partition(":")
    if kind.startswith("exp") and name:
        return Expiring(name, time.time() + float(kind[3:]))
    return None


class WhoAmI(GenericWebsocket):
    """Says who the user is on connect and in answer to every message."""

    async def connect(self) -> None:
        connects[0] += 1
        await self.accept()
        await self.send({"user": self.user})

    async def receive(self, data: str) -> None:
        await self.send({"user": self.user, "got": data})


class ByQuery(WhoAmI):
    auth = TokenAuth(verify)  # type: ignore[assignment]  # mypy reads a callable ClassVar as a method


class ByFirstMessage(WhoAmI):
    auth = MessageAuth(verify, timeout=1.0)  # type: ignore[assignment]  # as above


async def connect_count(request: web.Request) -> web.Response:
    return web.json_response({"connects": connects[0], "pid": os.getpid()})


app = create_app({"ws/token/": ByQuery, "ws/login/": ByFirstMessage, "connects/": connect_count})
