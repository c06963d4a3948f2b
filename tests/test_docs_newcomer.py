"""Answers the docs give to a newcomer's questions: Publisher's prefix, where HandshakeRejectedError lives."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

import wsframe.testing
from tests.support.rawclient import TIMEOUT
from tests.support.redis_server import SHARED_REDIS_URL, require_shared_redis
from tests.support.servers import ROOT, Serve
from wsframe import GenericWebsocket, Publisher, create_app
from wsframe.backends.redis import DEFAULT_PREFIX
from wsframe.testing import HandshakeRejectedError, WsClientFactory

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Announce(GenericWebsocket):
    async def connect(self) -> None:
        await self.accept()
        await self.send(self.connection_id)


def test_publisher_and_the_redis_backend_share_one_default_prefix() -> None:
    require_shared_redis()
    with Publisher(SHARED_REDIS_URL) as publisher:
        assert publisher.prefix == DEFAULT_PREFIX == "wsframe:"


async def test_publisher_without_prefix_reaches_an_app_made_with_redis_url(serve: Serve) -> None:
    require_shared_redis()
    client = await serve(create_app({"ws/": Announce}, redis=SHARED_REDIS_URL))
    async with client.ws_connect("/ws/") as ws:
        connection_id = (await ws.receive(timeout=TIMEOUT)).data
        with Publisher(SHARED_REDIS_URL) as publisher:
            sent = await asyncio.to_thread(publisher.send_message_to_websocket, connection_id, {"detail": "ready"})
        assert sent is True
        assert await ws.receive_json(timeout=TIMEOUT) == {"detail": "ready"}


async def test_publisher_with_another_prefix_reaches_no_worker(serve: Serve) -> None:
    require_shared_redis()
    client = await serve(create_app({"ws/": Announce}, redis=SHARED_REDIS_URL))
    async with client.ws_connect("/ws/") as ws:
        connection_id = (await ws.receive(timeout=TIMEOUT)).data
        with Publisher(SHARED_REDIS_URL, prefix="myapp:") as publisher:
            sent = await asyncio.to_thread(publisher.send_message_to_websocket, connection_id, "lost")
    assert sent is False


def test_handshake_rejected_error_is_imported_from_wsframe_testing() -> None:
    assert "HandshakeRejectedError" in wsframe.testing.__all__
    assert wsframe.testing.HandshakeRejectedError is HandshakeRejectedError


async def test_handshake_rejected_error_carries_the_http_status(ws_client: WsClientFactory) -> None:
    class Refuse(GenericWebsocket):
        async def connect(self) -> None:
            pass

    with pytest.raises(HandshakeRejectedError) as refused:
        async with ws_client(create_app({"ws/": Refuse})).connect("/ws/"):
            pass
    assert refused.value.status == 403


def test_readme_serves_the_docs_on_another_port_than_the_sample() -> None:
    readme = (ROOT / "README.md").read_text()
    serve = re.search(r"mkdocs serve -a 127\.0\.0\.1:(\d+)", readme)
    assert "python -m wsframe run samples.book.main:app" in readme  # the sample, on its default 8000
    assert serve is not None
    assert serve.group(1) == "8001"


async def test_an_aiohttp_middleware_also_wraps_websocket_routes(serve: Serve) -> None:
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(request.path)
        return await handler(request)

    client = await serve(create_app({"ws/": Announce}, middlewares=[record]))
    async with client.ws_connect("/ws/") as ws:
        await ws.receive(timeout=TIMEOUT)
    assert seen == ["/ws/"]
