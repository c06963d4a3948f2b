"""One websocket connection's transport side: its state, frame writes, close and abort.

A :class:`Connection` is what the registry stores and what a send reaches:
it knows nothing of the user's handler, so the registry never touches one.
The handler (:class:`~wsframe.GenericWebsocket`) keeps its connection in a
single private attribute and delegates to it; the driver that serves the
connection (``wsframe._session``) subclasses it.

Slotted: one of these lives for every open connection.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import zlib
from collections.abc import Coroutine
from typing import Any

from aiohttp import ClientConnectionResetError, WSMsgType, web
from aiohttp.http_websocket import WebSocketWriter
from aiohttp.web_request import BaseRequest

from . import status
from ._framecheck import FrameCheck
from .codec import build_close_frame, build_frame
from .config import HandlerConfig
from .exceptions import ConnectionClosed, WsframeError

__all__ = ["Connection", "State", "MAX_REASON_BYTES", "SLOW_CONSUMER_REASON", "too_big_reason", "truncate_reason"]

logger = logging.getLogger("wsframe.websocket")

MAX_REASON_BYTES = 123
"""A close frame's reason must fit in 123 bytes (RFC 6455 section 5.5)."""

_NO_DRAIN = 1 << 62
SLOW_CONSUMER_REASON = _SLOW_CONSUMER = "Slow consumer"
"""The close reason sent with 1013 to a client that reads too slowly."""


class State(enum.Enum):
    """Where a connection is in its life; it only ever moves down this list."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# Module globals: one lookup instead of two on the per-message path.
_CONNECTING, _OPEN, _CLOSING, _CLOSED = State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED


def truncate_reason(reason: str) -> bytes:
    """Encode *reason* as UTF-8, cut to 123 bytes without splitting a character."""
    raw = reason.encode()
    if len(raw) <= MAX_REASON_BYTES:
        return raw
    return raw[:MAX_REASON_BYTES].decode(errors="ignore").encode()


def _abort_unless_draining(transport: asyncio.Transport, buffered: int, patience: float) -> None:
    """Drop a closing connection whose client stopped reading; give one that still reads more time."""
    left = transport.get_write_buffer_size()
    if not left:
        return  # all of it, the close frame included, went out: the transport closed itself
    if left < buffered:
        # The client is reading: it reaches the close frame after the data queued before it.
        asyncio.get_running_loop().call_later(patience, _abort_unless_draining, transport, left, patience)
        return
    transport.abort()


def too_big_reason(limit: int) -> str:
    """The reason of a 1009 close: which limit the message went over."""
    return f"message too big: limit {limit} bytes"


class _WebSocketResponse(web.WebSocketResponse):
    """aiohttp's response, saying which limit a 1009 close enforces, failing corrupt compressed data
    with 1007 and the faulty frame headers aiohttp lets through with 1002 (wsframe._framecheck)."""

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter) -> None:
        # aiohttp installs its frame reader here and feeds it the bytes that came
        # in while the 101 was being written. Those are held back, the reader is
        # put behind a FrameCheck, and then they go through the check too.
        handler = request.protocol
        early, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        check = handler._payload_parser = self.frame_check = FrameCheck(handler._payload_parser, self._reader)
        if early and check.feed_data(early)[0]:
            handler.close()

    def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> Coroutine[Any, Any, bool]:
        # A plain method handing back aiohttp's coroutine: no coroutine frame
        # of its own on every close.
        if code == status.WS_1009_MESSAGE_TOO_BIG and not message:
            # aiohttp's reader closes an oversized message with no reason; its
            # limit is one byte over ours (see make_response).
            message = too_big_reason(self._max_msg_size - 1).encode()
        elif code == status.WS_1000_NORMAL_CLOSURE and isinstance(self.exception(), zlib.error):
            # receive() calls close() without a code after a non-protocol error in the
            # reader; the only such error a peer can cause is a zlib decompression error.
            code = status.WS_1007_INVALID_FRAME_PAYLOAD_DATA
        return super().close(code=code, message=message, drain=drain)


class Connection:
    """The state and transport of one websocket connection, from handshake to close.

    ``state`` moves CONNECTING -> OPEN -> CLOSING -> CLOSED (or straight to
    CLOSED). ``close_code``/``close_reason`` record the first close, whoever
    made it. Writes never wait: ``config.outbound`` bounds the send buffer instead.
    """

    __slots__ = (
        "close_code",
        "close_reason",
        "closing_done",
        "compressed",
        "config",
        "connection_id",
        "dropped_messages",
        "groups",
        "quiet",
        "received_messages",
        "seen",
        "sent_bytes",
        "sent_messages",
        "state",
        "transport",
        "ws",
    )

    def __init__(self, connection_id: str, config: HandlerConfig) -> None:
        self.connection_id = connection_id
        self.config = config
        self.state = _CONNECTING
        self.ws: web.WebSocketResponse | None = None
        self.transport: asyncio.Transport | None = None
        self.compressed = False
        """Whether permessage-deflate was negotiated: frames then go through aiohttp's writer."""
        self.close_code: int | None = None
        self.close_reason = ""
        self.closing_done: asyncio.Future[None] | None = None
        self.groups: set[str] | None = None
        """The groups this connection is in (None until it joins one); kept by the registry."""
        self.dropped_messages = 0
        """Messages dropped because the client read too slowly (``slow_consumer='drop'``)."""
        # Plain counters, read by wsframe.stats() and /metrics (see wsframe._tally).
        # Bytes received are counted where they are read, once per read (received_bytes).
        self.received_messages = self.sent_messages = self.sent_bytes = 0
        # The heartbeat's (wsframe._heartbeat): received_messages at its last sweep, or -1
        # after a ping or pong from the peer; and its sweeps in a row without traffic.
        self.seen = self.quiet = 0

    @property
    def received_bytes(self) -> int:
        """Bytes of the frames read from the client, headers included; 0 before the handshake."""
        check: FrameCheck | None = getattr(self.ws, "frame_check", None)
        return 0 if check is None else check.received

    def closed_error(self) -> ConnectionClosed:
        """The ConnectionClosed to raise for an action on this closed or closing connection."""
        return ConnectionClosed(self.close_code or status.WS_1006_ABNORMAL_CLOSURE, self.close_reason)

    # ---------------------------------------------------------------- opening

    def make_response(self, subprotocol: str | None) -> web.WebSocketResponse:
        """Return the aiohttp response that completes (or refuses with a close frame) the handshake."""
        settings = self.config.settings
        return _WebSocketResponse(
            protocols=(subprotocol,) if subprotocol else (),
            # wsframe's own heartbeat (wsframe._heartbeat) pings: aiohttp's resets a
            # timer on every read and starts a task for every ping.
            heartbeat=None,
            # aiohttp rejects a plain message of exactly max_msg_size bytes (its
            # check is >=), ours is inclusive. It checks inflated messages with
            # >, so one byte more slips through there: the receive loop checks those.
            max_msg_size=settings.max_message_size + 1,
            compress=settings.compression,
            timeout=settings.close_timeout,
            autoclose=False,  # answered in the receive loop: aiohttp takes 1006 and >= 5000 as valid
            autoping=False,  # answered in the receive loop, through the bounded buffer
            # Never let aiohttp's writer wait for drain: max_outbound_buffer bounds
            # the buffer instead, so one slow client cannot stall a sender.
            writer_limit=_NO_DRAIN,
        )

    # ---------------------------------------------------------------- writing

    async def send_frame(self, payload: bytes, opcode: WSMsgType) -> None:
        """Send one frame; raises ConnectionClosed or WsframeError as :meth:`write_frame` does."""
        if self.compressed:
            await self._send_compressed(payload, opcode)
        else:
            self.write_frame(build_frame(payload, opcode))

    async def _send_compressed(self, payload: bytes, opcode: WSMsgType) -> None:
        # permessage-deflate keeps compressor state per connection, so these
        # frames go through aiohttp's writer one connection at a time.
        ws = self.ws
        if not self._admit_past_fast_path() or ws is None:
            return
        try:
            await ws.send_frame(payload, opcode)
            self.sent_messages += 1
            self.sent_bytes += len(payload)
        except (ClientConnectionResetError, ConnectionResetError):
            # The peer went away and the receive loop has not noticed yet.
            self.mark_closed(status.WS_1006_ABNORMAL_CLOSURE)
            raise ConnectionClosed(status.WS_1006_ABNORMAL_CLOSURE) from None

    def write_frame(self, frame: bytes) -> None:
        """Queue a ready-made frame without waiting: the bounded buffer replaces flow control.

        Raises :class:`WsframeError` before the handshake completed, and
        :class:`ConnectionClosed` when the connection is closed, closing, gone,
        or just closed with 1013 for reading too slowly. In drop mode a frame
        past the buffer bound is dropped and counted instead.
        """
        transport = self.transport
        # The common case in one test; _admit_past_fast_path() sorts out every other one.
        if (
            self.state is _OPEN
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= self.config.outbound_limit
        ) or self._admit_past_fast_path():
            transport.write(frame)  # type: ignore[union-attr]  # _admit_past_fast_path() checked it
            self.sent_messages += 1
            self.sent_bytes += len(frame)

    def write_control(self, frame: bytes) -> None:
        """Queue a ping or pong through the same bound as data: its bytes count, it is not a message.

        Raises as :meth:`write_frame` does; a control frame dropped past the
        bound (``slow_consumer='drop'``) is not counted as a dropped message.
        """
        transport = self.transport
        if (
            self.state is _OPEN
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= self.config.outbound_limit
        ) or self._admit_past_fast_path(control=True):
            transport.write(frame)  # type: ignore[union-attr]  # _admit_past_fast_path() checked it
            self.sent_bytes += len(frame)

    def _admit_past_fast_path(self, control: bool = False) -> bool:
        """Decide on a frame the fast path did not let through: True to write it, False to drop it.

        Not a plain predicate: it raises for a connection that is not open,
        and for a slow consumer in close mode it starts the 1013 close first.
        """
        if self.state is not _OPEN:
            if self.state is _CONNECTING:
                raise WsframeError("Call accept() before send(): the handshake is not complete.")
            raise self.closed_error()
        transport = self.transport
        if transport is None or transport.is_closing():
            # The peer went away and the receive loop has not noticed yet.
            self.mark_closed(status.WS_1006_ABNORMAL_CLOSURE)
            raise ConnectionClosed(status.WS_1006_ABNORMAL_CLOSURE)
        outcome = self.config.outbound.decide(transport.get_write_buffer_size())
        if outcome == "write":
            return True
        if outcome == "drop":
            if not control:
                self.dropped_messages += 1
                logger.debug("dropped a message for slow consumer %s", self.connection_id)
            return False
        self._close_slow_consumer(transport)
        raise ConnectionClosed(status.WS_1013_TRY_AGAIN_LATER, _SLOW_CONSUMER)

    def _close_slow_consumer(self, transport: asyncio.Transport) -> None:
        logger.info("closing slow consumer %s with 1013: its send buffer is full", self.connection_id)
        self.state = _CLOSING
        self.close_code, self.close_reason = status.WS_1013_TRY_AGAIN_LATER, _SLOW_CONSUMER
        # The close frame joins the queue and nothing joins it after: a client
        # that was only slow still reads the code, however long it takes, as
        # long as it keeps reading. One whose buffer does not shrink for
        # close_timeout is cut off. (The data before the close frame cannot be
        # dropped instead: it sits in the transport's buffer, the first frame
        # of it possibly half sent.)
        transport.write(build_close_frame(status.WS_1013_TRY_AGAIN_LATER, _SLOW_CONSUMER.encode()))
        transport.close()
        patience = self.config.settings.close_timeout
        asyncio.get_running_loop().call_later(
            patience, _abort_unless_draining, transport, transport.get_write_buffer_size(), patience
        )

    # ---------------------------------------------------------------- closing

    async def close(self, code: int = status.WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        """Close with *code* and *reason*; the first close wins (see GenericWebsocket.close).

        Before the handshake completed, only records the code: the driver then
        completes the handshake and closes with it. Raises ``ValueError`` for a
        code that may not be sent.
        """
        status.check_close_code(code)
        if self.state is _CONNECTING:
            self.state = _CLOSING
            self.close_code, self.close_reason = code, reason
            self.end_handshake_timer()
            return
        if self.state is not _OPEN:
            return
        self.state = _CLOSING
        self.close_code, self.close_reason = code, reason
        done = self.closing_done = asyncio.get_running_loop().create_future()
        try:
            ws = self.ws
            if ws is not None:
                await ws.close(code=code, message=truncate_reason(reason))
        finally:
            self.state = _CLOSED
            done.set_result(None)

    def end_handshake_timer(self) -> None:
        """Stop the handshake timeout (close() before accept() ends the handshake); the driver has one."""

    def mark_closed(self, code: int, reason: str = "") -> None:
        """Record that the connection ended with *code* (unless a close already recorded one)."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self.state is not _CLOSING:
            self.state = _CLOSED

    def abort(self) -> None:
        """Drop the TCP connection now (shutdown after the drain time ran out)."""
        transport = self.transport
        if self.state is not _CLOSED and transport is not None:
            transport.abort()
        self.mark_closed(status.WS_1006_ABNORMAL_CLOSURE)
