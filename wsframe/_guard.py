"""Connections that have not sent a complete HTTP request yet: a deadline and a cap per address.

aiohttp hands a request on only once its request line and headers are in, so
nothing above the protocol sees a client that sends them slowly (slowloris):
the handshake timeout of ``wsframe._session`` starts too late for it. This
module acts on aiohttp's :class:`aiohttp.web.Server` (the protocol factory
every ``AppRunner`` builds, under ``wsframe run``, ``web.run_app``, gunicorn's
``aiohttp.GunicornWebWorker`` and pytest-aiohttp alike) through its public
hooks ``connection_made``, ``connection_lost`` and ``request_factory``:

- a connection whose first request is not complete within *timeout* seconds
  gets ``408 Request Timeout`` and is closed;
- past *max_per_ip* such unfinished connections from one address, a new one
  gets ``429 Too Many Requests`` and is closed at once.

Once the first request is complete the connection is no longer watched: its
handler (a websocket's handshake timeout included) takes over. Hostile input
that aiohttp's parser refuses (a 64 KiB header line) is logged as one info
line instead of an ERROR with a traceback.

The one private piece of aiohttp used is ``Application._make_handler``, the
method every runner calls to build the Server: :func:`install` wraps it on
the application instance (tests/test_guard.py fails if that stops working).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger

__all__ = ["HandshakeGuard", "install", "HostileInputLogger"]

logger = logging.getLogger("wsframe.websocket")

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_TOO_MANY = b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_MAX_DETAIL = 200
"""Characters of a parser error's message kept in its log line (it may quote the client's bytes)."""


class HandshakeGuard:
    """Watches one Server's connections until their first request is complete.

    *timeout*: seconds a connection may take to send its first request line
    and headers. *max_per_ip*: connections from one address that may be
    unfinished at once (``None``: no cap). A Unix socket's clients all count
    as one address, as do all clients behind one proxy.

    One timer for all of them, not one per connection: every connection gets
    the same timeout, so arrival order is deadline order and a deque holds
    them sorted. A connection that completes its request only leaves
    :attr:`pending`; its deque entry (its id, not the connection: nothing
    keeps a finished connection alive) is skipped when its deadline comes.
    """

    __slots__ = ("by_ip", "deadlines", "loop", "max_per_ip", "pending", "timeout", "timer", "warned")

    def __init__(self, timeout: float, max_per_ip: int | None, loop: asyncio.AbstractEventLoop) -> None:
        self.timeout = timeout
        self.max_per_ip = max_per_ip
        self.loop = loop
        self.pending: dict[int, tuple[Any, str, float]] = {}
        """id() of each unfinished connection -> the connection (an aiohttp RequestHandler), address, deadline."""
        self.deadlines: collections.deque[tuple[float, int]] = collections.deque()
        """(deadline, id) in deadline order, settled ones included until their turn."""
        self.timer: asyncio.TimerHandle | None = None
        self.by_ip: dict[str, int] = {}
        self.warned: set[str] = set()
        """Addresses at the cap that were logged already: one line per episode, not per socket."""

    def attach(self, server: web.Server) -> web.Server:
        """Hook *server*'s connection events; returns it. Call before it serves a connection."""
        made, lost, make_request = server.connection_made, server.connection_lost, server.request_factory
        pending = self.pending

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self.opened(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            entry = pending.pop(id(handler), None)
            if entry is not None:
                self._uncount(entry[1])
            lost(handler, exc)

        def request_factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
            # The request line and headers are in: from here the handler's own timeouts apply.
            entry = pending.pop(id(protocol), None)
            if entry is not None:
                self._uncount(entry[1])
            return make_request(message, payload, protocol, writer, task)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        server.request_factory = request_factory
        return server

    def opened(self, handler: Any, transport: asyncio.Transport) -> None:
        """Start watching a new connection, or refuse it with 429 when its address is at the cap."""
        address = ""
        cap = self.max_per_ip
        if cap is not None:
            peer = transport.get_extra_info("peername")
            address = peer[0] if isinstance(peer, tuple) and peer else ""
            count = self.by_ip.get(address, 0)
            if count >= cap:
                if address not in self.warned:
                    self.warned.add(address)
                    logger.warning(
                        "refusing connections from %s: %d of its connections have not sent a complete"
                        " request yet (max_handshakes_per_ip)",
                        address,
                        count,
                    )
                transport.write(_TOO_MANY)
                handler.force_close()
                return
            self.by_ip[address] = count + 1
        deadline = self.loop.time() + self.timeout
        key = id(handler)
        self.pending[key] = (handler, address, deadline)
        self.deadlines.append((deadline, key))
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self.expire)

    def expire(self) -> None:
        """Answer 408 and close every connection whose deadline passed without a complete request."""
        self.timer = None
        deadlines, pending = self.deadlines, self.pending
        now = self.loop.time()
        while deadlines and deadlines[0][0] <= now:
            deadline, key = deadlines.popleft()
            entry = pending.get(key)
            if entry is None or entry[2] != deadline:
                continue  # completed its request or gone (its id maybe reused by a later one)
            del pending[key]
            handler, address, _ = entry
            self._uncount(address)
            logger.debug("closing a connection from %s: no complete request within %s s", address, self.timeout)
            transport = handler.transport
            if transport is not None:
                transport.write(_TIMED_OUT)
            handler.force_close()
        if deadlines:
            self.timer = self.loop.call_at(deadlines[0][0], self.expire)

    def _uncount(self, address: str) -> None:
        if self.max_per_ip is None:
            return
        count = self.by_ip.get(address, 0) - 1
        if count > 0:
            self.by_ip[address] = count
        else:
            self.by_ip.pop(address, None)
            self.warned.discard(address)


class HostileInputLogger:
    """aiohttp's server logger, with requests its parser refused logged as one info line.

    aiohttp logs a malformed request (an overlong line, a bad header) with
    ``logger.exception``: an ERROR and a traceback that any client can cause.
    Everything else goes to the wrapped logger unchanged.
    """

    __slots__ = ("wrapped",)

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        """Log *msg* as ``Logger.exception`` does, but as one info line for a refused request."""
        if isinstance(exc_info, HttpProcessingError):
            self.wrapped.info(msg + ": %s: %s", *args, type(exc_info).__name__, _one_line(exc_info))
            return
        self.wrapped.exception(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: str, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        """Log *msg* at debug level; a refused request (non-HTTP bytes) as one line, no traceback."""
        if isinstance(exc_info, HttpProcessingError):
            self.wrapped.debug(msg + ": %s: %s", *args, type(exc_info).__name__, _one_line(exc_info))
            return
        self.wrapped.debug(msg, *args, exc_info=exc_info, **kwargs)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:_MAX_DETAIL]


def install(app: web.Application, timeout: float, max_per_ip: int | None) -> None:
    """Make every runner of *app* build its Server with a :class:`HandshakeGuard` attached.

    Wraps ``app._make_handler`` on this instance only; an application whose
    aiohttp has no such method is left as it is, with a warning.
    """
    make_handler: Callable[..., web.Server] | None = getattr(app, "_make_handler", None)
    if make_handler is None:  # pragma: no cover - a future aiohttp
        logger.warning("this aiohttp builds servers differently: slow handshakes are not bounded")
        return

    def guarded_make_handler(**kwargs: Any) -> web.Server:
        kwargs["logger"] = HostileInputLogger(kwargs.get("logger", server_logger))
        server = make_handler(**kwargs)
        loop = kwargs.get("loop") or asyncio.get_running_loop()
        return HandshakeGuard(timeout, max_per_ip, loop).attach(server)

    # object.__setattr__: web.Application warns on custom attributes in debug mode.
    object.__setattr__(app, "_make_handler", guarded_make_handler)
