"""Credentials over an open socket: first-message login, tokens that expire, refresh.

Three pieces, all optional:

- :class:`MessageAuth` as ``auth``: the handshake completes without a token
  (nothing secret in the URL, so nothing in any log), then the client has
  ``timeout`` seconds to send ``{"type": "auth", "token": "..."}``. wsframe checks it
  with ``verify`` and only then runs the permissions and ``connect()``, with
  ``self.user`` set. A wrong token closes with :data:`WS_4401_INVALID_TOKEN`,
  silence with :data:`WS_4408_LOGIN_TIMEOUT`, a refused permission with
  :data:`WS_4403_PERMISSION_DENIED`; ``connect()`` and ``disconnect()`` never run for them.
- :class:`Expiring` as what ``verify`` returns (from :class:`MessageAuth` or
  :class:`~wsframe.security.TokenAuth`): the user and when the token expires. At
  that time the connection is closed with :data:`WS_4410_TOKEN_EXPIRED`...
- ...unless the client sent a new token first, in the same ``{"type": "auth",
  "token": "..."}`` message: wsframe checks it with the same ``verify`` and
  handles it before ``receive()`` could see it; ``self.user`` becomes what it
  returned (a new :class:`Expiring` sets the new expiry, a plain user ends it).
  A refresh that ``verify`` refuses closes with :data:`WS_4401_INVALID_TOKEN`.

Connections whose ``verify`` gave no expiry, under any other ``auth``, pay
nothing per message for any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import msgspec
from aiohttp import ClientConnectionResetError, WSMsgType, web

from .exceptions import AuthenticationFailed, PermissionDenied
from .types import Permission

__all__ = [
    "Expiring",
    "MessageAuth",
    "Credentials",
    "AuthMessage",
    "WS_4401_INVALID_TOKEN",
    "WS_4403_PERMISSION_DENIED",
    "WS_4408_LOGIN_TIMEOUT",
    "WS_4410_TOKEN_EXPIRED",
    "attach_expiry",
    "checked",
    "serve_after_login",
]

logger = logging.getLogger("wsframe.websocket")

WS_4401_INVALID_TOKEN = 4401
"""Close code: the login or refresh message was missing its token, malformed, or ``verify`` refused it."""
WS_4403_PERMISSION_DENIED = 4403
"""Close code: after a first-message login, a permission refused the user."""
WS_4408_LOGIN_TIMEOUT = 4408
"""Close code: no login message within :attr:`MessageAuth.timeout` seconds."""
WS_4410_TOKEN_EXPIRED = 4410
"""Close code: the token's expiry passed without a refresh."""


@dataclasses.dataclass(frozen=True, slots=True)
class Expiring:
    """What ``verify`` returns for a token that expires: the user and the expiry.

    *expires_at* is a Unix time in seconds (``time.time()``'s clock, as a JWT's
    ``exp``). An expiry already past refuses the token.
    """

    user: Any
    expires_at: float


class AuthMessage(msgspec.Struct, forbid_unknown_fields=False):
    """The login and refresh message: ``{"type": "auth", "token": "..."}`` (other fields are ignored)."""

    type: Literal["auth"]
    token: str


_decode_auth = msgspec.json.Decoder(AuthMessage).decode


class _Spawner(Protocol):
    def spawn(self, coro: Any) -> None: ...


class Session(Protocol):
    """What this module needs of a :class:`wsframe._session.Session` (which imports this module)."""

    connection_id: str
    credentials: Credentials | None

    @property
    def registry(self) -> _Spawner: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...
    def make_response(self, subprotocol: str | None) -> web.WebSocketResponse: ...
    def adopt(self, ws: web.WebSocketResponse, request: web.Request) -> None: ...
    async def serve(self, handler: Any) -> web.StreamResponse: ...


async def checked(verify: Callable[[str], Any], token: str) -> tuple[Any, float | None]:
    """Call *verify* (sync or async) and return ``(user, expires_at or None)``.

    Raises :class:`AuthenticationFailed` when it returns None or an
    :class:`Expiring` already past; its own exceptions propagate.
    """
    result = verify(token)
    if inspect.isawaitable(result):
        result = await result
    if result is None:
        raise AuthenticationFailed("invalid token")
    if isinstance(result, Expiring):
        if result.user is None or result.expires_at <= time.time():
            raise AuthenticationFailed("expired token")
        return result.user, result.expires_at
    return result, None


class Credentials:
    """One connection's token state: its expiry timer and how to check a refresh (kept on the Session)."""

    __slots__ = ("expires_at", "first_message", "handler", "timer", "verify")

    def __init__(
        self, verify: Callable[[str], Any], expires_at: float | None, handler: Any, *, first_message: bool = False
    ) -> None:
        self.verify = verify
        self.expires_at = expires_at
        self.handler = handler
        self.timer: asyncio.TimerHandle | None = None
        self.first_message = first_message
        """The connection was opened by the login before connect(): its accept() is a no-op."""

    def arm(self, session: Session) -> None:
        """Start (or restart) the expiry timer; called once the connection is open."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.expires_at is not None:
            delay = max(0.0, self.expires_at - time.time())
            self.timer = asyncio.get_running_loop().call_later(delay, self._expire, session)

    @staticmethod
    def _expire(session: Session) -> None:
        session.registry.spawn(session.close(WS_4410_TOKEN_EXPIRED, "Token expired"))

    async def refresh(self, session: Session, data: str | bytes) -> bool:
        """Handle *data* when it is an auth message (True: receive() must not see it), else return False.

        A valid token replaces ``self.user`` and the expiry; an invalid one
        closes with 4401. An exception from ``verify`` closes with 1011 (logged).
        """
        marker: str | bytes = b'"auth"' if isinstance(data, bytes) else '"auth"'
        if marker not in data:  # type: ignore[operator]  # bytes in bytes, str in str
            return False
        try:
            message = _decode_auth(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return False  # an application message that mentions "auth"
        try:
            user, expires_at = await checked(self.verify, message.token)
        except AuthenticationFailed as exc:
            logger.info("token refresh refused on %s: %s", session.connection_id, exc)
            await session.close(WS_4401_INVALID_TOKEN, "Invalid token")
            return True
        except Exception:
            logger.exception("verify() failed on a token refresh")
            await session.close(1011, "Internal server error")
            return True
        self.handler.user = user
        self.expires_at = expires_at
        self.arm(session)
        return True

    def end(self) -> None:
        """Stop the timer and drop the handler: the connection is finished."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.handler = None


def attach_expiry(connection: Any, verify: Callable[[str], Any], expires_at: float) -> None:
    """Give the connection being authenticated an expiry (for an auth that ran in the handshake)."""
    session = getattr(connection, "_connection", None)
    if session is not None and hasattr(session, "credentials"):
        session.credentials = Credentials(verify, expires_at, connection)


class MessageAuth:
    """``auth`` by a first message: ``{"type": "auth", "token": "..."}`` within *timeout* seconds.

    *verify* (sync or async) takes the token and returns the user, an
    :class:`Expiring`, or None to refuse. The handshake completes first, with
    no subprotocol (``accept()`` in ``connect()`` is then a no-op, and raises
    WsframeError if given a subprotocol or headers). Refusals are close codes,
    not HTTP statuses: 4401 wrong or malformed, 4408 silent, 4403 a permission
    refused; an exception from ``verify`` or a permission closes with 1011
    (logged). None of them runs ``connect()`` or ``disconnect()``.
    """

    def __init__(self, verify: Callable[[str], Any], *, timeout: float = 5.0) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.verify = verify
        self.timeout = timeout

    async def __call__(self, connection: Any) -> Any:
        """Not called in a handshake: wsframe runs the login after it. Raises AuthenticationFailed."""
        raise AuthenticationFailed("MessageAuth logs in by the first message, not in the handshake")


async def _first_message(ws: web.WebSocketResponse, within: float) -> str | bytes | None:
    """The first data message within *within* seconds (pings answered), or None on timeout or a close."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        try:
            msg = await ws.receive(remaining)
        except TimeoutError:
            return None
        if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
            data: str | bytes = msg.data
            return data
        if msg.type is WSMsgType.PING:
            await ws.pong(msg.data)
            continue
        if msg.type is WSMsgType.PONG:
            continue
        raise ConnectionError("closed before logging in")


async def serve_after_login(
    session: Session, handler: Any, auth: MessageAuth, permissions: Sequence[Permission]
) -> web.StreamResponse:
    """Complete the handshake, wait for the login message, then run the connection as usual.

    The connection is registered (reachable by id, in shutdown's count) only
    after a good login. Cancellation before that drops the socket.
    """
    request = handler.request
    ws = session.make_response(None)
    try:
        await ws.prepare(request)
    except (ClientConnectionResetError, ConnectionResetError):
        return ws
    code, reason = 0, ""
    try:
        data = await _first_message(ws, auth.timeout)
        if data is None:
            code, reason = WS_4408_LOGIN_TIMEOUT, "Login timeout"
        else:
            try:
                token = _decode_auth(data).token
            except (msgspec.ValidationError, msgspec.DecodeError):
                code, reason = WS_4401_INVALID_TOKEN, 'Expected {"type": "auth", "token": "..."}'
            else:
                user, expires_at = await checked(auth.verify, token)
                handler.user = user
                for permission in permissions:
                    if not await permission(handler):
                        raise PermissionDenied(f"{getattr(permission, '__qualname__', permission)!s} denied")
                session.credentials = Credentials(auth.verify, expires_at, handler, first_message=True)
    except AuthenticationFailed as exc:
        logger.info("login failed for %s: %s", request.path, exc)
        code, reason = WS_4401_INVALID_TOKEN, "Invalid token"
    except PermissionDenied as exc:
        logger.info("permission denied for %s: %s", request.path, exc)
        code, reason = WS_4403_PERMISSION_DENIED, "Permission denied"
    except (ConnectionError, ClientConnectionResetError):
        # The client closed or vanished before logging in: answer its close frame if it can still read.
        with contextlib.suppress(ClientConnectionResetError, ConnectionResetError):
            await ws.close(drain=False)
        return ws
    except Exception:
        logger.exception("login check of %s failed", type(handler).__qualname__)
        code, reason = 1011, "Internal server error"
    if code:
        with contextlib.suppress(ClientConnectionResetError, ConnectionResetError):
            await ws.close(code=code, message=reason.encode())
        return ws
    session.adopt(ws, request)
    return await session.serve(handler)
