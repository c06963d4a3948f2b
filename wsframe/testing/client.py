"""The in-process test client: serves an app on a free loopback port and opens websocket connections to it."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from aiohttp import ClientResponse, ClientWSTimeout, WSServerHandshakeError, web
from aiohttp.test_utils import TestClient, TestServer

from ..exceptions import WsframeError
from .connection import WebsocketTestConnection
from .errors import TEST_CLIENT_HEADER, CapturedError, HandshakeRejectedError, _ErrorCapture
from .served import _absolute, _Served
from .timeouts import default_timeout

__all__ = ["WebsocketTestClient"]


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
