"""The process registry: which connections live here, and how to reach any id.

A connection id is 32 hex characters: the first 8 are the id of the node
(process) that owns it, the other 24 come from :mod:`secrets`. A send to an id
therefore goes to exactly one process: directly when it is this one, through
the backend otherwise. Ids are unguessable; treat them as capabilities.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import WSMsgType, web

from ._connection import Connection
from ._deadlines import Deadlines
from ._heartbeat import Heartbeat
from ._histories import HistoryGroups
from ._ids import CONNECTION_ID_LENGTH, NODE_ID_LENGTH, new_connection_id, new_node_id, validate_group_name
from ._membership import GroupMembership
from ._streams import GroupStream, HistoryStats
from ._tally import Tally
from .backends.base import Backend, Envelope
from .codec import build_frame, encode_frame
from .exceptions import ApplicationNotFoundError, ConnectionClosed
from .history import History

__all__ = [
    "Registry",
    "REGISTRY_KEY",
    "NODE_ID_LENGTH",
    "CONNECTION_ID_LENGTH",
    "get_registry",
    "validate_group_name",
]

logger = logging.getLogger("wsframe.registry")

_NEVER = 1 << 62

FINISH_SECONDS = 2.0
"""How long shutdown waits, after the drain, for handlers to finish disconnect()."""


class Registry(GroupMembership):
    """Connections owned by this process, keyed by connection id; groups come from :class:`GroupMembership`.

    ``node_id`` is drawn again at every app startup, so each forked worker has
    its own even when the app object was created before the fork.
    """

    def __init__(self, backend: Backend, history: Mapping[str, History] | None = None) -> None:
        self.backend = backend
        self.history: Mapping[str, History] = history or {}
        """Group-name prefix -> the history its groups keep (``create_app(history=...)``)."""
        self.node_id = new_node_id()
        self.connections: dict[str, Connection] = {}
        self.groups: dict[str, dict[str, Connection]] = {}
        self.histories = HistoryGroups(self.history, backend, self.groups, self.spawn)
        """This process's groups with history (their streams and counters)."""
        self.tally = Tally()
        """Totals of connections that ended and handshakes refused (read through wsframe.stats())."""
        self.heartbeat = Heartbeat(self.connections)
        """Pings quiet connections and drops dead ones: one timer for all of them."""
        # A backend that keeps no membership (one process) is not awaited on
        # every join and leave: those run for every connection of a chat app.
        self.tracks_members = (
            type(backend).group_joined is not Backend.group_joined or type(backend).group_left is not Backend.group_left
        )
        """Whether the backend keeps group membership (then joins and leaves must be awaited)."""
        """Local members of each group with at least one member here."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.shutting_down = False
        """Set when app shutdown begins: connections accepted from then on are closed with 1001."""
        self.unfinished = 0
        """Accepted connections whose handler has not finished (what shutdown waits for)."""
        self.handshakes: dict[float, Deadlines] = {}
        """The handshake deadlines of this app's connections, one timer per timeout (see :meth:`deadlines`)."""
        self.burst_at = _NEVER
        self.on_burst: Callable[[], None] | None = None
        """Called by :meth:`add` when ``unfinished`` reaches ``burst_at`` (wsframe._freeze sets both)."""
        self._drained: asyncio.Future[None] | None = None

    def new_connection_id(self) -> str:
        """Return a fresh id owned by this node."""
        return new_connection_id(self.node_id)

    def local_members(self, group: str) -> list[str]:
        """Ids of this node's connections in *group* (empty when none is here); what backends ask."""
        members = self.groups.get(group)
        return list(members) if members else []

    def local_groups(self) -> list[str]:
        """Groups with at least one member on this node; what a backend re-asserts to its presence."""
        return list(self.groups)

    @property
    def streams(self) -> dict[str, GroupStream]:
        """The history groups with members here: their ordered delivery."""
        return self.histories.streams

    @property
    def history_stats(self) -> HistoryStats:
        """What delivery to history groups counted in this process."""
        return self.histories.stats

    def check_history(self) -> None:
        """Have every history group with members here read what it may have missed (the backend reconnected)."""
        self.histories.check()

    def add(self, connection: Connection) -> None:
        """Make *connection* reachable by id (called on accept); :meth:`finished` must follow."""
        self.connections[connection.connection_id] = connection
        self.unfinished += 1
        if self.unfinished >= self.burst_at and self.on_burst is not None:
            self.on_burst()
        if connection.config is not self.heartbeat.last and not self.shutting_down:  # (once per handler class)
            self.heartbeat.watch(connection.config)

    def deadlines(self, timeout: float, expired: Callable[[Any], object]) -> Deadlines:
        """The :class:`~wsframe._deadlines.Deadlines` of *timeout* seconds (made with *expired* on first use)."""
        deadlines = self.handshakes.get(timeout)
        if deadlines is None:
            deadlines = self.handshakes[timeout] = Deadlines(timeout, expired)
        return deadlines

    def finished(self) -> None:
        """Count one accepted connection whose handler is done (groups left, disconnect() run)."""
        self.unfinished -= 1
        drained = self._drained
        if not self.unfinished and drained is not None and not drained.done():
            drained.set_result(None)

    def discard(self, connection_id: str) -> None:
        """Forget *connection_id*; unknown ids are ignored."""
        self.connections.pop(connection_id, None)

    async def on_startup(self) -> None:
        """Draw this process's node id and start the backend."""
        self.node_id = new_node_id()
        self.shutting_down = False
        self.heartbeat.stop()  # (a timer left from a loop that ended without a shutdown)
        await self.backend.on_startup(self)

    async def on_shutdown(self, code: int, reason: str, drain_seconds: float) -> None:
        """Close every connection with *code* within *drain_seconds*, then stop the backend.

        Connections that have not finished their closing handshake by then are
        dropped at the TCP level. Then their handlers get up to
        ``FINISH_SECONDS`` more to leave their groups and run ``disconnect()``
        (which may use the backend), so shutdown waits at most
        ``drain_seconds + FINISH_SECONDS``.
        """
        # From here on, members leave their groups locally only: the backend
        # drops this whole node from presence when it stops (Redis deletes the
        # node's liveness key), instead of one round trip per connection.
        self.shutting_down = True
        self.heartbeat.stop()
        connections = list(self.connections.values())
        if connections:
            logger.info("closing %d websocket connection(s) with %d", len(connections), code)
            tasks = [asyncio.ensure_future(c.close(code, reason)) for c in connections]
            _, pending = await asyncio.wait(tasks, timeout=drain_seconds)
            for task in pending:
                task.cancel()
            for connection in connections:
                connection.abort()
        # Also when no connection is registered any more: a disconnect() may
        # still be running (its connection already left the registry), and it
        # may use the backend, which stops next.
        await self._wait_for_handlers()
        await self.backend.on_shutdown()

    async def _wait_for_handlers(self) -> None:
        # A counter and one future, not a future per connection: that would be
        # made and resolved for every connection, and kept while it is open.
        if not self.unfinished:
            return
        drained = self._drained = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(drained, FINISH_SECONDS)
        except TimeoutError:
            logger.warning("%d handler(s) still in disconnect() at shutdown", self.unfinished)
        finally:
            self._drained = None

    async def send(self, connection_id: str, data: Any) -> None:
        """Deliver *data* to *connection_id* wherever it lives (see :func:`send_message_to_websocket`)."""
        payload, opcode = encode_frame(data)
        connection = self.connections.get(connection_id)
        if connection is not None:
            if connection.compressed:
                await self._send_local(connection, payload, opcode)
                return
            try:  # the common case, without an await per layer
                connection.write_frame(build_frame(payload, opcode))
            except ConnectionClosed as exc:
                logger.debug("connection %s closed before delivery: %s", connection_id, exc)
            return
        node_id = self._remote_node(connection_id)
        if node_id is not None:
            await self.backend.publish_to_node(
                node_id, Envelope("send", connection_id, payload=payload, opcode=int(opcode))
            )

    async def close(self, connection_id: str, code: int, reason: str) -> None:
        """Close *connection_id* wherever it lives (see :func:`close_websocket_connection`)."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            await connection.close(code, reason)
            return
        node_id = self._remote_node(connection_id)
        if node_id is not None:
            await self.backend.publish_to_node(node_id, Envelope("close", connection_id, code=code, reason=reason))

    async def deliver_envelope(self, envelope: Envelope) -> None:
        """Carry out an envelope that a backend received for this node.

        Never waits on a client: sends are queued, closes run in tasks of
        their own, so one slow peer cannot hold up a backend's listener.
        """
        kind = envelope.kind
        if envelope.epoch:
            # A history group's message: its stream orders it, fills gaps and drops
            # duplicates (our own publish included, whose local delivery came first).
            await self.histories.deliver(envelope)
            return
        if kind == "group_send" or kind == "group_close":
            if envelope.origin != self.node_id:  # our own publish, already delivered locally
                if kind == "group_send" and self.history and self.histories.rule_for(envelope.group) is not None:
                    # Sent around the history script (a Publisher not given history=): no position,
                    # so members could not resume past it.
                    self.histories.refuse_unnumbered(envelope)
                elif kind == "group_send":
                    await self._deliver_group(
                        envelope.group, envelope.payload, WSMsgType(envelope.opcode), envelope.exclude
                    )
                else:
                    self._close_group_local(envelope.group, envelope.code, envelope.reason)
            return
        connection = self.connections.get(envelope.connection_id)
        if connection is None:
            logger.debug("no connection %s here for %s; dropped", envelope.connection_id, kind)
            return
        if kind == "send":
            await self._send_local(connection, envelope.payload, WSMsgType(envelope.opcode))
        else:
            self.spawn(connection.close(envelope.code, envelope.reason))

    def _remote_node(self, connection_id: str) -> str | None:
        """Return the owning node of an id not in this process, or None when there is nothing to do."""
        if len(connection_id) != CONNECTION_ID_LENGTH:
            logger.debug("ignoring malformed connection id %r", connection_id)
            return None
        node_id = connection_id[:NODE_ID_LENGTH]
        if node_id == self.node_id:
            logger.debug("connection %s is already closed; nothing sent", connection_id)
            return None
        return node_id


REGISTRY_KEY = web.AppKey("wsframe_registry", Registry)

current_app: contextvars.ContextVar[web.Application] = contextvars.ContextVar("wsframe_current_app")
"""The wsframe app handling the current request (set by wsframe's middleware)."""

started_apps: weakref.WeakSet[web.Application] = weakref.WeakSet()
"""wsframe apps started in this process, the fallback when no request is being handled."""


def get_registry(app: web.Application | None = None) -> Registry:
    """Return the registry of *app*, or of the app handling the current request.

    Raises :class:`ApplicationNotFoundError` when *app* is None and no app, or
    more than one, is running in this process.
    """
    if app is None:
        app = current_app.get(None)
    if app is None:
        running = list(started_apps)
        if len(running) == 1:
            app = running[0]
        elif not running:
            raise ApplicationNotFoundError(
                "No wsframe application is running in this process. Start the app created by "
                "wsframe.create_app(), or pass app= explicitly."
            )
        else:
            raise ApplicationNotFoundError(
                f"{len(running)} wsframe applications are running in this process; pass app= to say which one."
            )
    try:
        return app[REGISTRY_KEY]
    except KeyError:
        raise ApplicationNotFoundError(
            "This aiohttp application was not made by wsframe.create_app(); pass the app it returned."
        ) from None
