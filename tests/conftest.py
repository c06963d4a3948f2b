"""Shared fixtures: a real TCP server for an app built inside the test, Redis prefixes and servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.nodes import redis_prefix
from tests.support.rawclient import RawWebsocket
from tests.support.redis_server import RedisServer, own_redis
from tests.support.servers import Serve


@pytest.fixture(autouse=True)
async def _close_raw_clients() -> AsyncIterator[None]:
    yield
    while RawWebsocket.opened:
        await RawWebsocket.opened.pop().aclose()


@pytest.fixture
def serve(aiohttp_client: Serve) -> Serve:
    """Start *app* on a real localhost port; returns pytest-aiohttp's TestClient."""
    return aiohttp_client


@pytest.fixture
def prefix() -> str:
    """A Redis key prefix of the test's own, so tests sharing the Redis on 6379 never hear each other."""
    return redis_prefix()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, on a free port, to pause, kill and restart."""
    with own_redis() as server:
        yield server
