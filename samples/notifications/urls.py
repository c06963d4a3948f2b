"""An HTTP endpoint that pushes a notification to every open tab of a user."""

import json
from pathlib import Path

from aiohttp import web

from samples.notifications.websockets import TABS, NotificationWebsocket
from wsframe.websocket import send_message_to_websocket

PAGE = Path(__file__).with_name("index.html")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE)


async def notify(request: web.Request) -> web.Response:
    try:
        user_id = int(request.match_info["user_id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    try:
        notification = await request.json()
    except json.JSONDecodeError:
        return web.json_response({"detail": "The body must be JSON."}, status=400)
    tabs = list(request.app[TABS].get(user_id, ()))
    for connection_id in tabs:
        await send_message_to_websocket(connection_id=connection_id, data=notification)
    return web.json_response({"sent": len(tabs)})


urls = {
    "": index,
    "ws/notifications/<user_id>/": NotificationWebsocket,
    "notify/<user_id>/": notify,
}
