"""What the in-process test client and the gunicorn test cluster share: ``connect()``, HTTP requests, ``async with``.

The base class is private: its methods are documented on the public subclasses.
"""

from __future__ import annotations

import abc
import types
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Self

from aiohttp import ClientResponse

from .connection import WebsocketTestConnection

__all__: list[str] = []


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


def _absolute(path: str) -> str:
    return path if path.startswith("/") else "/" + path
