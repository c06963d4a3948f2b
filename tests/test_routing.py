"""The url table: nesting, slashes, handler kinds, match order and every configuration error."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from tests.support.rawclient import TEXT, TIMEOUT, Frame, raw_connect
from tests.support.servers import Serve
from wsframe import ConfigurationError, GenericWebsocket, create_app
from wsframe.routing import flatten_urls


class Named(GenericWebsocket):
    async def connect(self, **path_variables: Any) -> None:
        await self.accept()
        await self.send(type(self).__name__)
        await self.close()


class Static(Named):
    pass


class ById(Named):
    async def connect(self, item_id: str) -> None:  # type: ignore[override]
        await super().connect()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"{request.method} {request.match_info.get('name', '-')}")


class BookView(web.View):
    async def get(self) -> web.Response:
        return web.Response(text="view get")

    async def post(self) -> web.Response:
        return web.Response(text="view post")


async def first_frame(serve_client: Any, path: str) -> Frame | None:
    ws = await raw_connect(serve_client, path)
    frames = await ws.frames_until_eof(TIMEOUT)
    return frames[0]


@pytest.mark.parametrize("path", ["/ws/book/", "/ws/book"])
async def test_trailing_slash_is_optional_in_requests(serve: Serve, path: str) -> None:
    client = await serve(create_app({"ws/book/": Static}))
    assert await first_frame(client, path) == Frame(TEXT, b"Static")


@pytest.mark.parametrize("key", ["ws/book/", "/ws/book", "/ws/book/", "ws/book"])
async def test_leading_and_trailing_slash_are_optional_in_keys(serve: Serve, key: str) -> None:
    client = await serve(create_app({key: Static}))
    assert await first_frame(client, "/ws/book/") == Frame(TEXT, b"Static")


async def test_nested_tables_are_prefixes(serve: Serve) -> None:
    client = await serve(create_app({"api/": {"v1/": {"hello/<name>/": hello}}}))
    response = await client.get("/api/v1/hello/ada/")
    assert (response.status, await response.text()) == (200, "GET ada")


async def test_plain_handler_answers_every_method(serve: Serve) -> None:
    client = await serve(create_app({"hello/": hello}))
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        response = await client.request(method, "/hello/")
        assert await response.text() == f"{method} -"


async def test_view_dispatches_by_method_and_405s_the_rest(serve: Serve) -> None:
    client = await serve(create_app({"books/": BookView}))
    assert await (await client.get("/books/")).text() == "view get"
    assert await (await client.post("/books/")).text() == "view post"
    assert (await client.delete("/books/")).status == 405


async def test_root_key_serves_slash(serve: Serve) -> None:
    client = await serve(create_app({"": hello}))
    assert await (await client.get("/")).text() == "GET -"


async def test_static_segment_wins_over_variable_whatever_the_order(serve: Serve) -> None:
    client = await serve(create_app({"ws/<item_id>/": ById, "ws/new/": Static}))
    assert await first_frame(client, "/ws/new/") == Frame(TEXT, b"Static")
    assert await first_frame(client, "/ws/42/") == Frame(TEXT, b"ById")


async def test_unknown_path_is_404(serve: Serve) -> None:
    client = await serve(create_app({"ws/book/": Static}))
    assert (await client.get("/ws/nothing/")).status == 404


def test_routes_are_listed_statics_first() -> None:
    routes = flatten_urls({"ws/<item_id>/": ById, "ws/new/": Static, "api/": {"h/": hello}})
    assert [(r.kind, r.path) for r in routes] == [
        ("websocket", "/ws/new/"),
        ("http", "/api/h/"),
        ("websocket", "/ws/<item_id>/"),
    ]


def test_duplicate_paths_name_both_keys() -> None:
    with pytest.raises(
        ConfigurationError, match=r"urls\['ws/book/'\] and urls\['/ws/book'\]: duplicate path /ws/book/"
    ):
        create_app({"ws/book/": Static, "/ws/book": Static})


def test_duplicate_through_nesting_is_found() -> None:
    with pytest.raises(ConfigurationError, match="duplicate path /api/health/"):
        create_app({"api/": {"health/": hello}, "api/health": hello})


def test_two_variable_names_at_one_position_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"two different variables at one position \(<a> and <b>\)"):
        create_app({"x/<a>/one/": hello, "x/<b>/two/": hello})


def test_value_that_is_not_a_handler_is_an_error_naming_the_key() -> None:
    with pytest.raises(ConfigurationError, match=r"urls\['api/'\]\['bad/'\]: 42 is neither"):
        create_app({"api/": {"bad/": 42}})


def test_sync_function_is_not_a_handler() -> None:
    def sync_handler(request: web.Request) -> web.Response:
        return web.Response()

    with pytest.raises(ConfigurationError, match="is neither"):
        create_app({"sync/": sync_handler})


def test_partial_segment_variable_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="bad path segment 'book-<id>'"):
        create_app({"ws/book-<id>/": Static})


def test_non_string_key_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="url keys must be strings"):
        create_app({1: Static})  # type: ignore[dict-item]


def test_connect_missing_a_path_variable_parameter_is_an_error() -> None:
    class NoParam(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()

    with pytest.raises(ConfigurationError, match=r"has variable <user_id> but connect\(\) has no parameter 'user_id'"):
        create_app({"ws/<user_id>/": NoParam})


def test_connect_requiring_a_parameter_the_path_lacks_is_an_error() -> None:
    class NeedsRoom(GenericWebsocket):
        async def connect(self, room: str) -> None:
            await self.accept()

    with pytest.raises(ConfigurationError, match=r"connect\(\) requires 'room' but the path has no <room>"):
        create_app({"ws/": NeedsRoom})


def test_urls_must_be_a_mapping() -> None:
    with pytest.raises(ConfigurationError, match="urls must be a dict"):
        create_app([("ws/", Static)])  # type: ignore[arg-type]
