"""``create_app``: a url table and settings in, a real ``aiohttp.web.Application`` out."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from . import _guard, _redact, status
from ._freeze import Freezer
from ._logs import adopt_gunicorn_error_log
from .backends import resolve_backend
from .backends.base import Backend
from .config import FIELDS, SETTINGS_KEY, Settings
from .exceptions import ConfigurationError
from .history import History
from .metrics import enable_metrics
from .registry import REGISTRY_KEY, Registry, started_apps
from .routing import Route, compile_urls
from .types import Auth, OriginPolicy, Permission

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["create_app", "ROUTES_KEY"]

ROUTES_KEY = web.AppKey("wsframe_routes", list[Route])


def _not_a_subprotocol_mismatch(record: logging.LogRecord) -> bool:
    # aiohttp warns on every handshake whose offered subprotocols the server
    # does not pick: a client could flood the log with them. Declining a
    # subprotocol is a normal outcome (RFC 6455 4.2.2), not a warning.
    return not (isinstance(record.msg, str) and record.msg.startswith("%s: Client protocols"))


def create_app(
    urls: Mapping[str, Any],
    *,
    backend: Backend | str | None = None,
    redis: str | aioredis.Redis | None = None,
    middlewares: Iterable[Any] = (),
    max_message_size: int | None = None,
    heartbeat: float | None = None,
    compression: bool | None = None,
    close_timeout: float | None = None,
    shutdown_timeout: float | None = None,
    max_outbound_buffer: int | None = None,
    slow_consumer: Literal["close", "drop"] | None = None,
    handshake_timeout: float | None = None,
    idle_timeout: float | None = None,
    rate_limit: float | None = None,
    max_connections: int | None = None,
    max_connections_per_ip: int | None = None,
    max_handshakes_per_ip: int | None = None,
    gc_freeze: bool | None = None,
    allowed_origins: OriginPolicy = None,
    auth: Auth | None = None,
    permissions: Sequence[Permission] | None = None,
    redact_query_params: Sequence[str] | None = None,
    metrics: bool | str = False,
    history: Mapping[str, History] | None = None,
    **app_options: Any,
) -> web.Application:
    """Build the application serving *urls*.

    The result is a plain :class:`aiohttp.web.Application`: add aiohttp
    middlewares, signals, sub-apps and aiohttp-session to it as usual. The
    settings (defaults in :class:`~wsframe.config.Settings`) apply to every
    websocket handler that does not override them. *redis* (a URL or a
    ``redis.asyncio.Redis``) selects the Redis backend; *backend* is a
    :class:`~wsframe.backends.Backend` or a URL (``memory://``, ``ipc://``,
    ``redis://...``). With neither: the local IPC backend under gunicorn, the
    process-local memory backend otherwise (see docs/workers.md).
    *metrics* serves Prometheus metrics at ``/metrics`` (or at the path it
    names): see docs/deployment.md. *history* maps group-name prefixes to
    :class:`~wsframe.History` (see docs/history.md). *app_options* go to
    ``web.Application`` (``client_max_size``, ``logger``, ...).

    Raises :class:`~wsframe.exceptions.ConfigurationError` naming the problem
    for a bad url table or setting, before anything is served, and
    :class:`~wsframe.exceptions.MissingDependencyError` for *metrics* without
    prometheus-client installed.
    """
    # Every keyword named like a setting, read by name: a setting added to
    # Settings but not here fails on the first call (and in tests/test_config.py).
    given = locals()
    settings = Settings().merged({name: given[name] for name in FIELDS})
    # No middleware of our own: a middleware's frame would stay suspended for the
    # whole life of every websocket. The handlers routing.py mounts set the
    # current app themselves (see registry.current_app).
    app = web.Application(middlewares=list(middlewares), **app_options)
    # Slow request lines and headers are bounded in aiohttp's protocol, below any handler.
    _guard.install(app, settings.handshake_timeout, settings.max_handshakes_per_ip)
    # Here rather than at import: importing wsframe changes no logging. Adding
    # the same filter again is a no-op.
    logging.getLogger("aiohttp.websocket").addFilter(_not_a_subprotocol_mismatch)
    # Tokens in query strings print as token=*** in aiohttp's and gunicorn's access logs.
    _redact.install()
    chosen = resolve_backend(backend, redis)
    if settings.history and not chosen.supports_history:
        raise ConfigurationError(
            f"history= needs a backend that keeps one numbering of each group's messages for every worker: "
            f"the {chosen.name} backend does not (its workers share no store). Pass redis='redis://...', "
            "or run one process with the memory backend."
        )
    registry = Registry(chosen, settings.history)
    app[SETTINGS_KEY] = settings
    app[REGISTRY_KEY] = registry
    app[ROUTES_KEY] = compile_urls(app.router, urls, settings)
    enable_metrics(app, metrics, [route.path for route in app[ROUTES_KEY] if route.kind == "websocket"])
    freezer = Freezer(registry) if settings.gc_freeze else None

    async def on_startup(app: web.Application) -> None:
        # At startup, once the app module has run: logging it set up itself wins.
        adopt_gunicorn_error_log()
        await registry.on_startup()
        started_apps.add(app)
        if freezer is not None:
            freezer.start()

    async def on_shutdown(app: web.Application) -> None:
        started_apps.discard(app)
        if freezer is not None:
            freezer.stop()
        await registry.on_shutdown(status.WS_1001_GOING_AWAY, "Server shutdown", settings.shutdown_timeout)

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app
