"""The heartbeat: one timer per registry that pings silent connections and drops dead ones.

aiohttp's own heartbeat (``WebSocketResponse(heartbeat=...)``) resets a
deadline on every message read and starts a task for every ping; measured
under callgrind that cost a sixth of the echo rate and a fifth of the
connection rate. This one does no work per message: a connection's data
messages are already counted (``Connection.received_messages``), and a ping or
pong from the peer sets one plain attribute (``Connection.seen = -1``). A
sweep every *tick* (a quarter of the shortest heartbeat in use) walks the
registry's connections and compares:

- traffic since the last sweep (any data message, ping or pong): the
  connection is alive, its quiet count starts again;
- quiet for ``heartbeat`` seconds (rounded up to whole ticks): one ping, through
  the connection's bounded buffer like any frame (``Connection.write_control``);
- still quiet ``heartbeat / 2`` seconds after that ping: dropped at the TCP level,
  close code 1006 for ``disconnect()``, as a vanished peer.

So a peer is pinged after ``heartbeat`` to ``heartbeat + tick`` seconds of
silence and dropped after ``1.5 * heartbeat`` to ``1.5 * heartbeat + tick``.
Nothing registers with the heartbeat: it reads the registry's own dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping

from aiohttp import WSMsgType

from ._connection import Connection, State
from .codec import build_frame
from .config import HandlerConfig
from .exceptions import ConnectionClosed

__all__ = ["Heartbeat", "TICKS_PER_HEARTBEAT", "PING_FRAME"]

logger = logging.getLogger("wsframe.websocket")

TICKS_PER_HEARTBEAT = 4
"""Sweeps per (shortest) heartbeat interval: how finely silence is measured."""

PING_FRAME = build_frame(b"", WSMsgType.PING)
"""The ping every heartbeat sends: empty, built once."""

_OPEN = State.OPEN


class Heartbeat:
    """Pings and drops for every connection in *connections* (the registry's dict), on one timer.

    :meth:`watch` is told each handler configuration that opens a connection
    (the registry does it when the configuration differs from the last one);
    the timer runs while the event loop that started it does, until :meth:`stop`.
    """

    __slots__ = ("_configs", "_limits", "_loop", "_timer", "connections", "last", "tick")

    def __init__(self, connections: Mapping[str, Connection]) -> None:
        self.connections = connections
        self.last: HandlerConfig | None = None
        """The configuration :meth:`watch` saw last (the registry skips the call for the same one)."""
        self.tick: float | None = None
        """Seconds between sweeps; None until a connection with a heartbeat opened."""
        self._configs: dict[int, HandlerConfig] = {}
        self._limits: dict[int, tuple[int, int]] = {}
        """id(config) -> (quiet ticks before the ping, quiet ticks before the drop), for those with a heartbeat."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, config: HandlerConfig) -> None:
        """Take *config*'s heartbeat into account, and start the timer if it is not running.

        Outside a running event loop (a registry used without serving) it does nothing.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop is not self._loop:  # the first start, or the app serves again on a new loop
            self._cancel_timer()
            self._loop = loop
        self.last = config
        if id(config) not in self._configs:
            self._configs[id(config)] = config
            interval = config.settings.heartbeat
            if interval:
                tick = interval / TICKS_PER_HEARTBEAT
                if self.tick is None or tick < self.tick:
                    self.tick = tick
                    self._cancel_timer()
                self._recompute()
        if self._timer is None and self.tick is not None:
            self._timer = loop.call_later(self.tick, self._sweep)

    def _recompute(self) -> None:
        # A shorter tick makes the quiet counts already made mean less time than
        # they did: a connection is then pinged and dropped later, never early.
        tick = self.tick
        assert tick is not None
        for key, config in self._configs.items():
            interval = config.settings.heartbeat
            if interval:
                ping = math.ceil(interval / tick - 1e-9)
                self._limits[key] = (ping, ping + math.ceil(interval / 2 / tick - 1e-9))

    def stop(self) -> None:
        """Stop the timer (app shutdown); the next :meth:`watch` starts it again."""
        self._cancel_timer()
        self.last = None
        self._configs.clear()
        self._limits.clear()
        self.tick = None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self) -> None:
        self._timer = None
        try:
            self.sweep()
        finally:
            if self.tick is not None and self._loop is not None and not self._loop.is_closed():
                self._timer = self._loop.call_later(self.tick, self._sweep)

    def sweep(self) -> None:
        """One pass: reset the connections that were heard from, ping or drop the quiet ones."""
        limits = self._limits
        for connection in self.connections.values():
            heard = connection.received_messages
            if connection.seen != heard:
                connection.seen = heard
                connection.quiet = 0
                continue
            quiet = connection.quiet = connection.quiet + 1
            limit = limits.get(id(connection.config))
            if limit is None or connection.state is not _OPEN:
                continue  # no heartbeat here; or closing, which close_timeout bounds
            if quiet == limit[0]:
                # ConnectionClosed: closed as a slow consumer by this very write; its close is under way.
                with contextlib.suppress(ConnectionClosed):
                    connection.write_control(PING_FRAME)
            elif quiet >= limit[1]:
                logger.debug("dropping connection %s: no answer to a ping", connection.connection_id)
                connection.abort()
