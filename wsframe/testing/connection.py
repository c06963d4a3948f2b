"""One open websocket connection of a test: send, receive with a timeout, close, drop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, Final

import msgspec
from aiohttp import ClientWebSocketResponse, WSMsgType

from .. import status
from ..exceptions import ConnectionClosed
from ..history import HistoryFrame, decode_history_frame
from .errors import _ErrorCapture

__all__ = ["WebsocketTestConnection"]

_END: Final = object()


class WebsocketTestConnection:
    """One open websocket connection of a test, made by :meth:`WebsocketTestClient.connect`.

    A background task reads frames as they arrive (answering pings and the
    server's close frame), so timeouts never disturb the connection.
    """

    def __init__(
        self,
        ws: ClientWebSocketResponse,
        *,
        path: str,
        token: str,
        capture: _ErrorCapture,
        timeout: float,
    ) -> None:
        self.path = path
        """The path this connection was opened on."""
        self.timeout = timeout
        """Default seconds for :meth:`receive`, :meth:`close` and :meth:`wait_closed`."""
        self._ws = ws
        self._token = token
        self._capture = capture
        self._messages: asyncio.Queue[object] = asyncio.Queue()
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._closed = asyncio.Event()
        self._closing = False
        self._reader = asyncio.create_task(self._read(), name=f"wsframe test reader {path}")

    # ------------------------------------------------------------ properties

    @property
    def close_code(self) -> int | None:
        """The code of the close that ended the connection: the server's when it closed first, ours
        when we did (:meth:`close`), 1006 when the TCP connection ended without a close frame.

        ``None`` while the connection is open.
        """
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        """The reason that goes with :attr:`close_code` (``''`` when none); ``None`` while open."""
        return self._close_reason

    @property
    def closed(self) -> bool:
        """True once the connection has closed, from either side."""
        return self._closed.is_set()

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose in ``accept(subprotocol=...)``, if any."""
        return self._ws.protocol

    # --------------------------------------------------------------- sending

    async def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Send a text frame for ``str``, a binary frame for bytes-like data.

        Raises ``TypeError`` for anything else (use :meth:`send_json`), and
        :class:`~wsframe.exceptions.ConnectionClosed` when the connection is closed.
        """
        if isinstance(data, str):
            await self.send_text(data)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            await self.send_bytes(data)
        else:
            raise TypeError(f"send() takes str or bytes, got {type(data).__name__}; use send_json() for JSON")

    async def send_text(self, data: str) -> None:
        """Send *data* as a text frame. Raises ``ConnectionClosed`` when the connection is closed."""
        self._check_open()
        await self._ws.send_str(data)

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send *data* as a binary frame. Raises ``ConnectionClosed`` when the connection is closed."""
        self._check_open()
        await self._ws.send_bytes(bytes(data))

    async def send_json(self, data: Any) -> None:
        """Send *data* encoded as compact JSON (msgspec) in a text frame.

        Raises ``TypeError`` when *data* is not JSON-encodable (nothing is
        sent), ``ConnectionClosed`` when the connection is closed.
        """
        await self.send_text(msgspec.json.encode(data).decode())

    # ------------------------------------------------------------- receiving

    async def receive(self, *, timeout: float | None = None) -> str | bytes:  # noqa: ASYNC109 - a per-call bound, as in channels
        """Return the next message: ``str`` for a text frame, ``bytes`` for binary.

        Messages that arrived before the server closed are still returned.
        Then raises :class:`HandlerError` (chained to the handler's exception)
        when the server closed with 1011 because the handler crashed, and
        :class:`~wsframe.exceptions.ConnectionClosed` with the code and reason
        otherwise. Raises ``TimeoutError`` when nothing arrives within
        *timeout* seconds (default :attr:`timeout`); the connection stays usable.
        """
        __tracebackhide__ = True
        wait = self.timeout if timeout is None else timeout
        if self._messages.empty() and self._closed.is_set():
            self._raise_closed()
        try:
            item = await asyncio.wait_for(self._messages.get(), wait)
        except TimeoutError:
            raise TimeoutError(f"no message on {self.path} within {wait:g} s") from None
        if item is _END:
            self._messages.put_nowait(_END)  # later receives see the close too
            self._raise_closed()
        if isinstance(item, (str, bytes)):
            return item
        raise RuntimeError(f"internal error: unexpected queue item {item!r}")  # pragma: no cover

    async def receive_text(self, *, timeout: float | None = None) -> str:  # noqa: ASYNC109 - a per-call bound, as in channels
        """Return the next message, which must be a text frame (``TypeError`` otherwise); see :meth:`receive`."""
        __tracebackhide__ = True
        message = await self.receive(timeout=timeout)
        if not isinstance(message, str):
            raise TypeError(f"expected a text frame on {self.path}, got a binary frame: {message[:60]!r}")
        return message

    async def receive_bytes(self, *, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 - a per-call bound, as in channels
        """Return the next message, which must be a binary frame (``TypeError`` otherwise); see :meth:`receive`."""
        __tracebackhide__ = True
        message = await self.receive(timeout=timeout)
        if not isinstance(message, bytes):
            raise TypeError(f"expected a binary frame on {self.path}, got a text frame: {message[:60]!r}")
        return message

    async def receive_json(self, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - a per-call bound, as in channels
        """Return the next message decoded as JSON (text or binary frame); see :meth:`receive`.

        Raises ``ValueError`` (``msgspec.DecodeError``) quoting the start of
        the message when it is not valid JSON.
        """
        __tracebackhide__ = True
        message = await self.receive(timeout=timeout)
        try:
            return msgspec.json.decode(message)
        except msgspec.DecodeError as exc:
            raise msgspec.DecodeError(f"message on {self.path} is not JSON ({exc}): {message[:60]!r}") from None

    async def receive_group_message(self, *, timeout: float | None = None) -> HistoryFrame:  # noqa: ASYNC109 - a per-call bound, as in channels
        """Return the next message as a history group's frame (``group``, ``epoch``, ``offset``, ``data``).

        The "not recovered" signal comes back with ``recovered`` False. Raises
        ``ValueError`` quoting the start of the message when it is not such a
        frame; otherwise as :meth:`receive`.
        """
        __tracebackhide__ = True
        message = await self.receive(timeout=timeout)
        try:
            return decode_history_frame(message)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            shown = message[:60]
            raise ValueError(f"message on {self.path} is not a history group's frame ({exc}): {shown!r}") from None

    # --------------------------------------------------------------- closing

    async def close(self, code: int = status.WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        """Close cleanly: send a close frame with *code* and *reason*, wait for the server's reply.

        Afterwards :attr:`close_code` and :attr:`close_reason` are *code* and
        *reason* (the server's ``disconnect()`` gets *code*). Does nothing when
        the connection is already closed. If the server does not reply within
        :attr:`timeout`, the TCP connection is dropped and :attr:`close_code`
        is 1006.
        """
        if self._closed.is_set():
            return
        self._closing = True
        await self._ws.close(code=code, message=reason.encode())
        await self._finish()
        if self._ws.close_code == status.WS_1006_ABNORMAL_CLOSURE:  # no reply in time
            self._set_closed(status.WS_1006_ABNORMAL_CLOSURE, "")
        self._set_closed(code, reason)

    async def drop(self) -> None:
        """Drop the TCP connection without a close frame, as a crashed tab or a lost network would.

        The server sees the connection end abnormally: its ``disconnect()``
        runs with 1006. Afterwards :attr:`close_code` is 1006.
        """
        if self._closed.is_set():
            return
        sock = self._ws.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)
        self._set_closed(status.WS_1006_ABNORMAL_CLOSURE, "")
        await self._finish()
        # The TCP connection is dead; release it without a closing handshake.
        await self._ws.close(code=status.WS_1006_ABNORMAL_CLOSURE)

    async def wait_closed(self, *, timeout: float | None = None) -> int:  # noqa: ASYNC109 - a per-call bound, as in channels
        """Wait until the server closes the connection and return the close code.

        Messages still unread are discarded. Raises :class:`HandlerError`
        when the server closed with 1011 because the handler crashed, and
        ``TimeoutError`` when the connection is still open after *timeout*
        seconds (default :attr:`timeout`).
        """
        __tracebackhide__ = True
        wait = self.timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(self._closed.wait(), wait)
        except TimeoutError:
            raise TimeoutError(f"{self.path} is still open after {wait:g} s") from None
        while not self._messages.empty():
            self._messages.get_nowait()
        self._messages.put_nowait(_END)
        self._raise_handler_error()
        code = self._close_code
        if code is None:  # pragma: no cover - _closed is only set with a code
            raise RuntimeError("internal error: closed without a code")
        return code

    # -------------------------------------------------------------- internal

    def _check_open(self) -> None:
        if self._closed.is_set() or self._ws.closed:
            self._raise_closed()

    def _raise_handler_error(self) -> None:
        __tracebackhide__ = True  # pytest: show the test and the handler, not this
        if self._close_code == status.WS_1011_INTERNAL_ERROR:
            captured = self._capture.claim(self._token)
            if captured is not None:
                raise captured.to_error()

    def _raise_closed(self) -> None:
        __tracebackhide__ = True  # pytest: show the test and the handler, not this
        self._raise_handler_error()
        raise ConnectionClosed(self._close_code or status.WS_1006_ABNORMAL_CLOSURE, self._close_reason or "")

    def _set_closed(self, code: int, reason: str) -> None:
        if not self._closed.is_set():
            self._close_code, self._close_reason = code, reason
            self._closed.set()
            self._messages.put_nowait(_END)

    async def _read(self) -> None:
        ws = self._ws
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                self._messages.put_nowait(msg.data)
                continue
            if self._closing and msg.type is not WSMsgType.CLOSE:
                return  # our close() is under way and records the outcome
            if msg.type is WSMsgType.CLOSE:
                # aiohttp has already answered with the matching close frame.
                self._set_closed(msg.data, msg.extra or "")
            elif msg.type is WSMsgType.CLOSING:
                # Our close() runs in another task and finishes the handshake itself.
                return
            elif msg.type is WSMsgType.ERROR:
                # A protocol error or an oversized frame; aiohttp closed with the matching code.
                self._set_closed(ws.close_code or status.WS_1006_ABNORMAL_CLOSURE, "")
            else:
                # CLOSED: the TCP connection ended without a close frame. aiohttp
                # reports 1000 for that; for a test it is an abnormal closure.
                self._set_closed(status.WS_1006_ABNORMAL_CLOSURE, "")
            return

    async def _finish(self) -> None:
        """Wait for the reader task to stop (it does once a close is under way)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), self.timeout)
        except TimeoutError:
            self._reader.cancel()
