"""The deployment recipe: gunicorn workers sharing one Redis, a ticker any worker can publish to.

How to run (Redis on 127.0.0.1:6379):  gunicorn -c samples/cluster/gunicorn.conf.py samples.cluster.app:app
then open ws://127.0.0.1:8000/ws/ticker/btc/ and POST {"price": 1} to http://127.0.0.1:8000/publish/btc/.
"""

from __future__ import annotations

import os

from aiohttp import web

from wsframe import GenericWebsocket, create_app, group_members, send_message_to_group


class TickerWebsocket(GenericWebsocket):
    """ws/ticker/<channel>/: receives every tick published to the channel, whichever worker takes the POST."""

    async def connect(self, channel: str) -> None:
        await self.accept()
        await self.join_group(f"ticker:{channel}")
        await self.send({"type": "welcome", "id": self.connection_id, "worker": os.getpid()})


async def publish(request: web.Request) -> web.Response:
    """POST /publish/<channel>/ with a JSON object: sent to every listener on every worker."""
    try:
        tick = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="send a JSON object") from None
    if not isinstance(tick, dict):
        raise web.HTTPBadRequest(text="send a JSON object")
    group = f"ticker:{request.match_info['channel']}"
    await send_message_to_group(group, {"type": "tick", "tick": tick, "via": os.getpid()})
    return web.json_response({"listeners": len(await group_members(group)), "worker": os.getpid()})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"worker": os.getpid()})


urls = {
    "ws/ticker/<channel>/": TickerWebsocket,
    "publish/<channel>/": publish,
    "health/": health,
}

app = create_app(
    urls,
    redis=os.environ.get("WSFRAME_REDIS", "redis://127.0.0.1:6379/0"),
    shutdown_timeout=10,  # below gunicorn's graceful_timeout, so every client gets its 1001
)
