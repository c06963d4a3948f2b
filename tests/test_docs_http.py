"""The routing page's HTTP section: path variables reach HTTP handlers as strings, and auth= is websocket-only."""

from __future__ import annotations

from aiohttp import web

from docs.examples import http_app
from tests.support.rawclient import TIMEOUT, UPGRADE_HEADERS
from tests.support.servers import Serve
from wsframe import TokenAuth, create_app

BEARER = {"Authorization": "Bearer s3cret"}


def example_app() -> web.Application:
    """The page's table and auth in a fresh app (an aiohttp app runs on one event loop only)."""
    return create_app(http_app.urls, auth=TokenAuth(http_app.verify))


async def test_http_handler_reads_its_path_variable_from_match_info(serve: Serve) -> None:
    client = await serve(example_app())
    response = await client.get("/api/books/2/")
    assert (response.status, await response.json()) == (200, {"id": 2, "title": "Solaris"})


async def test_http_path_variable_is_not_converted_so_the_handler_decides_404(serve: Serve) -> None:
    client = await serve(example_app())
    response = await client.get("/api/books/two/")
    assert (response.status, await response.text()) == (404, "no such book")


async def test_view_reads_its_path_variable_from_self_request_match_info(serve: Serve) -> None:
    client = await serve(example_app())
    response = await client.get("/api/shelves/fiction/")
    assert await response.json() == {"shelf": "fiction"}


async def test_app_auth_does_not_apply_to_http_routes(serve: Serve) -> None:
    client = await serve(example_app())
    response = await client.get("/api/books/1/")  # no token, and the app has auth=
    assert response.status == 200


async def test_app_auth_applies_to_the_websocket_route(serve: Serve) -> None:
    client = await serve(example_app())
    response = await client.get(
        "/ws/feed/",
        headers=UPGRADE_HEADERS,
    )
    assert response.status == 401


async def test_decorated_http_handler_refuses_a_request_without_token_with_401(serve: Serve) -> None:
    client = await serve(example_app())
    response = await client.post("/api/notify/0123/", json={"detail": "hi"})
    assert (response.status, await response.text()) == (401, "token required")


async def test_decorated_http_handler_with_token_sends_to_the_connection(serve: Serve) -> None:
    client = await serve(example_app())
    async with client.ws_connect("/ws/feed/", headers=BEARER) as ws:
        connection_id = (await ws.receive_json(timeout=TIMEOUT))["connection_id"]
        response = await client.post(f"/api/notify/{connection_id}/", json={"detail": "hi"}, headers=BEARER)
        assert await response.json() == {"sent": True, "by": "ada"}
        assert await ws.receive_json(timeout=TIMEOUT) == {"detail": "hi"}
