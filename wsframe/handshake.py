"""From an HTTP upgrade request to a running handler: the checks before ``connect()``, per mounted class.

:func:`make_route_handler` returns the aiohttp handler that routing mounts for
a :class:`~wsframe.websocket.GenericWebsocket` subclass. It refuses what it
must before any handler code runs, each with its status: 426 no upgrade, 400
malformed handshake, 403 origin, 503/429 connection limits, 404 path
variable, 401/403 auth and permissions; then it makes the handler instance
and runs the connection. :func:`build_handler_config` computes what that
needs (a :class:`~wsframe.config.HandlerConfig`) once, at ``create_app``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from . import status
from ._session import Session, json_error
from .config import OVERRIDABLE, HandlerConfig, Settings
from .credentials import MessageAuth, serve_after_login
from .exceptions import AuthenticationFailed, PermissionDenied
from .limits import ConnectionLimiter, OutboundPolicy
from .messages import decoder_for
from .pathvars import PathConverters
from .registry import REGISTRY_KEY, current_app
from .security import authenticate, has_session, load_session, origin_allowed, origin_refusal
from .websocket import GenericWebsocket

__all__ = ["build_handler_config", "make_route_handler"]

logger = logging.getLogger("wsframe.websocket")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _handshake_problem(request: web.Request) -> str | None:
    """Return why this upgrade request is malformed, or None when it is a valid handshake."""
    if request.method != hdrs.METH_GET:
        return "A websocket handshake must use GET."
    if request.headers.get(hdrs.SEC_WEBSOCKET_VERSION, "") != "13":
        return "Unsupported Sec-WebSocket-Version; use 13."
    if _KEY.fullmatch(request.headers.get(hdrs.SEC_WEBSOCKET_KEY, "")) is None:
        return "Sec-WebSocket-Key must be 16 bytes, base64-encoded."
    if not request._message.upgrade:
        return "The Connection header must include 'upgrade'."
    extensions = request.headers.get(hdrs.SEC_WEBSOCKET_EXTENSIONS)
    if extensions is not None and _ABSURD_NUMBER.search(extensions):
        # permessage-deflate parameters are 8-15; aiohttp int()s whatever digits
        # it finds, and past 4300 of them that raises out of prepare() (a 500).
        return "Malformed Sec-WebSocket-Extensions."
    return None


def _limit_reached(limiter: ConnectionLimiter, refused: int, address: str) -> str:
    """Say which connection limit refused a handshake from *address*, for the log line."""
    if refused == status.HTTP_429_TOO_MANY_REQUESTS:
        return f"{limiter.max_per_ip} connection(s) from {address} already open (max_connections_per_ip)"
    return f"{limiter.max_connections} connection(s) already open (max_connections)"


_REFUSED = "refused handshake to %s with %d: %s"
"""Every refusal's info line: the path (never the query string, which may hold a token), the status, why."""
_NO_CONVERSION = "a path variable does not convert to the type connect() declares"
_ABSURD_NUMBER = re.compile(r"\d{4,}")
_KEY = re.compile(r"[A-Za-z0-9+/]{22}==")
"""16 bytes in base64: 22 characters and two of padding (one regex call instead of b64decode's several)."""


def build_handler_config(
    handler: type[GenericWebsocket],
    converters: PathConverters,
    app_settings: Settings,
    app_limiter: ConnectionLimiter,
    where: str,
    route: str = "",
) -> HandlerConfig:
    """Merge *handler*'s class attributes over the app settings; ConfigurationError when invalid."""
    overrides = {name: getattr(handler, name, None) for name in OVERRIDABLE}
    settings = app_settings.merged(overrides)
    limiter = app_limiter
    if overrides["max_connections"] is not None or overrides["max_connections_per_ip"] is not None:
        # The class has limits of its own: count its connections apart from the app's.
        limiter = ConnectionLimiter(settings.max_connections, settings.max_connections_per_ip)
    return HandlerConfig(
        settings,
        converters,
        decoder_for(handler.receive, where),
        limiter,
        OutboundPolicy(settings.max_outbound_buffer, settings.slow_consumer),
        settings.max_outbound_buffer,
        handler.disconnect is not GenericWebsocket.disconnect,
        route,
    )


def make_route_handler(cls: type[GenericWebsocket], config: HandlerConfig) -> Handler:
    """Return the aiohttp handler that serves *cls* with *config*.

    The checks run in this order, each with its status:
    426 no upgrade, 400 malformed handshake, 403 origin, 503/429 connection
    limits, 404 path variable, 401/403 auth and permissions.
    """
    settings = config.settings
    converters = config.converters
    limiter = config.limiter
    policy = settings.allowed_origins
    auth, permissions = settings.auth, settings.permissions
    login = auth if isinstance(auth, MessageAuth) else None
    needs_auth = login is None and (auth is not None or bool(permissions))
    has_variables = bool(converters.converters)

    async def handle(request: web.Request) -> web.StreamResponse:
        app = request.app
        current_app.set(app)
        if request.headers.get(hdrs.UPGRADE, "").lower().strip() != "websocket":
            return json_error(
                status.HTTP_426_UPGRADE_REQUIRED,
                "This URL is a websocket endpoint; connect with a websocket client.",
                headers={hdrs.UPGRADE: "websocket", hdrs.CONNECTION: "Upgrade"},
            )
        problem = _handshake_problem(request)
        if problem is not None:
            logger.info(_REFUSED, request.path, status.HTTP_400_BAD_REQUEST, problem)
            app[REGISTRY_KEY].tally.refuse("invalid")
            return json_error(status.HTTP_400_BAD_REQUEST, problem)
        # Most clients that are not browsers send no Origin: no call for them.
        if request.headers.get(hdrs.ORIGIN) is not None and not origin_allowed(request, policy):
            refusal = origin_refusal(request, policy)
            logger.info(_REFUSED, request.path, status.HTTP_403_FORBIDDEN, refusal)
            app[REGISTRY_KEY].tally.refuse("origin")
            return json_error(status.HTTP_403_FORBIDDEN, refusal)
        limited = limiter.active
        if limited:
            address = request.remote or ""
            refused = limiter.admit(address)
            if refused is not None:
                logger.info(_REFUSED, request.path, refused, _limit_reached(limiter, refused, address))
                app[REGISTRY_KEY].tally.refuse("limit" if refused == status.HTTP_503_SERVICE_UNAVAILABLE else "rate")
                return json_error(refused, "Too many connections; try again later.")
        try:
            if has_variables:
                path_variables = converters.convert(request.match_info)
                if path_variables is None:
                    logger.info(_REFUSED, request.path, status.HTTP_404_NOT_FOUND, _NO_CONVERSION)
                    app[REGISTRY_KEY].tally.refuse("not_found")
                    return json_error(status.HTTP_404_NOT_FOUND, "Not found")
            else:
                path_variables = {}
            session = Session(app[REGISTRY_KEY], config)
            connection = cls(request, path_variables, session, app)
            if has_session(request):
                connection.session = await load_session(request)
            if needs_auth:
                try:
                    await authenticate(connection, auth, permissions)
                except AuthenticationFailed as exc:
                    logger.info(_REFUSED, request.path, status.HTTP_401_UNAUTHORIZED, f"authentication failed: {exc}")
                    session.registry.tally.refuse("auth")
                    return json_error(status.HTTP_401_UNAUTHORIZED, "Authentication required.")
                except PermissionDenied as exc:
                    logger.info(_REFUSED, request.path, status.HTTP_403_FORBIDDEN, f"permission denied: {exc}")
                    session.registry.tally.refuse("permission")
                    return json_error(status.HTTP_403_FORBIDDEN, "Permission denied.")
                except Exception:
                    logger.exception("auth or permission check of %s failed", cls.__qualname__)
                    return json_error(status.HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error")
            if login is not None:
                return await serve_after_login(session, connection, login, permissions)
            return await session.serve(connection)
        finally:
            if limited:
                limiter.release(address)

    handle.__qualname__ = handle.__name__ = f"{cls.__qualname__}"
    handle.__module__ = cls.__module__
    return handle
