"""``GenericWebsocket``, the class a websocket handler subclasses, and sending by id.

A handler instance lives for one connection::

    class BookWebsocket(GenericWebsocket):
        async def connect(self):
            await self.accept()

        async def receive(self, data: str | bytes):
            await self.send(data=data)

The handler holds the user's hooks and the handshake's attributes; everything
the framework keeps per connection lives in one private attribute,
``_connection`` (a :class:`wsframe._session.Session`), so a subclass's own
attributes cannot clobber it. The receive loop and the rest of the driver are
in :mod:`wsframe._session`; writes, close and abort in :mod:`wsframe._connection`.
"""

from __future__ import annotations

import functools
from collections.abc import Coroutine, Mapping
from typing import Any, ClassVar, Literal

from aiohttp import web
from multidict import CIMultiDictProxy

from . import status
from ._connection import State
from ._session import Session
from .codec import build_frame, encode_frame
from .exceptions import WsframeError
from .history import Joined, Position
from .messages import describe_error
from .registry import get_registry
from .types import Auth, OriginPolicy, Permission

__all__ = [
    "GenericWebsocket",
    "send_message_to_websocket",
    "close_websocket_connection",
]

_CONNECTING, _OPEN = State.CONNECTING, State.OPEN
_JOINED = Joined(True)


class GenericWebsocket:
    """Base class of websocket handlers: one instance per connection.

    Override :meth:`connect`, :meth:`receive` and :meth:`disconnect`. These
    class attributes override the app's settings of the same name for this
    handler (``None``: as the app): ``max_message_size``, ``heartbeat``,
    ``compression``, ``close_timeout``, ``max_outbound_buffer``,
    ``slow_consumer``, ``handshake_timeout``, ``idle_timeout``, ``rate_limit``,
    ``max_connections``, ``max_connections_per_ip``, ``allowed_origins``,
    ``auth``, ``permissions`` and ``redact_query_params``. ``send_type`` declares what :meth:`send` is
    called with (a msgspec Struct, a union of them, or any type msgspec can
    describe); it changes nothing at run time and only feeds the AsyncAPI
    document (:mod:`wsframe.asyncapi`).

    Do not override ``__init__``; set up per-connection state in :meth:`connect`.
    """

    max_message_size: ClassVar[int | None] = None
    heartbeat: ClassVar[float | None] = None
    compression: ClassVar[bool | None] = None
    close_timeout: ClassVar[float | None] = None
    max_outbound_buffer: ClassVar[int | None] = None
    slow_consumer: ClassVar[Literal["close", "drop"] | None] = None
    handshake_timeout: ClassVar[float | None] = None
    idle_timeout: ClassVar[float | None] = None
    rate_limit: ClassVar[float | None] = None
    max_connections: ClassVar[int | None] = None
    max_connections_per_ip: ClassVar[int | None] = None
    allowed_origins: ClassVar[OriginPolicy] = None
    auth: ClassVar[Auth | None] = None
    permissions: ClassVar[tuple[Permission, ...] | None] = None
    redact_query_params: ClassVar[tuple[str, ...] | None] = None
    send_type: ClassVar[Any] = None

    user: Any = None
    """What ``auth`` returned (None without auth)."""
    session: Mapping[str, Any] | None = None
    """A read-only copy of the aiohttp-session session at the handshake (None without
    session_middleware). Read-only because the handshake's response is already sent
    when a handler runs, so a change could never be saved."""

    request: web.Request
    """The aiohttp request of the handshake (multi-valued query, remote address, ...)."""
    app: web.Application
    """The application serving this connection."""
    connection_id: str
    """32 hex characters: unguessable, and says which process owns the connection."""
    path_variables: dict[str, Any]
    """The path variables, converted by ``connect()``'s type hints."""

    def __init__(
        self, request: web.Request, path_variables: dict[str, Any], connection: Session, app: web.Application
    ) -> None:
        # Called by wsframe (handshake.make_route_handler), never by users.
        self.request = request
        self.app = app
        self._connection = connection
        self.connection_id = connection.connection_id
        self.path_variables = path_variables

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The handshake's headers, case-insensitive."""
        return self.request.headers

    @functools.cached_property
    def query_params(self) -> dict[str, str]:
        """The handshake's query string; for a repeated name the last value wins."""
        # Last value wins; dict(MultiDict) would keep the first. Cached in the
        # instance's own dict, so a connection that never asks pays nothing.
        return {key: value for key, value in self.request.query.items()}

    @property
    def cookies(self) -> Mapping[str, str]:
        """The handshake's cookies."""
        return self.request.cookies

    @property
    def dropped_messages(self) -> int:
        """Messages dropped because this client read too slowly (``slow_consumer='drop'``)."""
        return self._connection.dropped_messages

    # ----------------------------------------------------------------- hooks

    # `*args, **kwargs: Any` lets subclasses declare `connect(self, user_id: int)`
    # and `receive(self, data: MyStruct)` without mypy calling it a bad override.
    async def connect(self, *args: Any, **path_variables: Any) -> None:
        """Override to check the handshake and call :meth:`accept` (or not).

        Path variables arrive as keyword arguments converted by this method's
        type hints. Returning without :meth:`accept` rejects the handshake
        with HTTP 403; an exception before accept answers 500, after accept
        closes with 1011. The default accepts every connection.
        """
        await self.accept()

    async def receive(self, data: Any) -> None:
        """Override to handle one message: ``str`` for a text frame, ``bytes`` for binary.

        Annotate *data* with a msgspec Struct (or a union of them, a TypedDict,
        dict, list ...) to receive decoded, validated JSON instead; a frame that
        does not fit calls :meth:`on_invalid_message`. Messages are handled one
        at a time, in order. An exception closes the connection with 1011
        (logged with its traceback; the client only sees the code).
        """

    async def on_invalid_message(self, error: Exception) -> None:
        """Override to handle a frame that does not decode into ``receive()``'s type.

        *error* is msgspec's ``ValidationError`` (its text names the field, e.g.
        ``Expected `int`, got `str` - at `$.count```) or ``DecodeError``. The
        default closes with 1007 and that text as the reason (cut to 123 bytes).
        """
        await self.close(status.WS_1007_INVALID_FRAME_PAYLOAD_DATA, describe_error(error))

    async def disconnect(self, code: int) -> None:
        """Override to clean up after the connection ended.

        Runs exactly once for every accepted connection, after it has left the
        registry, whoever closed it. *code* is the close code: the client's
        when it closed, ours when we did, 1006 when the TCP connection dropped
        without a close frame. Exceptions are logged and otherwise ignored.
        """

    # --------------------------------------------------------------- actions

    def accept(
        self, subprotocol: str | None = None, headers: Mapping[str, str] | None = None
    ) -> Coroutine[Any, Any, None]:
        """Complete the handshake (HTTP 101) and make the connection reachable by id: ``await self.accept()``.

        *subprotocol* is sent back in ``Sec-WebSocket-Protocol`` when the client
        offered it; *headers* are added to the 101 response.
        Raises :class:`ConnectionClosed` after :meth:`close`, and
        :class:`~wsframe.exceptions.WsframeError` when called twice.
        Nothing happens until the result is awaited, as with an ``async def``.
        """
        # Returns the session's coroutine instead of awaiting it in one of its
        # own: a coroutine less on every handshake (about 0.5% of an open+close
        # in instructions). A subclass may still override it with ``async def``.
        return self._connection.accept(self.request, subprotocol, headers)

    async def send(self, data: Any = None) -> None:
        """Send *data*: ``str`` as text, bytes-like as binary, anything else (None too) as msgspec JSON text.

        ``send()`` with no argument sends JSON ``null``.

        Returns once the frame is handed to the transport. Raises
        :class:`ConnectionClosed` (with the close code) when the connection is
        closed or closing, ``TypeError`` when *data* cannot be encoded (nothing
        is sent), and :class:`~wsframe.exceptions.WsframeError` before accept.
        On cancellation the frame may or may not have been written.
        """
        payload, opcode = encode_frame(data)
        connection = self._connection
        if connection.compressed:
            await connection.send_frame(payload, opcode)
        else:
            connection.write_frame(build_frame(payload, opcode))

    async def close(self, code: int = status.WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection with *code* and *reason* (cut to 123 bytes).

        The first close wins: later calls, and calls after the peer closed,
        return at once. Before :meth:`accept`, the handshake is completed and
        then closed, so the client sees the code. Waits for the peer's close
        frame up to ``close_timeout``, then drops the TCP connection. Raises
        ``ValueError`` for a code that may not be sent (1005, 1006, 1015, < 1000,
        >= 5000, unassigned 1xxx/2xxx).
        """
        await self._connection.close(code, reason)

    @property
    def groups(self) -> frozenset[str]:
        """The groups this connection is a member of."""
        return frozenset(self._connection.groups or ())

    async def join_group(self, group: str, *, since: Position | None = None) -> Joined:
        """Add this connection to *group*: it then receives every group send, on any worker.

        For a group with history (``create_app(history=...)``), *since* is the
        ``(epoch, offset)`` the client saw last: every message after it is
        sent, in order, before this returns, and live messages follow with no
        gap and no duplicate. The result says whether that worked:
        ``recovered`` is False when history no longer covers *since* (then
        nothing was replayed); ``epoch`` and ``offset`` are the group's
        position after the replay. For a group without history *since* is
        ignored and the result is ``Joined(recovered=True)`` with ``epoch``
        and ``offset`` None.

        Joining twice is harmless (nothing is replayed the second time).
        Membership ends by :meth:`leave_group` or, whatever closed the
        connection, before :meth:`disconnect` runs. Raises
        :class:`~wsframe.exceptions.InvalidGroupNameError` for a bad name,
        :class:`~wsframe.exceptions.WsframeError` before accept, and
        :class:`~wsframe.exceptions.BackendUnavailableError` when the backend
        (or its history) is down: the connection is then not a member.
        ``TypeError`` for a *since* that is not ``(str, int)``. Cancelled while
        it replays: the join completes.
        """
        connection = self._connection
        if connection.state is not _OPEN:
            if connection.state is _CONNECTING:
                raise WsframeError("Call accept() before join_group(): only open connections can be members.")
            raise connection.closed_error()
        registry = connection.registry
        if registry.history:
            return await registry.join_group_since(connection, group, since)
        if registry.tracks_members:
            await registry.join_group(connection, group)
        else:
            registry.join_group_here(connection, group)  # no coroutine to await, on every connect
        return _JOINED

    async def leave_group(self, group: str) -> None:
        """Remove this connection from *group*; leaving a group it is not in is harmless."""
        await self._connection.registry.leave_group(self._connection, group)


async def send_message_to_websocket(connection_id: str, data: Any, *, app: web.Application | None = None) -> None:
    """Send *data* to the connection *connection_id*, in this process or any other.

    Encoding is as :meth:`GenericWebsocket.send`. An unknown or already-closed
    id is not an error: nothing is sent (logged at debug level). Raises
    ``TypeError`` when *data* cannot be encoded,
    :class:`~wsframe.exceptions.BackendUnavailableError` when the id lives in
    another process and the backend is down, and
    :class:`~wsframe.exceptions.ApplicationNotFoundError` when called outside a
    request with several apps running (pass ``app=``).
    """
    await get_registry(app).send(connection_id, data)


async def close_websocket_connection(
    connection_id: str,
    code: int = status.WS_1000_NORMAL_CLOSURE,
    reason: str = "",
    *,
    app: web.Application | None = None,
) -> None:
    """Close the connection *connection_id* with *code* and *reason*, wherever it lives.

    For a connection in this process, returns when the closing handshake is
    done (or timed out). An unknown or already-closed id is not an error.
    Raises ``ValueError`` for a code that may not be sent, and the errors of
    :func:`send_message_to_websocket`.
    """
    status.check_close_code(code)
    await get_registry(app).close(connection_id, code, reason)
