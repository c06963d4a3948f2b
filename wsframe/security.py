"""Who may open a websocket: origin checks, authentication and permissions.

All of it runs before the upgrade, so a refused client gets a plain HTTP
status (403 origin, 401 authentication, 403 permission) and never a socket.
"""

from __future__ import annotations

import fnmatch
import logging
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import hdrs, web
from aiohttp_session import STORAGE_KEY, get_session
from yarl import URL

from ._redact import add_sensitive
from .config import validate_origin_policy
from .credentials import attach_expiry, checked
from .exceptions import AuthenticationFailed, PermissionDenied
from .types import Auth, Handshake, OriginPolicy, Permission

__all__ = [
    "Auth",
    "Permission",
    "OriginPolicy",
    "TokenAuth",
    "SessionAuth",
    "origin_allowed",
    "origin_refusal",
    "same_origin",
    "authenticate",
    "has_session",
    "load_session",
    "validate_origin_policy",
]

logger = logging.getLogger("wsframe.security")


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
"""Names of this machine: a page served from one of them on a port is the same site as the others on that port."""


def _host_and_port(url: URL) -> tuple[str, int | None]:
    host = (url.host or "").lower().rstrip(".")
    return host, url.port


def same_origin(origin: str, host: str) -> bool:
    """Return whether the *origin* header names the same site as the request's *host* header.

    Same scheme-less host and port, compared like for like (an omitted port
    is the scheme's default). ``localhost``, ``127.0.0.1`` and ``[::1]`` are
    one name when both sides use one of them: a browser only sends a loopback
    Origin for a page it loaded from this machine, so a page cannot claim one
    from elsewhere. Never raises: a malformed value is simply not the same origin.
    """
    lowered, host = origin.lower(), host.lower()
    if lowered == "http://" + host or lowered == "https://" + host:
        return True  # the common case, without parsing either side
    try:
        url = URL(origin)
        # Host has no scheme; borrow the origin's so an omitted port means the same default.
        request = URL(f"{url.scheme}://{host}") if url.scheme in ("http", "https") else None
    except ValueError:
        return False
    if request is None or not url.host or not request.host:
        return False
    origin_host, origin_port = _host_and_port(url)
    request_host, request_port = _host_and_port(request)
    if origin_port != request_port:
        return False
    if origin_host in _LOOPBACK and request_host in _LOOPBACK:
        return True
    return origin_host == request_host


def _same_host(origin: str, request: web.Request) -> bool:
    return same_origin(origin, request.host)


def origin_refusal(request: web.Request, policy: OriginPolicy) -> str:
    """Say which Origin was refused and which setting allows it: the 403's detail and the log line."""
    origin = request.headers.get(hdrs.ORIGIN)
    if policy is None:
        why = f"for Host {request.host!r}: by default only pages from the same host and port may connect"
        fix = f"allowed_origins=[{origin!r}]"
    else:
        why = "by this endpoint's allowed_origins"
        fix = f"{origin!r} in allowed_origins"
    return f"Origin {origin!r} not allowed {why}. Allow it with {fix} in create_app() or on the handler class."


def origin_allowed(request: web.Request, policy: OriginPolicy) -> bool:
    """Return whether the handshake's Origin header passes *policy*.

    No Origin header is allowed (non-browser clients send none; browsers
    always do, so cross-site pages are still stopped). With the default
    policy (None) the Origin must be :func:`same_origin` as the Host.
    """
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or policy == "*":
        return True
    if policy is None:
        return _same_host(origin, request)
    lowered = origin.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in policy)


async def authenticate(connection: Handshake, auth: Auth | None, permissions: Sequence[Permission]) -> None:
    """Run *auth* then each permission in order; raise AuthenticationFailed or PermissionDenied."""
    if auth is not None:
        connection.user = await auth(connection)
    for permission in permissions:
        if not await permission(connection):
            raise PermissionDenied(f"{getattr(permission, '__qualname__', permission)!s} denied the connection")


def has_session(request: web.Request) -> bool:
    """Return whether aiohttp-session's middleware ran for *request*.

    ``request.get(key)`` goes through ``Mapping.get``, which raises and catches
    a KeyError when the key is missing: the usual case, on every handshake.
    aiohttp keeps the request's items in ``_state``; use it when it is there.
    """
    state = getattr(request, "_state", None)
    if type(state) is dict:
        return state.get(STORAGE_KEY) is not None
    return request.get(STORAGE_KEY) is not None


async def load_session(request: web.Request) -> Mapping[str, Any] | None:
    """Return a read-only copy of the aiohttp-session session, or None without session_middleware.

    Read-only on purpose: aiohttp-session saves a session by setting a cookie
    on the response, and a websocket's response (the 101) has been sent
    before any handler code could change the session.
    """
    if not has_session(request):
        return None
    session = await get_session(request)
    return types.MappingProxyType(dict(session))


class TokenAuth:
    """Authenticate by a token from a header, a query parameter or a cookie, in that order.

    *verify* (sync or async) takes the token and returns the user, a
    :class:`~wsframe.credentials.Expiring` (the user and when the token
    expires: then the connection closes with 4410 unless the client refreshes
    it), or None to refuse. Browsers' WebSocket API cannot set headers, so a
    page sends the token as ``?token=...`` or in a cookie; *query_param* is
    always printed ``token=***`` in the access log. To keep tokens out of URLs
    altogether use :class:`~wsframe.credentials.MessageAuth`. Refusal: 401.
    """

    def __init__(
        self,
        verify: Callable[[str], Any],
        *,
        header: str | None = "Authorization",
        scheme: str | None = "Bearer",
        query_param: str | None = "token",
        cookie: str | None = None,
    ) -> None:
        self.verify = verify
        self.header, self.scheme, self.query_param, self.cookie = header, scheme, query_param, cookie
        if query_param:
            add_sensitive([query_param])

    def token(self, connection: Handshake) -> str | None:
        """The token the client sent, or None."""
        if self.header and (value := connection.headers.get(self.header)):
            if not self.scheme:
                return value
            kind, _, token = value.partition(" ")
            if kind.lower() == self.scheme.lower() and token:
                return token.strip()
        if self.query_param and (value := connection.query_params.get(self.query_param)):
            return value
        if self.cookie and (value := connection.cookies.get(self.cookie)):
            return value
        return None

    async def __call__(self, connection: Handshake) -> Any:
        token = self.token(connection)
        if token is None:
            raise AuthenticationFailed("no token in the request")
        user, expires_at = await checked(self.verify, token)
        if expires_at is not None:
            attach_expiry(connection, self.verify, expires_at)
        return user


class SessionAuth:
    """Authenticate by the aiohttp-session session: the user is ``session[key]``.

    Needs aiohttp-session's ``session_middleware`` on the app (in
    ``create_app(middlewares=[...])``); without it every handshake is refused
    and the log says why.
    """

    def __init__(self, key: str = "user") -> None:
        self.key = key

    async def __call__(self, connection: Handshake) -> Any:
        session = connection.session
        if session is None:
            logger.error("SessionAuth needs aiohttp_session.session_middleware in create_app(middlewares=[...])")
            raise AuthenticationFailed("no session middleware")
        user = session.get(self.key)
        if user is None:
            raise AuthenticationFailed(f"no {self.key!r} in the session")
        return user
