"""Testing wsframe apps: a websocket test client and the ``ws_client`` pytest fixture.

Installing wsframe registers this module as a pytest plugin (the ``pytest11``
entry point), so any test can ask for ``ws_client``::

    async def test_echo(ws_client):
        app = create_app({'ws/book/': BookWebsocket})
        async with ws_client(app).connect('/ws/book/') as ws:
            await ws.send('hi')
            assert await ws.receive() == 'hi'

The app runs in a real aiohttp server on a free loopback port (aiohttp's
``TestServer``; the client class is pytest-aiohttp's ``aiohttp_client_cls``),
so its startup and shutdown run as in production. Every wait is bounded by a
short timeout (1 s; ``wsframe_timeout`` in the pytest ini file, scaled by the
``WSFRAME_TEST_TIMEOUT_SCALE`` environment variable), so a hang fails fast.

When a handler crashes, the test shows the handler's own traceback: the
client catches the exception wsframe logs, and raises :class:`HandlerError`
from it when the connection closes with 1011 (or the handshake answers 500).
Errors nobody observed are raised when the client closes, so none pass
silently. :class:`WebsocketTestClient` works without pytest too, as an async
context manager.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final, Self

import msgspec
from aiohttp import (
    ClientError,
    ClientResponse,
    ClientSession,
    ClientTimeout,
    ClientWebSocketResponse,
    ClientWSTimeout,
    WSMsgType,
    WSServerHandshakeError,
    web,
)
from aiohttp.test_utils import TestClient, TestServer

from .. import status
from ..exceptions import ConnectionClosed, MissingDependencyError, WsframeError
from ..websocket import GenericWebsocket

__all__ = [
    "DEFAULT_TIMEOUT",
    "TIMEOUT_SCALE_ENV",
    "TEST_CLIENT_HEADER",
    "HandlerError",
    "HandshakeRejectedError",
    "CapturedError",
    "WebsocketTestClient",
    "WebsocketTestConnection",
    "WebsocketTestCluster",
    "default_timeout",
    "ws_client",
    "ws_cluster",
]

DEFAULT_TIMEOUT: Final = 1.0
"""Seconds any single wait of the test client may take, unless configured otherwise."""

TIMEOUT_SCALE_ENV: Final = "WSFRAME_TEST_TIMEOUT_SCALE"
"""Environment variable multiplying every default timeout (``3`` on a slow CI machine)."""

TEST_CLIENT_HEADER: Final = "X-Wsframe-Test-Client"
"""Header the client adds to each handshake, to tie a logged handler error to its connection."""

_configured_timeout: float = DEFAULT_TIMEOUT


def default_timeout() -> float:
    """Return the default timeout in seconds: ``wsframe_timeout`` (ini) times ``WSFRAME_TEST_TIMEOUT_SCALE``.

    Raises ``ValueError`` naming the variable when the scale is not a positive number.
    """
    raw = os.environ.get(TIMEOUT_SCALE_ENV, "1")
    try:
        scale = float(raw)
    except ValueError:
        scale = -1.0
    if not scale > 0:
        raise ValueError(f"{TIMEOUT_SCALE_ENV} must be a positive number, got {raw!r}")
    return _configured_timeout * scale


class HandlerError(WsframeError):
    """The websocket handler raised; the handler's exception is ``__cause__`` (and ``exception``).

    Raised by the test client where the test observes the crash: on receive
    after the server closed with 1011, on connect when the handshake answered
    500, or when the client closes for an error nothing observed (an exception
    in ``disconnect()``, or a 1011 the test never read).
    """

    def __init__(self, message: str, exception: BaseException) -> None:
        super().__init__(message)
        self.exception = exception


class HandshakeRejectedError(WsframeError):
    """The server answered the websocket handshake with an HTTP error instead of 101.

    ``status`` is the HTTP status: 403 when ``connect()`` did not accept, 404
    for an unknown path or a path variable that does not convert, ...
    """

    def __init__(self, path: str, status: int) -> None:
        super().__init__(f"the server answered the handshake for {path} with HTTP {status} instead of 101")
        self.path = path
        self.status = status


@dataclasses.dataclass(frozen=True, slots=True)
class CapturedError:
    """One handler exception logged by wsframe while a test client was attached."""

    message: str
    """The log message, e.g. ``BookWebsocket.receive() failed; closing with 1011``."""
    exception: BaseException
    """The exception the handler raised, with its traceback."""
    token: str
    """The test connection it belongs to (the value of :data:`TEST_CLIENT_HEADER`)."""

    def to_error(self) -> HandlerError:
        """Return the :class:`HandlerError` to raise for it, chained to the handler's exception."""
        exc = self.exception
        error = HandlerError(f"{self.message}: {type(exc).__name__}: {exc}", exc)
        error.__cause__ = exc
        return error


def _handler_of(exc: BaseException) -> GenericWebsocket | None:
    """Return the handler instance *exc* was raised for, found in its traceback's frames.

    Usually ``self`` of the method that logged it; for checks that run before
    a handler method (auth, permissions), a local variable holding the handler.
    """
    tb = exc.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        candidate = local.get("self")
        if isinstance(candidate, GenericWebsocket):
            return candidate
        for value in local.values():
            if isinstance(value, GenericWebsocket):
                return value
        tb = tb.tb_next
    return None


class _ErrorCapture(logging.Handler):
    """Keeps the exceptions wsframe logs for connections opened by one test client."""

    def __init__(self, tokens: set[str]) -> None:
        super().__init__(logging.ERROR)
        self.tokens = tokens
        self.errors: list[CapturedError] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is None or record.exc_info[1] is None:
            return
        exc = record.exc_info[1]
        handler = _handler_of(exc)
        if handler is None:
            return
        token = handler.request.headers.get(TEST_CLIENT_HEADER)
        if token in self.tokens:
            self.errors.append(CapturedError(record.getMessage(), exc, token))

    def claim(self, token: str) -> CapturedError | None:
        """Remove and return the first error of connection *token*, if any."""
        for index, error in enumerate(self.errors):
            if error.token == token:
                return self.errors.pop(index)
        return None


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


class _Connect:
    """What :meth:`WebsocketTestClient.connect` returns: an async context manager."""

    def __init__(
        self, opener: Callable[..., Awaitable[WebsocketTestConnection]], path: str, kwargs: dict[str, Any]
    ) -> None:
        self._opener = opener
        self._path = path
        self._kwargs = kwargs
        self._connection: WebsocketTestConnection | None = None

    async def __aenter__(self) -> WebsocketTestConnection:
        self._connection = await self._opener(self._path, **self._kwargs)
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.close()


class _Served(abc.ABC):
    """What the test client and the test cluster share: a started server to connect and send requests to."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start serving; does nothing when started."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection and stop serving."""

    @abc.abstractmethod
    async def request(self, method: str, path: str, **kwargs: Any) -> ClientResponse:
        """Make an HTTP request to the server (starting it if needed)."""

    @abc.abstractmethod
    async def _open(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None,
        subprotocols: tuple[str, ...],
        timeout: float | None,  # noqa: ASYNC109
    ) -> WebsocketTestConnection: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.close()

    def connect(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        subprotocols: Iterable[str] = (),
        timeout: float | None = None,
    ) -> _Connect:
        """Open a websocket to *path*, as ``async with client.connect('/ws/book/') as ws:``.

        Leaving the block closes the connection with 1000 if it is still open;
        on a cluster the kernel picks the worker. Raises
        :class:`HandshakeRejectedError` with the HTTP status when the server
        refuses the handshake (403, 404, ...), :class:`HandlerError` when
        ``connect()`` raised before accepting (HTTP 500; a cluster, whose
        handlers run in other processes, reports it as a rejection), and
        ``TimeoutError`` when the handshake takes longer than *timeout*.
        """
        return _Connect(self._open, path, {"headers": headers, "subprotocols": tuple(subprotocols), "timeout": timeout})

    async def get(self, path: str, **kwargs: Any) -> ClientResponse:
        """``GET`` *path*; see :meth:`request`."""
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> ClientResponse:
        """``POST`` *path* (``json=...`` for a JSON body); see :meth:`request`."""
        return await self.request("POST", path, **kwargs)


class WebsocketTestClient(_Served):
    """Serves *app* on a free loopback port and opens websocket connections to it.

    The server starts at the first :meth:`connect` or request (running the
    app's startup handlers) and stops in :meth:`close` (running its shutdown
    handlers: open connections get 1001). *timeout* is the default for every
    wait (see :func:`default_timeout`). With ``raise_handler_errors=True``,
    :meth:`close` raises :class:`HandlerError` for a handler exception the
    test did not observe.
    """

    def __init__(
        self,
        app: web.Application,
        *,
        timeout: float | None = None,
        raise_handler_errors: bool = True,
        client_cls: type[TestClient[Any, Any]] = TestClient,
    ) -> None:
        self.app = app
        self.timeout = default_timeout() if timeout is None else timeout
        """Default seconds for the handshake, receives and closes."""
        self.raise_handler_errors = raise_handler_errors
        self._client_cls = client_cls
        self._http: TestClient[Any, Any] | None = None
        self._tokens: set[str] = set()
        self._capture = _ErrorCapture(self._tokens)
        self._connections: list[WebsocketTestConnection] = []
        self._closed = False

    @property
    def http(self) -> TestClient[Any, Any]:
        """The aiohttp ``TestClient`` of the running server, for anything this class does not wrap.

        Raises :class:`~wsframe.exceptions.WsframeError` before :meth:`start`.
        """
        if self._http is None:
            raise WsframeError("The test server is not running yet; call 'await client.start()' first.")
        return self._http

    @property
    def handler_errors(self) -> list[CapturedError]:
        """Handler exceptions logged so far that no receive or connect has raised yet."""
        return list(self._capture.errors)

    async def start(self) -> None:
        """Start the server and run the app's startup handlers; does nothing when already started.

        Raises :class:`~wsframe.exceptions.WsframeError` after :meth:`close`,
        and whatever a startup handler raises.
        """
        if self._closed:
            raise WsframeError("This test client is closed; make a new one.")
        if self._http is not None:
            return
        logging.getLogger("wsframe").addHandler(self._capture)
        http = self._client_cls(TestServer(self.app))
        try:
            await http.start_server()
        except BaseException:
            logging.getLogger("wsframe").removeHandler(self._capture)
            await http.close()
            raise
        self._http = http

    async def close(self) -> None:
        """Close open connections, stop the server (running the app's shutdown handlers).

        Then raises :class:`HandlerError` for the first handler exception the
        test did not observe, when ``raise_handler_errors`` is set. Calling it
        again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        try:
            for connection in self._connections:
                await connection.close()
            if self._http is not None:
                await self._http.close()
        finally:
            logging.getLogger("wsframe").removeHandler(self._capture)
        if self.raise_handler_errors and self._capture.errors:
            first = self._capture.errors[0]
            error = first.to_error()
            if len(self._capture.errors) > 1:
                error.add_note(f"({len(self._capture.errors) - 1} more handler error(s) were logged)")
            self._capture.errors.clear()
            raise error

    async def request(self, method: str, path: str, **kwargs: Any) -> ClientResponse:
        """Make an HTTP request to the app (starting it if needed); *kwargs* as aiohttp's ``request``.

        The response is released when the client closes.
        """
        await self.start()
        return await self.http.request(method, _absolute(path), **kwargs)

    async def _open(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None,
        subprotocols: tuple[str, ...],
        timeout: float | None,  # noqa: ASYNC109
    ) -> WebsocketTestConnection:
        await self.start()
        wait = self.timeout if timeout is None else timeout
        token = secrets.token_hex(8)
        self._tokens.add(token)
        path = _absolute(path)
        try:
            async with asyncio.timeout(wait):
                ws = await self.http.ws_connect(
                    path,
                    headers={**(headers or {}), TEST_CLIENT_HEADER: token},
                    protocols=subprotocols,
                    timeout=ClientWSTimeout(ws_close=wait),
                    autoclose=True,
                    autoping=True,
                )
        except TimeoutError:
            raise TimeoutError(f"websocket handshake for {path} took longer than {wait:g} s") from None
        except WSServerHandshakeError as exc:
            captured = self._capture.claim(token)
            if captured is not None:
                raise captured.to_error() from captured.exception
            raise HandshakeRejectedError(path, exc.status) from None
        connection = WebsocketTestConnection(ws, path=path, token=token, capture=self._capture, timeout=wait)
        self._connections.append(connection)
        return connection


def _absolute(path: str) -> str:
    return path if path.startswith("/") else "/" + path


# ------------------------------------------------------------ real cluster


class WebsocketTestCluster(_Served):
    """Runs *app* (``module:attribute``) under real gunicorn with *workers* aiohttp workers.

    For integration tests of what one process cannot show: sends between
    workers, the Redis or IPC backend, worker restarts. The app chooses its
    backend as in production (``create_app(redis=...)``; pass its URL through
    *env*). The server listens on a free loopback port; :meth:`start` returns
    once gunicorn has booted every worker and one of them answers HTTP
    (others may still be starting their app: which worker takes a
    connection is up to the kernel).

    Handler exceptions happen in other processes: the client cannot raise
    them in the test, so :meth:`close` raises
    :class:`~wsframe.exceptions.WsframeError` quoting gunicorn's log when a
    worker logged a traceback (``raise_handler_errors=False`` to allow it).
    """

    def __init__(
        self,
        app: str,
        *,
        workers: int = 2,
        env: Mapping[str, str] | None = None,
        gunicorn_args: Iterable[str] = (),
        timeout: float | None = None,
        startup_timeout: float = 30.0,
        raise_handler_errors: bool = True,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.app = app
        self.workers = workers
        self.timeout = default_timeout() if timeout is None else timeout
        """Default seconds for the handshake, receives and closes."""
        self.startup_timeout = startup_timeout * (default_timeout() / _configured_timeout)
        self.raise_handler_errors = raise_handler_errors
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        """The base URL, ``http://127.0.0.1:<port>``."""
        self._args = [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(workers),
            "--worker-class",
            "aiohttp.GunicornWebWorker",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--graceful-timeout",
            "10",
            "--no-control-socket",  # several clusters may run at once
            *gunicorn_args,
            app,
        ]
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._log_path = Path(tempfile.mkdtemp(prefix="wsframe-cluster-")) / "gunicorn.log"
        self._process: asyncio.subprocess.Process | None = None
        self._session: ClientSession | None = None
        self._connections: list[WebsocketTestConnection] = []
        self._capture = _ErrorCapture(set())  # stays empty: errors live in the workers' log

    def _open_log(self) -> BinaryIO:
        return open(self._log_path, "ab")  # the caller closes it once gunicorn holds its own copy

    def log(self) -> str:
        """Everything gunicorn and the workers printed so far."""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def start(self) -> None:
        """Start gunicorn and wait until every worker booted; does nothing when started.

        Raises :class:`~wsframe.exceptions.WsframeError` with gunicorn's log
        when it exits or is not ready within *startup_timeout* seconds.
        """
        if self._process is not None:
            return
        with self._open_log() as log:
            self._process = await asyncio.create_subprocess_exec(
                *self._args, stdout=log, stderr=asyncio.subprocess.STDOUT, env=self._env, cwd=os.getcwd()
            )
        self._session = ClientSession()
        try:
            await self._wait_ready()
        except BaseException:
            # Never leave a gunicorn behind; the log is in the error already.
            self.raise_handler_errors = False
            await self.close()
            raise

    async def _wait_ready(self) -> None:
        process = self._process
        if process is None:  # pragma: no cover - start() made it
            raise WsframeError("internal error: gunicorn not started")
        step = 0.05
        for _ in range(int(self.startup_timeout / step) + 1):
            if process.returncode is not None:
                raise WsframeError(f"gunicorn exited with {process.returncode}:\n{self.log()}")
            if self.log().count("Booting worker") >= self.workers and await self._answers():
                return
            await asyncio.sleep(step)
        raise WsframeError(f"{self.workers} workers were not ready within {self.startup_timeout:g} s:\n{self.log()}")

    async def _answers(self) -> bool:
        """True once a worker answers HTTP (any status: the app need not serve this path)."""
        if self._session is None:  # pragma: no cover - start() made it
            return False
        try:
            async with self._session.get(f"{self.url}/.wsframe-ready", timeout=ClientTimeout(total=1)) as response:
                await response.read()
        except (ClientError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        """Close open connections, stop gunicorn gracefully (SIGTERM), and check the log.

        Raises :class:`~wsframe.exceptions.WsframeError` quoting the log when
        a worker logged a traceback and ``raise_handler_errors`` is set.
        """
        for connection in self._connections:
            await connection.close()
        self._connections.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        log = self.log()
        if self.raise_handler_errors and "Traceback (most recent call last)" in log:
            start = log.index("Traceback (most recent call last)")
            raise WsframeError(f"a worker logged an error:\n{log[max(0, start - 300) : start + 3000]}")

    async def request(self, method: str, path: str, **kwargs: Any) -> ClientResponse:
        """Make an HTTP request to the cluster (starting it if needed); *kwargs* as aiohttp's ``request``.

        Read the body before the next request on the same worker matters; the
        response is released when the cluster closes.
        """
        await self.start()
        if self._session is None:  # pragma: no cover - start() made it
            raise WsframeError("internal error: no HTTP session")
        response = await self._session.request(method, self.url + _absolute(path), **kwargs)
        await response.read()
        return response

    async def _open(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None,
        subprotocols: tuple[str, ...],
        timeout: float | None,  # noqa: ASYNC109
    ) -> WebsocketTestConnection:
        await self.start()
        if self._session is None:  # pragma: no cover - start() made it
            raise WsframeError("internal error: no HTTP session")
        wait = self.timeout if timeout is None else timeout
        path = _absolute(path)
        try:
            async with asyncio.timeout(wait):
                ws = await self._session.ws_connect(
                    self.url + path,
                    headers=headers,
                    protocols=subprotocols,
                    timeout=ClientWSTimeout(ws_close=wait),
                )
        except TimeoutError:
            raise TimeoutError(f"websocket handshake for {path} took longer than {wait:g} s") from None
        except WSServerHandshakeError as exc:
            raise HandshakeRejectedError(path, exc.status) from None
        connection = WebsocketTestConnection(ws, path=path, token="", capture=self._capture, timeout=wait)
        self._connections.append(connection)
        return connection


# ------------------------------------------------------------ pytest plugin


def pytest_addoption(parser: Any) -> None:
    """Add the ``wsframe_timeout`` ini option."""
    parser.addini(
        "wsframe_timeout",
        f"seconds any wait of wsframe's test client may take (default {DEFAULT_TIMEOUT})",
        default=str(DEFAULT_TIMEOUT),
    )


def pytest_configure(config: Any) -> None:
    """Read ``wsframe_timeout``; raises ``ValueError`` when it is not a positive number."""
    global _configured_timeout
    raw = config.getini("wsframe_timeout")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"wsframe_timeout must be a positive number of seconds, got {raw!r}")
    _configured_timeout = value


WsClientFactory = Callable[..., WebsocketTestClient]
"""The type of the ``ws_client`` fixture: ``ws_client(app, **options) -> WebsocketTestClient``."""


async def _ws_client(aiohttp_client_cls: type[TestClient[Any, Any]]) -> AsyncIterator[WsClientFactory]:
    """Factory fixture: ``ws_client(app)`` returns the :class:`WebsocketTestClient` of *app*.

    The same app gives the same client within a test; keyword options
    (``timeout=``, ``raise_handler_errors=``) go to the client the first time.
    After the test every client is closed (the apps shut down), raising
    :class:`HandlerError` for a handler exception the test did not observe.
    """
    clients: dict[int, tuple[WebsocketTestClient, dict[str, Any]]] = {}

    def factory(app: web.Application, **options: Any) -> WebsocketTestClient:
        known = clients.get(id(app))
        if known is not None:
            if options and options != known[1]:
                raise WsframeError(
                    "ws_client(app) already made a client for this app with other options; "
                    "pass the options the first time only."
                )
            return known[0]
        client = WebsocketTestClient(app, client_cls=aiohttp_client_cls, **options)
        clients[id(app)] = (client, options)
        return client

    yield factory
    errors: list[HandlerError] = []
    for client, _ in reversed(clients.values()):
        try:
            await client.close()
        except HandlerError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


WsClusterFactory = Callable[..., WebsocketTestCluster]
"""The type of the ``ws_cluster`` fixture: ``ws_cluster('module:app', workers=2, ...) -> WebsocketTestCluster``."""


async def _ws_cluster() -> AsyncIterator[WsClusterFactory]:
    """Factory fixture: ``ws_cluster('module:app', workers=2, env={...})`` returns a :class:`WebsocketTestCluster`.

    The cluster starts at its first connection or request (or ``await
    cluster.start()``) and is stopped after the test; a traceback in the
    workers' log then fails the test.
    """
    clusters: list[WebsocketTestCluster] = []

    def factory(app: str, **options: Any) -> WebsocketTestCluster:
        cluster = WebsocketTestCluster(app, **options)
        clusters.append(cluster)
        return cluster

    yield factory
    errors: list[WsframeError] = []
    for cluster in reversed(clusters):
        try:
            await cluster.close()
        except WsframeError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def _make_fixture() -> Any:
    try:
        import pytest_aiohttp  # noqa: F401  # provides aiohttp_client_cls
        import pytest_asyncio
    except ImportError:  # pragma: no cover - only without the test extra
        import pytest

        @pytest.fixture(name="ws_client")
        def missing() -> WsClientFactory:
            raise MissingDependencyError(
                "The ws_client fixture needs pytest-aiohttp: pip install pytest-aiohttp (or wsframe's testing extra)"
            )

        return missing
    return pytest_asyncio.fixture(_ws_client, name="ws_client")


def _make_cluster_fixture() -> Any:
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - only without the test extra
        import pytest

        @pytest.fixture(name="ws_cluster")
        def missing() -> WsClusterFactory:
            raise MissingDependencyError(
                "The ws_cluster fixture needs pytest-aiohttp: pip install pytest-aiohttp (or wsframe's testing extra)"
            )

        return missing
    return pytest_asyncio.fixture(_ws_cluster, name="ws_cluster")


ws_client = _make_fixture()
"""The ``ws_client`` fixture (see ``_ws_client``)."""

ws_cluster = _make_cluster_fixture()
"""The ``ws_cluster`` fixture (see ``_ws_cluster``)."""
