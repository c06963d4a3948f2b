"""Shared fixtures: a real TCP server for an app built inside the test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.rawws import RawWebsocket
from tests.support.redis_server import RedisServer, own_redis

TIMEOUT = 2.0 * float(os.environ.get("WSFRAME_TEST_TIMEOUT_SCALE", "1"))
"""How long a test waits for a frame before it fails instead of hanging."""

Serve = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture(autouse=True)
async def _close_raw_clients() -> AsyncIterator[None]:
    yield
    while RawWebsocket.opened:
        await RawWebsocket.opened.pop().aclose()


@pytest.fixture
def serve(aiohttp_client: Serve) -> Serve:
    """Start *app* on a real localhost port; returns pytest-aiohttp's TestClient."""
    return aiohttp_client


async def raw_connect(
    client: TestClient[web.Request, web.Application], path: str, headers: dict[str, str] | None = None
) -> RawWebsocket:
    """Open a raw websocket to *client*'s server."""
    server = client.server
    return await RawWebsocket.connect(str(server.host), int(server.port or 0), path, headers, timeout=TIMEOUT)


@pytest.fixture
def prefix() -> str:
    """A Redis key prefix of the test's own, so tests sharing the Redis on 6379 never hear each other."""
    from tests.support.nodes import redis_prefix  # nodes imports this module

    return redis_prefix()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, on a free port, to pause, kill and restart."""
    with own_redis() as server:
        yield server
