"""The pytest plugin: the ``wsframe_timeout`` ini option and the ``ws_client`` and ``ws_cluster`` fixtures.

pytest loads it through :mod:`wsframe.testing`, the module the ``pytest11``
entry point names, which re-exports these hooks and fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from ..exceptions import MissingDependencyError, WsframeError
from . import timeouts
from .client import WebsocketTestClient
from .cluster import WebsocketTestCluster
from .errors import HandlerError
from .timeouts import DEFAULT_TIMEOUT

__all__ = ["WsClientFactory", "WsClusterFactory", "pytest_addoption", "pytest_configure", "ws_client", "ws_cluster"]


def pytest_addoption(parser: Any) -> None:
    """Add the ``wsframe_timeout`` ini option."""
    parser.addini(
        "wsframe_timeout",
        f"seconds any wait of wsframe's test client may take (default {DEFAULT_TIMEOUT})",
        default=str(DEFAULT_TIMEOUT),
    )


def pytest_configure(config: Any) -> None:
    """Read ``wsframe_timeout``; raises ``ValueError`` when it is not a positive number."""
    timeouts._configured_timeout = timeouts.positive_number("wsframe_timeout", config.getini("wsframe_timeout"))


WsClientFactory = Callable[..., WebsocketTestClient]
"""The type of the ``ws_client`` fixture: ``ws_client(app, **options) -> WebsocketTestClient``."""


async def _ws_client(aiohttp_client_cls: type[TestClient[Any, Any]]) -> AsyncIterator[WsClientFactory]:
    """Factory fixture: ``ws_client(app)`` returns the :class:`WebsocketTestClient` of *app*.

    The same app gives the same client within a test; keyword options
    (``timeout=``, ``raise_handler_errors=``) go to the client the first time.
    After the test every client is closed (the apps shut down), raising
    :class:`HandlerError` for a handler exception the test did not observe.
    """
    clients: dict[int, tuple[WebsocketTestClient, dict[str, Any]]] = {}

    def factory(app: web.Application, **options: Any) -> WebsocketTestClient:
        known = clients.get(id(app))
        if known is not None:
            if options and options != known[1]:
                raise WsframeError(
                    "ws_client(app) already made a client for this app with other options; "
                    "pass the options the first time only."
                )
            return known[0]
        client = WebsocketTestClient(app, client_cls=aiohttp_client_cls, **options)
        clients[id(app)] = (client, options)
        return client

    yield factory
    await _close_all([client for client, _ in clients.values()], HandlerError)


WsClusterFactory = Callable[..., WebsocketTestCluster]
"""The type of the ``ws_cluster`` fixture: ``ws_cluster('module:app', workers=2, ...) -> WebsocketTestCluster``."""


async def _ws_cluster() -> AsyncIterator[WsClusterFactory]:
    """Factory fixture: ``ws_cluster('module:app', workers=2, env={...})`` returns a :class:`WebsocketTestCluster`.

    The cluster starts at its first connection or request (or ``await
    cluster.start()``) and is stopped after the test; a traceback in the
    workers' log then fails the test.
    """
    clusters: list[WebsocketTestCluster] = []

    def factory(app: str, **options: Any) -> WebsocketTestCluster:
        cluster = WebsocketTestCluster(app, **options)
        clusters.append(cluster)
        return cluster

    yield factory
    await _close_all(clusters, WsframeError)


async def _close_all(served: Sequence[Any], reported: type[Exception]) -> None:
    """Close every one of *served*, newest first; then raise the first *reported* error any close raised."""
    errors: list[Exception] = []
    for one in reversed(served):
        try:
            await one.close()
        except reported as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def _make_fixture(implementation: Any, name: str) -> Any:
    """*implementation* as the pytest fixture *name*, or one that says what to install without pytest-aiohttp."""
    try:
        import pytest_aiohttp  # noqa: F401  # provides aiohttp_client_cls
        import pytest_asyncio
    except ImportError:  # pragma: no cover - only without the test extra
        import pytest

        @pytest.fixture(name=name)
        def missing() -> Any:
            raise MissingDependencyError(
                f"The {name} fixture needs pytest-aiohttp: pip install pytest-aiohttp (or wsframe's testing extra)"
            )

        return missing
    return pytest_asyncio.fixture(implementation, name=name)


ws_client = _make_fixture(_ws_client, "ws_client")
"""The ``ws_client`` fixture (see ``_ws_client``)."""

ws_cluster = _make_fixture(_ws_cluster, "ws_cluster")
"""The ``ws_cluster`` fixture (see ``_ws_cluster``)."""
