"""The chat sample's url table: the page at /, the room websocket, and its AsyncAPI document."""

from pathlib import Path

from aiohttp import web

from samples.chat.websockets import ChatWebsocket
from wsframe.asyncapi import asyncapi_handler

PAGE = Path(__file__).with_name("index.html")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE)


urls = {
    "": index,
    "ws/chat/<room>/": ChatWebsocket,
    "asyncapi.json": asyncapi_handler(title="Chat sample"),  # opt-in: the websocket API, machine-readable
}
