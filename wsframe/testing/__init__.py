"""Testing wsframe apps: a websocket test client and the ``ws_client`` pytest fixture.

Installing wsframe registers this module as a pytest plugin (the ``pytest11``
entry point), so any test can ask for ``ws_client``::

    async def test_echo(ws_client):
        app = create_app({'ws/book/': BookWebsocket})
        async with ws_client(app).connect('/ws/book/') as ws:
            await ws.send('hi')
            assert await ws.receive() == 'hi'

The app runs in a real aiohttp server on a free loopback port (aiohttp's
``TestServer``; the client class is pytest-aiohttp's ``aiohttp_client_cls``),
so its startup and shutdown run as in production. Every wait is bounded by a
short timeout (1 s; ``wsframe_timeout`` in the pytest ini file, scaled by the
``WSFRAME_TEST_TIMEOUT_SCALE`` environment variable), so a hang fails fast.

When a handler crashes, the test shows the handler's own traceback: the
client catches the exception wsframe logs, and raises :class:`HandlerError`
from it when the connection closes with 1011 (or the handshake answers 500).
Errors nobody observed are raised when the client closes, so none pass
silently. :class:`WebsocketTestClient` works without pytest too, as an async
context manager.
"""

from __future__ import annotations

# The package is split by responsibility; every public name is importable from
# here, and pytest loads this module (the pytest11 entry point), so the hooks
# and fixtures of .plugin must be attributes of it too.
from .client import WebsocketTestClient
from .cluster import WebsocketTestCluster
from .connection import WebsocketTestConnection
from .errors import TEST_CLIENT_HEADER, CapturedError, HandlerError, HandshakeRejectedError
from .plugin import WsClientFactory, WsClusterFactory, ws_client, ws_cluster
from .plugin import pytest_addoption as pytest_addoption
from .plugin import pytest_configure as pytest_configure
from .timeouts import DEFAULT_TIMEOUT, TIMEOUT_SCALE_ENV, default_timeout

__all__ = [
    "DEFAULT_TIMEOUT",
    "TIMEOUT_SCALE_ENV",
    "TEST_CLIENT_HEADER",
    "HandlerError",
    "HandshakeRejectedError",
    "CapturedError",
    "WebsocketTestClient",
    "WebsocketTestConnection",
    "WebsocketTestCluster",
    "default_timeout",
    "ws_client",
    "ws_cluster",
    "WsClientFactory",
    "WsClusterFactory",
]
