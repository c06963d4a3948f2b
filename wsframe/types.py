"""What auth, permission and origin-policy callables are given and return.

An ``auth`` or ``permission`` callable receives a :class:`Handshake`: the
request-shaped view of a websocket handshake (headers, query parameters,
path variables, cookies, the session, the client address), the way
Starlette's authentication takes an ``HTTPConnection``. Every
:class:`~wsframe.GenericWebsocket` is one, so a callable can also be written
against a handler class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

from aiohttp import web
from multidict import CIMultiDictProxy

__all__ = ["Handshake", "Auth", "Permission", "OriginPolicy"]


class Handshake(Protocol):
    """The handshake of one websocket connection, as auth and permission callables see it."""

    request: web.Request
    """The aiohttp request of the handshake (``request.remote`` is the client address)."""
    path_variables: dict[str, Any]
    """The path variables, converted by the handler's ``connect()`` type hints."""
    session: Mapping[str, Any] | None
    """A read-only copy of the aiohttp-session session, or None without session_middleware."""
    user: Any
    """What ``auth`` returned: set before the permissions run, so they can read it."""

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The handshake's headers, case-insensitive."""
        ...

    @property
    def query_params(self) -> dict[str, str]:
        """The handshake's query string; for a repeated name the last value wins."""
        ...

    @property
    def cookies(self) -> Mapping[str, str]:
        """The handshake's cookies."""
        ...


Auth = Callable[[Any], Awaitable[Any]]
"""``async def auth(connection: Handshake) -> user``; raises AuthenticationFailed to refuse (401).

Typed on ``Any`` rather than :class:`Handshake` so that an auth written for one
handler class (``async def auth(ws: ChatWebsocket)``) still fits the setting.
"""
Permission = Callable[[Any], Awaitable[bool]]
"""``async def permission(connection: Handshake) -> bool``; False or PermissionDenied refuses (403)."""
OriginPolicy = Sequence[str] | Literal["*"] | None
"""None: same host only; ``'*'``: any origin; a list: origins or fnmatch patterns (``https://*.example.com``)."""
