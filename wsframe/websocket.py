"""``GenericWebsocket``, the class a websocket handler subclasses, and sending by id.

A handler instance lives for one connection::

    class BookWebsocket(GenericWebsocket):
        async def connect(self):
            await self.accept()

        async def receive(self, data: str | bytes):
            await self.send(data=data)

See DESIGN.md section 2 for the flow and section 4 for every close code.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import msgspec
from aiohttp import ClientConnectionResetError, WSMsgType, web
from multidict import CIMultiDictProxy

from . import status
from .codec import build_close_frame, build_frame, encode_frame
from .exceptions import ConnectionClosed, WsframeError
from .messages import describe_error
from .registry import REGISTRY_KEY, get_registry
from .types import Auth, OriginPolicy, Permission

if TYPE_CHECKING:
    from .handshake import HandlerConfig

__all__ = [
    "GenericWebsocket",
    "send_message_to_websocket",
    "close_websocket_connection",
]

logger = logging.getLogger("wsframe.websocket")


def _not_a_subprotocol_mismatch(record: logging.LogRecord) -> bool:
    # aiohttp warns on every handshake whose offered subprotocols the server
    # does not pick: a client could flood the log with them. Declining a
    # subprotocol is a normal outcome (RFC 6455 4.2.2), not a warning.
    return not (isinstance(record.msg, str) and record.msg.startswith("%s: Client protocols"))


logging.getLogger("aiohttp.websocket").addFilter(_not_a_subprotocol_mismatch)

_NO_DRAIN = 1 << 62

_FAIR_SHARE = 16
"""Messages one connection handles in a row before letting the others run."""

MAX_REASON_BYTES = 123
"""A close frame's reason must fit in 123 bytes (RFC 6455 section 5.5)."""


_SLOW_CONSUMER = "Slow consumer"


def _abort_transport(transport: asyncio.Transport) -> None:
    transport.abort()  # harmless when it has closed by itself meanwhile


class _State(enum.Enum):
    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# Module globals: one lookup instead of two on the per-message path.
_CONNECTING, _OPEN, _CLOSING, _CLOSED = _State.CONNECTING, _State.OPEN, _State.CLOSING, _State.CLOSED
# Likewise for message types: on Python 3.11, WSMsgType.CLOSE (an attribute of
# an enum class) takes about 100 ns; a module global, 7 ns.
_TEXT, _BINARY, _PING, _PONG = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG
_CLOSE, _ERROR, _CLOSED_MSG = WSMsgType.CLOSE, WSMsgType.ERROR, WSMsgType.CLOSED


def truncate_reason(reason: str) -> bytes:
    """Encode *reason* as UTF-8, cut to 123 bytes without splitting a character."""
    raw = reason.encode()
    if len(raw) <= MAX_REASON_BYTES:
        return raw
    return raw[:MAX_REASON_BYTES].decode(errors="ignore").encode()


def _json_error(status_code: int, detail: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status_code, headers=headers)


def _utf8_size(data: str | bytes, limit: int) -> int:
    """Size of *data* in bytes, without encoding a str that cannot exceed *limit*."""
    if isinstance(data, bytes) or len(data) * 4 <= limit:
        return len(data)
    return len(data.encode())


class _WebSocketResponse(web.WebSocketResponse):
    """aiohttp's response, failing a connection whose compressed data is corrupt with 1007, not 1000."""

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        # receive() calls close() without a code after a non-protocol error in the
        # reader; the only such error a peer can cause is a zlib decompression error.
        if code == status.WS_1000_NORMAL_CLOSURE and isinstance(self.exception(), zlib.error):
            code = status.WS_1007_INVALID_FRAME_PAYLOAD_DATA
        return await super().close(code=code, message=message, drain=drain)


class GenericWebsocket:
    """Base class of websocket handlers: one instance per connection.

    Override :meth:`connect`, :meth:`receive` and :meth:`disconnect`. These
    class attributes override the app's settings of the same name for this
    handler (``None``: as the app): ``max_message_size``, ``heartbeat``,
    ``compression``, ``close_timeout``, ``max_outbound_buffer``,
    ``slow_consumer``, ``handshake_timeout``, ``idle_timeout``, ``rate_limit``,
    ``max_connections``, ``max_connections_per_ip``, ``allowed_origins``,
    ``auth`` and ``permissions``.

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

    # Per-connection state that most connections never need lives in class
    # defaults until first use: every byte here is multiplied by the number of
    # open connections.
    _ws: web.WebSocketResponse | None = None
    _transport: asyncio.Transport | None = None
    _close_code: int | None = None
    _close_reason: str = ""
    _closing_done: asyncio.Future[None] | None = None
    _disconnected: bool = False
    _groups: set[str] | None = None
    _query_params: dict[str, str] | None = None
    _handshake_expiry: asyncio.TimerHandle | None = None
    _handshake_expired: bool = False
    _compressed: bool = False
    """Whether permessage-deflate was negotiated: frames then go through aiohttp's writer."""

    def __init__(
        self, request: web.Request, path_variables: dict[str, Any], config: HandlerConfig, app: web.Application
    ) -> None:
        self._config = config
        self.request = request
        self.app = app
        self._registry = registry = app[REGISTRY_KEY]
        self.connection_id = registry.new_connection_id()
        self.path_variables = path_variables
        self._state = _CONNECTING

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The handshake's headers, case-insensitive."""
        return self.request.headers

    @property
    def query_params(self) -> dict[str, str]:
        """The handshake's query string; for a repeated name the last value wins."""
        params = self._query_params
        if params is None:
            # Last value wins (DESIGN.md); dict(MultiDict) would keep the first.
            params = self._query_params = {key: value for key, value in self.request.query.items()}
        return params

    @property
    def cookies(self) -> Mapping[str, str]:
        """The handshake's cookies."""
        return self.request.cookies

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

    async def accept(self, subprotocol: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        """Complete the handshake (HTTP 101) and make the connection reachable by id.

        *subprotocol* is sent back in ``Sec-WebSocket-Protocol`` when the client
        offered it; *headers* are added to the 101 response.
        Raises :class:`ConnectionClosed` after :meth:`close`, and
        :class:`~wsframe.exceptions.WsframeError` when called twice.
        """
        if self._state is not _CONNECTING:
            if self._ws is not None and self._state is _OPEN:
                raise WsframeError("accept() was already called for this connection")
            raise ConnectionClosed(self._close_code or status.WS_1006_ABNORMAL_CLOSURE, self._close_reason)
        ws = self._make_response(subprotocol)
        if headers:
            ws.headers.update(headers)
        try:
            await ws.prepare(self.request)
        except (ClientConnectionResetError, ConnectionResetError):
            # The client left mid-handshake: routine on busy servers, not a crash.
            self._state = _CLOSED
            self._close_code = status.WS_1006_ABNORMAL_CLOSURE
            raise ConnectionClosed(status.WS_1006_ABNORMAL_CLOSURE) from None
        self._ws = ws
        self._transport = self.request.transport
        if self._config.settings.compression and ws.compress:
            self._compressed = True
        self._state = _OPEN
        registry = self._registry
        registry.add(self)
        if self._handshake_expiry is not None:
            self._end_handshake_timer()
        if registry.shutting_down:
            # Shutdown has already told every connection it knew of to go; this
            # one finished its handshake since, so it goes the same way.
            registry.spawn(self.close(status.WS_1001_GOING_AWAY, "Server shutdown"))

    async def send(self, data: Any) -> None:
        """Send *data*: ``str`` as text, bytes-like as binary, anything else as msgspec JSON text.

        Returns once the frame is handed to the transport. Raises
        :class:`ConnectionClosed` (with the close code) when the connection is
        closed or closing, ``TypeError`` when *data* cannot be encoded (nothing
        is sent), and :class:`~wsframe.exceptions.WsframeError` before accept.
        On cancellation the frame may or may not have been written.
        """
        payload, opcode = encode_frame(data)
        if self._compressed:
            await self._send_compressed(payload, opcode)
        else:
            self._write_frame(build_frame(payload, opcode))

    async def close(self, code: int = status.WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection with *code* and *reason* (cut to 123 bytes).

        The first close wins: later calls, and calls after the peer closed,
        return at once. Before :meth:`accept`, the handshake is completed and
        then closed, so the client sees the code. Waits for the peer's close
        frame up to ``close_timeout``, then drops the TCP connection. Raises
        ``ValueError`` for a code that may not be sent (1005, 1006, 1015, < 1000,
        >= 5000, unassigned 1xxx/2xxx).
        """
        if not status.is_valid_close_code(code):
            raise ValueError(
                f"{code} is not a close code that can be sent; use 1000-1003, 1007-1014 or 3000-4999 "
                "(4000-4999 are for applications)."
            )
        if self._state is _CONNECTING:
            # Remember it; the handler completes the handshake after connect()
            # returns and closes with this code.
            self._state = _CLOSING
            self._close_code, self._close_reason = code, reason
            self._end_handshake_timer()
            return
        if self._state is not _OPEN:
            return
        self._state = _CLOSING
        self._close_code, self._close_reason = code, reason
        done = self._closing_done = asyncio.get_running_loop().create_future()
        try:
            ws = self._ws
            if ws is not None:
                await ws.close(code=code, message=truncate_reason(reason))
        finally:
            self._state = _CLOSED
            done.set_result(None)

    @property
    def groups(self) -> frozenset[str]:
        """The groups this connection is a member of."""
        return frozenset(self._groups or ())

    async def join_group(self, group: str) -> None:
        """Add this connection to *group*: it then receives every group send, on any worker.

        Joining twice is harmless. Membership ends by :meth:`leave_group` or,
        whatever closed the connection, before :meth:`disconnect` runs. Raises
        :class:`~wsframe.exceptions.InvalidGroupNameError` for a bad name,
        :class:`~wsframe.exceptions.WsframeError` before accept, and
        :class:`~wsframe.exceptions.BackendUnavailableError` when the backend
        is down (the connection is then not a member).
        """
        if self._state is not _OPEN:
            if self._state is _CONNECTING:
                raise WsframeError("Call accept() before join_group(): only open connections can be members.")
            raise ConnectionClosed(self._close_code or status.WS_1006_ABNORMAL_CLOSURE, self._close_reason)
        registry = self._registry
        if registry.tracks_members:
            await registry.join_group(self, group)
        else:
            registry.join_group_here(self, group)  # no coroutine to await, on every connect

    async def leave_group(self, group: str) -> None:
        """Remove this connection from *group*; leaving a group it is not in is harmless."""
        await self._registry.leave_group(self, group)

    # -------------------------------------------------------------- internal

    def _end_handshake_timer(self) -> None:
        # The handshake timeout bounds only the time until accept() or close():
        # after that connect() may run as long as it likes.
        expiry = self._handshake_expiry
        if expiry is not None:
            expiry.cancel()
            self._handshake_expiry = None

    def _expire_handshake(self, task: asyncio.Task[Any]) -> None:
        self._handshake_expired = True
        task.cancel()

    def _make_response(self, subprotocol: str | None) -> web.WebSocketResponse:
        settings = self._config.settings
        # Only inflating can raise zlib.error, so without compression aiohttp's
        # own class does (one coroutine frame less on every close).
        response_class = _WebSocketResponse if settings.compression else web.WebSocketResponse
        return response_class(
            protocols=(subprotocol,) if subprotocol else (),
            heartbeat=settings.heartbeat or None,
            # aiohttp rejects a plain message of exactly max_msg_size bytes (its
            # check is >=), ours is inclusive. It checks inflated messages with
            # >, so one byte more slips through there: _receive_loop checks those.
            max_msg_size=settings.max_message_size + 1,
            compress=settings.compression,
            timeout=settings.close_timeout,
            autoclose=False,  # answered in _receive_loop: aiohttp takes 1006 and >= 5000 as valid
            autoping=False,  # answered in _receive_loop, through the bounded buffer
            # Never let aiohttp's writer wait for drain: max_outbound_buffer bounds
            # the buffer instead, so one slow client cannot stall a sender.
            writer_limit=_NO_DRAIN,
        )

    dropped_messages: int = 0
    """Messages dropped because this client read too slowly (``slow_consumer='drop'``)."""

    async def _send_frame(self, payload: bytes, opcode: WSMsgType) -> None:
        if self._compressed:
            await self._send_compressed(payload, opcode)
        else:
            self._write_frame(build_frame(payload, opcode))

    async def _send_compressed(self, payload: bytes, opcode: WSMsgType) -> None:
        # permessage-deflate keeps compressor state per connection, so these
        # frames go through aiohttp's writer one connection at a time.
        ws = self._ws
        if not self._writable() or ws is None:
            return
        try:
            await ws.send_frame(payload, opcode)
        except (ClientConnectionResetError, ConnectionResetError):
            # The peer went away and the receive loop has not noticed yet.
            self._mark_closed(status.WS_1006_ABNORMAL_CLOSURE)
            raise ConnectionClosed(status.WS_1006_ABNORMAL_CLOSURE) from None

    def _write_frame(self, frame: bytes) -> None:
        """Queue a ready-made frame without waiting: the bounded buffer replaces flow control."""
        transport = self._transport
        # The common case in one test; _writable() sorts out every other one.
        if (
            self._state is _OPEN
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= self._config.outbound_limit
        ) or self._writable():
            transport.write(frame)  # type: ignore[union-attr]  # _writable() checked it

    def _writable(self) -> bool:
        """Return True when a frame may be queued now; raise or drop (False) otherwise."""
        if self._state is not _OPEN:
            if self._state is _CONNECTING:
                raise WsframeError("Call accept() before send(): the handshake is not complete.")
            raise ConnectionClosed(self._close_code or status.WS_1006_ABNORMAL_CLOSURE, self._close_reason)
        transport = self._transport
        if transport is None or transport.is_closing():
            # The peer went away and the receive loop has not noticed yet.
            self._mark_closed(status.WS_1006_ABNORMAL_CLOSURE)
            raise ConnectionClosed(status.WS_1006_ABNORMAL_CLOSURE)
        settings = self._config.settings
        if transport.get_write_buffer_size() <= settings.max_outbound_buffer:
            return True
        if settings.slow_consumer == "drop":
            self.dropped_messages += 1
            logger.debug("dropped a message for slow consumer %s", self.connection_id)
            return False
        self._close_slow_consumer(transport)
        raise ConnectionClosed(status.WS_1013_TRY_AGAIN_LATER, _SLOW_CONSUMER)

    def _close_slow_consumer(self, transport: asyncio.Transport) -> None:
        logger.info("closing slow consumer %s with 1013: its send buffer is full", self.connection_id)
        self._state = _CLOSING
        self._close_code, self._close_reason = status.WS_1013_TRY_AGAIN_LATER, _SLOW_CONSUMER
        # The close frame joins the queue: a client that was only slow still
        # reads the code. One that never reads is cut off after close_timeout.
        transport.write(build_close_frame(status.WS_1013_TRY_AGAIN_LATER, _SLOW_CONSUMER.encode()))
        transport.close()
        asyncio.get_running_loop().call_later(self._config.settings.close_timeout, _abort_transport, transport)

    def _mark_closed(self, code: int, reason: str = "") -> None:
        if self._close_code is None:
            self._close_code, self._close_reason = code, reason
        if self._state is not _CLOSING:
            self._state = _CLOSED

    def _abort(self) -> None:
        """Drop the TCP connection now (shutdown after the drain time ran out)."""
        transport = self.request.transport
        if self._state is not _CLOSED and transport is not None:
            transport.abort()
        self._mark_closed(status.WS_1006_ABNORMAL_CLOSURE)

    async def _serve(self) -> web.StreamResponse:
        """Run the whole connection: connect, receive loop, disconnect.

        One coroutine frame for the connection's whole life (with the receive
        loop below it): each suspended frame costs memory per open connection.
        """
        # The handshake timeout as a plain timer handle: asyncio.timeout() costs
        # several times more per connection, and this runs for every one.
        # (One timer for all handshakes of a handler, in deadline order, was
        # tried: it cost as many instructions as uvloop's call_later.)
        task = asyncio.current_task()
        if task is not None:
            self._handshake_expiry = asyncio.get_running_loop().call_later(
                self._config.settings.handshake_timeout, self._expire_handshake, task
            )
        try:
            try:
                await self.connect(**self.path_variables)
            except asyncio.CancelledError:
                if self._ws is not None or not self._handshake_expired:
                    raise  # after accept(), the outer handler cleans up
                task.uncancel()  # type: ignore[union-attr]  # set above whenever the timer could fire
                logger.warning(
                    "%s.connect() neither accepted nor closed within %s s",
                    type(self).__qualname__,
                    self._config.settings.handshake_timeout,
                )
                return _json_error(status.HTTP_408_REQUEST_TIMEOUT, "The handshake took too long.")
            except ConnectionClosed:
                if self._ws is None:
                    logger.debug("client of %s left during the handshake", type(self).__qualname__)
                    return _json_error(status.HTTP_400_BAD_REQUEST, "The client closed the connection.")
                # A send in connect() lost a race with a close: not a crash; carry on below.
            except Exception:
                if self._ws is None:
                    logger.exception("%s.connect() failed before accept", type(self).__qualname__)
                    return _json_error(status.HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error")
                logger.exception("%s.connect() failed", type(self).__qualname__)
                await self._close_after_error()
            finally:
                if self._handshake_expiry is not None:
                    self._end_handshake_timer()

            ws = self._ws
            if ws is None:
                if self._state is _CLOSING:
                    return await self._close_before_accept()
                return _json_error(status.HTTP_403_FORBIDDEN, "The server did not accept this connection.")
            if self._state is _OPEN:
                await self._receive_loop(ws)
            if self._closing_done is not None and not self._closing_done.done():
                # close() is running in another task; let it finish so that
                # disconnect() sees the code that was actually sent.
                await asyncio.shield(self._closing_done)
            return ws
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client vanishes (with
            # handler_cancellation on) or when shutdown runs out of time,
            # wherever the handler was: in connect() after accept(), closing
            # after an error, or in the receive loop. The connection is gone.
            if self._ws is not None:
                self._mark_closed(status.WS_1006_ABNORMAL_CLOSURE)
            raise
        finally:
            # However an accepted connection ended (even by a bug of ours), it
            # leaves the registry and its groups, and disconnect() runs.
            if self._ws is not None:
                await self._finish()

    async def _close_before_accept(self) -> web.StreamResponse:
        code, reason = self._close_code or status.WS_1000_NORMAL_CLOSURE, self._close_reason
        ws = self._make_response(None)
        try:
            await ws.prepare(self.request)
        except (ClientConnectionResetError, ConnectionResetError):
            logger.debug("client of %s left before its close frame", type(self).__qualname__)
            return ws
        await ws.close(code=code, message=truncate_reason(reason))
        return ws

    async def _receive_loop(self, ws: web.WebSocketResponse) -> None:
        receive = self.receive
        config = self._config
        decode = config.decoder
        idle_timeout = config.settings.idle_timeout
        rate = config.settings.rate_limit
        inflated_limit = config.settings.max_message_size if self._compressed else None
        if rate is not None:
            loop = asyncio.get_running_loop()
            burst = tokens = max(1.0, rate)
            last = loop.time()
        in_a_row = 0
        while True:
            try:
                msg = await ws.receive(idle_timeout)
            except TimeoutError:
                await self.close(status.WS_1000_NORMAL_CLOSURE, "Idle timeout")
                return
            except (ClientConnectionResetError, ConnectionResetError):
                # aiohttp answers a close frame from inside receive(); when the
                # peer has already gone, that write raises out of receive().
                self._mark_closed(status.WS_1006_ABNORMAL_CLOSURE)
                return
            kind = msg.type
            if kind is _TEXT or kind is _BINARY:
                if inflated_limit is not None and _utf8_size(msg.data, inflated_limit) > inflated_limit:
                    await self.close(status.WS_1009_MESSAGE_TOO_BIG)
                    return
                if rate is not None:
                    # Token bucket: refill at `rate` per second up to `burst`.
                    now = loop.time()
                    tokens = min(burst, tokens + (now - last) * rate)
                    last = now
                    if tokens < 1.0:
                        await self.close(status.WS_1008_POLICY_VIOLATION, "Rate limit exceeded")
                        return
                    tokens -= 1.0
                try:
                    if decode is None:
                        await receive(msg.data)
                    else:
                        try:
                            data = decode(msg.data)
                        except (msgspec.ValidationError, msgspec.DecodeError) as error:
                            await self.on_invalid_message(error)
                        else:
                            await receive(data)
                except ConnectionClosed:
                    # A send inside receive() raced with a close; not a crash.
                    return
                except Exception:
                    logger.exception("%s.receive() failed; closing with 1011", type(self).__qualname__)
                    await self._close_after_error()
                    return
                if self._state is not _OPEN:
                    return
                in_a_row += 1
                if in_a_row == _FAIR_SHARE:
                    # ws.receive() does not suspend while frames are buffered, so a
                    # client that floods would keep the loop to itself for a whole
                    # read buffer (a thousand messages) while everyone else waits.
                    in_a_row = 0
                    await asyncio.sleep(0)
                continue
            if kind is _PING:
                # Pongs go through the same bounded buffer as everything else
                # (aiohttp's autoping would queue them without limit for a
                # client that pings and never reads).
                try:
                    self._write_frame(build_frame(msg.data, _PONG))
                except ConnectionClosed:
                    return
                continue
            if kind is _PONG:
                continue  # the heartbeat already counted it as traffic
            if kind is _CLOSE:
                code = msg.data or status.WS_1005_NO_STATUS_RCVD
                self._mark_closed(code, msg.extra or "")
                # aiohttp's reader lets 1006 and codes >= 5000 through; RFC 6455 7.4 forbids them.
                valid = not msg.data or status.is_valid_close_code(msg.data)
                reply = status.WS_1000_NORMAL_CLOSURE if valid else status.WS_1002_PROTOCOL_ERROR
                await ws.close(code=reply, drain=False)
            elif kind is _ERROR:
                # Oversized or malformed frame, or a failed heartbeat; aiohttp
                # sent the matching close code (1009, 1002, 1007) if it could.
                # aiohttp then reports 1006 in ws.close_code (its close() reads
                # the errored queue); the code it sent is on the exception.
                sent = getattr(msg.data, "code", None)
                code = sent if isinstance(sent, int) and sent else ws.close_code or status.WS_1006_ABNORMAL_CLOSURE
                self._mark_closed(code)
                logger.debug("connection %s failed: %r", self.connection_id, msg.data)
            elif kind is _CLOSED_MSG:
                # EOF without a close frame, unless our own close() got here first.
                self._mark_closed(status.WS_1006_ABNORMAL_CLOSURE)
            # CLOSING: our close() runs in another task; _serve waits for it.
            return

    async def _close_after_error(self) -> None:
        if self._state is _OPEN:
            await self.close(status.WS_1011_INTERNAL_ERROR, "Internal server error")

    async def _finish(self) -> None:
        """Leave the registry and every group, then run disconnect(): once per accepted connection."""
        registry = self._registry
        registry.discard(self.connection_id)
        self._state = _CLOSED
        if self._disconnected:
            return
        self._disconnected = True
        try:
            if self._groups:
                if registry.tracks_members:
                    await registry.leave_all_groups(self)
                else:
                    registry.leave_all_groups_here(self)
            if self._config.calls_disconnect:
                try:
                    await self.disconnect(self._close_code or status.WS_1006_ABNORMAL_CLOSURE)
                except Exception:
                    logger.exception("%s.disconnect() failed", type(self).__qualname__)
        finally:
            registry.finished()


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
    if not status.is_valid_close_code(code):
        raise ValueError(f"{code} is not a close code that can be sent; use 1000-1003, 1007-1014 or 3000-4999.")
    await get_registry(app).close(connection_id, code, reason)
