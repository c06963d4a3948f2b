"""Serving one websocket connection: the handshake timer, ``connect()``'s outcome, the receive loop, the end.

:class:`Session` is the connection the registry stores (a
:class:`~wsframe._connection.Connection`) plus what driving it needs. Its
:meth:`Session.serve` runs the connection's whole life against a handler's
hooks (:class:`Hooks`, which every ``GenericWebsocket`` is); the handler keeps
the session as its one private attribute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec
from aiohttp import ClientConnectionResetError, WSMsgType, web

from . import status
from ._connection import Connection, State, too_big_reason, truncate_reason
from ._deadlines import Deadlines
from ._ids import new_connection_id
from .codec import build_frame
from .config import HandlerConfig
from .credentials import Credentials
from .exceptions import ConnectionClosed, WsframeError
from .limits import TokenBucket
from .registry import Registry

__all__ = ["Session", "Hooks", "json_error"]

logger = logging.getLogger("wsframe.websocket")

_HANDSHAKE_EXPIRED = "wsframe: handshake timeout"
"""The message of the cancellation the handshake timer sends."""

_FAIR_SHARE = 16
"""Messages one connection handles in a row before letting the others run (a power of two)."""
_FAIR_MASK = _FAIR_SHARE - 1

_CONNECTING, _OPEN, _CLOSING, _CLOSED = State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED
# Likewise for message types: on Python 3.11, WSMsgType.CLOSE (an attribute of
# an enum class) takes about 100 ns; a module global, 7 ns.
_TEXT, _BINARY, _PING, _PONG = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG
_CLOSE, _ERROR, _CLOSED_MSG = WSMsgType.CLOSE, WSMsgType.ERROR, WSMsgType.CLOSED


def json_error(status_code: int, detail: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """The HTTP answer to a refused handshake: ``{"detail": ...}`` with *status_code*."""
    return web.json_response({"detail": detail}, status=status_code, headers=headers)


def _utf8_size(data: str | bytes, limit: int) -> int:
    """Size of *data* in bytes, without encoding a str that cannot exceed *limit*."""
    if isinstance(data, bytes) or len(data) * 4 <= limit:
        return len(data)
    return len(data.encode())


class Hooks(Protocol):
    """What the driver calls on a handler: :class:`~wsframe.GenericWebsocket`'s hooks."""

    request: web.Request
    path_variables: dict[str, Any]

    async def connect(self, *args: Any, **path_variables: Any) -> None: ...
    async def receive(self, data: Any) -> None: ...
    async def on_invalid_message(self, error: Exception) -> None: ...
    async def disconnect(self, code: int) -> None: ...


class Session(Connection):
    """A connection with its driver: :meth:`serve` runs it from ``connect()`` to ``disconnect()``."""

    __slots__ = ("credentials", "handshake_timer", "registry")

    def __init__(self, registry: Registry, config: HandlerConfig) -> None:
        # Not super() nor registry.new_connection_id(): two calls fewer per connection.
        Connection.__init__(self, new_connection_id(registry.node_id), config)
        self.registry = registry
        self.handshake_timer: Deadlines | None = None
        """The deadlines this connection's handshake is in, until accept() or close() (or the timeout)."""
        self.credentials: Credentials | None = None
        """Token expiry and refresh (wsframe.credentials); None for most connections."""

    # ---------------------------------------------------------------- handshake

    async def accept(self, request: web.Request, subprotocol: str | None, headers: Mapping[str, str] | None) -> None:
        """Send the 101, move to OPEN and register the connection (see GenericWebsocket.accept).

        Raises :class:`ConnectionClosed` after a close or when the client left
        mid-handshake (then 1006), and :class:`WsframeError` when already open.
        """
        if self.state is not _CONNECTING:
            if self.ws is not None and self.state is _OPEN:
                if self.credentials is not None and self.credentials.first_message:
                    # Opened by the first-message login before connect() ran.
                    if subprotocol or headers:
                        raise WsframeError(
                            "with MessageAuth the handshake is done before connect(): no subprotocol or headers"
                        )
                    return
                raise WsframeError("accept() was already called for this connection")
            raise self.closed_error()
        ws = self.make_response(subprotocol)
        if headers:
            ws.headers.update(headers)
        try:
            await ws.prepare(request)
        except (ClientConnectionResetError, ConnectionResetError):
            # The client left mid-handshake: routine on busy servers, not a crash.
            self.state = _CLOSED
            self.close_code = status.WS_1006_ABNORMAL_CLOSURE
            raise ConnectionClosed(status.WS_1006_ABNORMAL_CLOSURE) from None
        self.adopt(ws, request)

    def adopt(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        """Take *ws*, prepared (101 sent): the end of accept(), and how a login before connect() opens."""
        self.ws = ws
        self.transport = request.transport
        if self.config.settings.compression and ws.compress:
            self.compressed = True
        self.state = _OPEN
        registry = self.registry
        registry.add(self)
        if self.handshake_timer is not None:  # (never set for a login before connect())
            self.end_handshake_timer()
        if registry.shutting_down:
            # Shutdown has already told every connection it knew of to go; this
            # one finished its handshake since, so it goes the same way.
            registry.spawn(self.close(status.WS_1001_GOING_AWAY, "Server shutdown"))

    def end_handshake_timer(self) -> None:
        """Stop the handshake timeout: it bounds only the time until accept() or close()."""
        # After that connect() may run as long as it likes.
        timer = self.handshake_timer
        if timer is not None:
            timer.settle(self)
            self.handshake_timer = None

    @staticmethod
    def _expire_handshake(task: asyncio.Task[Any]) -> None:
        # The message tells this cancellation apart from aiohttp's (client gone,
        # shutdown): a flag for it would cost a slot on every connection.
        task.cancel(_HANDSHAKE_EXPIRED)

    # ---------------------------------------------------------------- serving

    async def serve(self, handler: Hooks) -> web.StreamResponse:
        """Run the whole connection: connect, receive loop, disconnect.

        One coroutine frame for the connection's whole life (with the receive
        loop below it): each suspended frame costs memory per open connection.
        Cancellation (the client vanished, or shutdown ran out of time) is
        recorded as 1006 and re-raised after the connection is finished.
        """
        # The handshake timeout as an entry in one timer for all handshakes of this
        # timeout (wsframe._deadlines): a call_later and cancel() per connection cost
        # 3.3 % of an open and close on asyncio's loop; asyncio.timeout() costs more.
        task = asyncio.current_task()
        if task is not None and self.ws is None:  # (a first-message login has already opened it)
            # (No local for it: each is a frame slot kept for the connection's life.)
            self.handshake_timer = self.registry.deadlines(
                self.config.settings.handshake_timeout, self._expire_handshake
            )
            self.handshake_timer.add(self, task)
        try:
            # connect() runs here rather than in a coroutine of its own: one
            # coroutine per connection less.
            try:
                await handler.connect(**handler.path_variables)
            # (Both handlers name the error alike: one frame slot, kept for the connection's life.)
            except asyncio.CancelledError as error:
                if self.ws is not None or error.args != (_HANDSHAKE_EXPIRED,):
                    raise  # after accept(), the handler below cleans up
                task.uncancel()  # type: ignore[union-attr]  # set whenever the timer could fire
                return self._refusal(handler, error)
            except Exception as error:
                if self.ws is None:
                    return self._refusal(handler, error)
                if not isinstance(error, ConnectionClosed):
                    # (A send in connect() that lost a race with a close is not a crash.)
                    logger.exception("%s.connect() failed", type(handler).__qualname__)
                    await self._close_after_error()
            finally:
                if self.handshake_timer is not None:
                    self.end_handshake_timer()
            ws = self.ws
            if ws is None:
                if self.state is _CLOSING:
                    return await self._close_before_accept(handler)
                logger.info(
                    "refused handshake to %s with 403: %s.connect() returned without accept()",
                    handler.request.path,
                    type(handler).__qualname__,
                )
                return json_error(status.HTTP_403_FORBIDDEN, "The server did not accept this connection.")
            if self.state is _OPEN:
                await self._receive_loop(handler, ws)
            if self.closing_done is not None and not self.closing_done.done():
                # close() is running in another task; let it finish so that
                # disconnect() sees the code that was actually sent.
                await asyncio.shield(self.closing_done)
            return ws
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client vanishes (with
            # handler_cancellation on) or when shutdown runs out of time,
            # wherever the handler was: in connect() after accept(), closing
            # after an error, or in the receive loop. The connection is gone.
            if self.ws is not None:
                self.mark_closed(status.WS_1006_ABNORMAL_CLOSURE)
            raise
        finally:
            # However an accepted connection ended (even by a bug of ours), it
            # leaves the registry and its groups, and disconnect() runs.
            if self.ws is not None:
                await self._finish(handler)

    def _refusal(self, handler: Hooks, error: BaseException) -> web.Response:
        """The HTTP answer when connect() ended by *error* before accept(): 408, 400 or 500 (logged)."""
        name = type(handler).__qualname__
        if isinstance(error, asyncio.CancelledError):
            timeout = self.config.settings.handshake_timeout
            # A warning, not info: a slow connect() is the app's to fix.
            logger.warning(
                "refused handshake to %s with 408: %s.connect() neither accepted nor closed within %s s",
                handler.request.path,
                name,
                timeout,
            )
            self.registry.tally.refuse("timeout")
            return json_error(status.HTTP_408_REQUEST_TIMEOUT, "The handshake took too long.")
        if isinstance(error, ConnectionClosed):
            logger.debug("client of %s left during the handshake", name)
            return json_error(status.HTTP_400_BAD_REQUEST, "The client closed the connection.")
        logger.exception("%s.connect() failed before accept", name, exc_info=error)
        return json_error(status.HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error")

    async def _close_before_accept(self, handler: Hooks) -> web.StreamResponse:
        """Complete the handshake only to close it with the code close() recorded in connect()."""
        code, reason = self.close_code or status.WS_1000_NORMAL_CLOSURE, self.close_reason
        ws = self.make_response(None)
        try:
            await ws.prepare(handler.request)
        except (ClientConnectionResetError, ConnectionResetError):
            logger.debug("client of %s left before its close frame", type(handler).__qualname__)
            return ws
        await ws.close(code=code, message=truncate_reason(reason))
        return ws

    async def _receive_loop(self, handler: Hooks, ws: web.WebSocketResponse) -> None:
        """Hand each data message to receive(), answer control frames, return when the connection ends."""
        # No local for handler.receive: the bound method would be one more
        # object kept for every open connection.
        decode = self.config.decoder
        idle_timeout = self.config.settings.idle_timeout
        limited = None
        if self.compressed or self.config.settings.rate_limit is not None or self.credentials is not None:
            limited = self._message_limits()
        while True:
            try:
                msg = await ws.receive(idle_timeout)
            except TimeoutError:
                await self.close(status.WS_1000_NORMAL_CLOSURE, "Idle timeout")
                return
            except (ClientConnectionResetError, ConnectionResetError):
                # aiohttp answers a close frame from inside receive(); when the
                # peer has already gone, that write raises out of receive().
                self.mark_closed(status.WS_1006_ABNORMAL_CLOSURE)
                return
            kind = msg.type
            if kind is _TEXT or kind is _BINARY:
                # The data path stays inline: it runs for every message.
                # msg.data once: a NamedTuple field is a generic attribute lookup (about
                # 150 instructions); `data` is a frame slot the close path uses anyway.
                data = msg.data
                # The count, in a local, also paces the fair share below: one
                # counter instead of two (measured: 2 % of an echo round trip
                # went to counting).
                received = self.received_messages + 1
                self.received_messages = received
                if limited is not None and await self._over_limit(limited, data):
                    if self.state is _OPEN:
                        continue  # wsframe's own message (a token refresh), not for receive()
                    return
                try:
                    if decode is None:
                        await handler.receive(data)
                    else:
                        try:
                            data = decode(data)
                        except (msgspec.ValidationError, msgspec.DecodeError) as error:
                            await handler.on_invalid_message(error)
                        else:
                            await handler.receive(data)
                except ConnectionClosed:
                    # A send inside receive() raced with a close; not a crash.
                    return
                except Exception:
                    logger.exception("%s.receive() failed; closing with 1011", type(handler).__qualname__)
                    await self._close_after_error()
                    return
                if self.state is not _OPEN:
                    return
                if not received & _FAIR_MASK:
                    # ws.receive() does not suspend while frames are buffered, so a
                    # client that floods would keep the loop to itself for a whole
                    # read buffer (a thousand messages) while everyone else waits.
                    await asyncio.sleep(0)
                continue
            if kind is _PING:
                # Pongs go through the same bounded buffer as everything else
                # (aiohttp's autoping would queue them without limit for a
                # client that pings and never reads).
                self.seen = -1  # traffic: the heartbeat's next sweep sees the peer alive
                try:
                    self.write_control(build_frame(msg.data, _PONG))
                except ConnectionClosed:
                    return
                continue
            if kind is _PONG:
                self.seen = -1  # the answer to the heartbeat's ping (or any pong: traffic)
                continue
            if kind is _CLOSE:
                # The peer's close frame, answered here (not in a method: this runs
                # for nearly every connection that ends).
                # No new local names either: each is a frame slot kept for the
                # connection's life. `data` is the close code here.
                data = msg.data
                self.mark_closed(data or status.WS_1005_NO_STATUS_RCVD, msg.extra or "")
                # aiohttp's reader lets 1006 and codes >= 5000 through; RFC 6455 7.4 forbids them.
                if not data or status.is_valid_close_code(data):
                    await ws.close(code=status.WS_1000_NORMAL_CLOSURE, drain=False)
                else:
                    await ws.close(code=status.WS_1002_PROTOCOL_ERROR, drain=False)
            else:
                self._read_ended(ws, msg)
            return

    def _message_limits(self) -> tuple[int | None, TokenBucket | None, Credentials | None]:
        """The per-message checks this connection needs: inflated size, rate, token refresh (its timer starts)."""
        settings = self.config.settings
        inflated_limit = settings.max_message_size if self.compressed else None
        rate = settings.rate_limit
        bucket = TokenBucket(rate, asyncio.get_running_loop().time()) if rate is not None else None
        credentials = self.credentials
        if credentials is not None:
            credentials.arm(self)
        return inflated_limit, bucket, credentials

    async def _over_limit(
        self, limits: tuple[int | None, TokenBucket | None, Credentials | None], data: str | bytes
    ) -> bool:
        """Return True when *data* is not for receive(): it tripped a limit (then closed: 1009 too big
        once inflated, 1008 over the rate limit) or was a token refresh (handled here)."""
        inflated_limit, bucket, credentials = limits
        if inflated_limit is not None and _utf8_size(data, inflated_limit) > inflated_limit:
            await self.close(status.WS_1009_MESSAGE_TOO_BIG, too_big_reason(inflated_limit))
            return True
        if bucket is not None and not bucket.take(asyncio.get_running_loop().time()):
            await self.close(status.WS_1008_POLICY_VIOLATION, "Rate limit exceeded")
            return True
        return credentials is not None and await credentials.refresh(self, data)

    def _read_ended(self, ws: web.WebSocketResponse, msg: Any) -> None:
        """Record how the connection ended without a close frame: a failed read, or EOF."""
        kind = msg.type
        if kind is _ERROR:
            # Oversized or malformed frame, or a failed heartbeat; aiohttp
            # sent the matching close code (1009, 1002, 1007) if it could.
            # aiohttp then reports 1006 in ws.close_code (its close() reads
            # the errored queue); the code it sent is on the exception.
            sent = getattr(msg.data, "code", None)
            code = sent if isinstance(sent, int) and sent else ws.close_code or status.WS_1006_ABNORMAL_CLOSURE
            self.mark_closed(code)
            logger.debug("connection %s failed: %r", self.connection_id, msg.data)
        elif kind is _CLOSED_MSG:
            # EOF without a close frame, unless our own close() got here first.
            self.mark_closed(status.WS_1006_ABNORMAL_CLOSURE)
        # CLOSING: our close() runs in another task; serve() waits for it.

    async def _close_after_error(self) -> None:
        if self.state is _OPEN:
            await self.close(status.WS_1011_INTERNAL_ERROR, "Internal server error")

    async def _finish(self, handler: Hooks) -> None:
        """Leave the registry and every group, then run disconnect(): once per accepted connection."""
        registry = self.registry
        registry.discard(self.connection_id)
        registry.tally.finished(self)
        self.state = _CLOSED
        if self.credentials is not None:
            self.credentials.end()
        try:
            if self.groups:
                if registry.tracks_members:
                    await registry.leave_all_groups(self)
                else:
                    registry.leave_all_groups_here(self)
            if self.config.calls_disconnect:
                try:
                    await handler.disconnect(self.close_code or status.WS_1006_ABNORMAL_CLOSURE)
                except Exception:
                    logger.exception("%s.disconnect() failed", type(handler).__qualname__)
        finally:
            registry.finished()
