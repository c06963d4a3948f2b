"""The chat sample's url table: the page at / and the room websocket."""

from pathlib import Path

from aiohttp import web

from samples.chat.websockets import ChatWebsocket

PAGE = Path(__file__).with_name("index.html")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE)


urls = {
    "": index,
    "ws/chat/<room>/": ChatWebsocket,
}
