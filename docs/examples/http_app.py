"""The routing page's HTTP handlers: path variables from request.match_info, and protecting them."""

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from wsframe import GenericWebsocket, TokenAuth, create_app, send_message_to_websocket

BOOKS = {1: "Dune", 2: "Solaris"}
USERS_BY_TOKEN = {"s3cret": "ada"}


async def verify(token: str) -> str | None:
    return USERS_BY_TOKEN.get(token)


# --8<-- [start:variables]
async def book(request: web.Request) -> web.Response:
    # 'api/books/<book_id>/': HTTP handlers get path variables as strings, unconverted.
    book_id = request.match_info["book_id"]
    if not book_id.isdigit() or int(book_id) not in BOOKS:
        raise web.HTTPNotFound(text="no such book")
    return web.json_response({"id": int(book_id), "title": BOOKS[int(book_id)]})


class Shelf(web.View):
    async def get(self) -> web.Response:  # in a View: self.request.match_info
        return web.json_response({"shelf": self.request.match_info["shelf"]})


# --8<-- [end:variables]


# --8<-- [start:protect]
USER = web.RequestKey("user", str)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_required(handler: Handler) -> Handler:
    """Refuse an HTTP request without a valid bearer token with 401; the user is request[USER]."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = await verify(token) if scheme.lower() == "bearer" else None
        if user is None:
            raise web.HTTPUnauthorized(text="token required")
        request[USER] = user
        return await handler(request)

    return checked


@token_required
async def notify(request: web.Request) -> web.StreamResponse:
    await send_message_to_websocket(request.match_info["connection_id"], await request.json())
    return web.json_response({"sent": True, "by": request[USER]})


class FeedWebsocket(GenericWebsocket):
    async def connect(self) -> None:
        await self.accept()
        await self.send({"connection_id": self.connection_id})


urls = {
    "ws/feed/": FeedWebsocket,  # auth= below protects this route...
    "api/": {
        "books/<book_id>/": book,  # ...not this one: anyone may read books
        "shelves/<shelf>/": Shelf,
        "notify/<connection_id>/": notify,  # protected by its own decorator
    },
}
app = create_app(urls, auth=TokenAuth(verify))
# --8<-- [end:protect]
