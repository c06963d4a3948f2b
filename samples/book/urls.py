"""The url table from Panther's websocket page, plus a page at / to try it from a browser."""

from pathlib import Path

from aiohttp import web

from samples.book.websockets import BookWebsocket

PAGE = Path(__file__).with_name("index.html")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE)


urls = {
    '': index,
    'ws/book/': BookWebsocket,
}
