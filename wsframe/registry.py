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
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiohttp import WSMsgType, web

from ._connection import Connection
from ._deadlines import Deadlines
from ._heartbeat import Heartbeat
from ._histories import HistoryGroups
from ._ids import CONNECTION_ID_LENGTH, NODE_ID_LENGTH, new_connection_id, new_node_id, validate_group_name
from ._streams import GroupStream, HistoryStats
from ._tally import Tally
from .backends.base import Backend, Envelope
from .codec import build_frame, encode_frame
from .exceptions import ApplicationNotFoundError, ConnectionClosed
from .history import History, Joined, Position, check_since

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


def _excluded(exclude: str | Collection[str] | None) -> frozenset[str]:
    if exclude is None:
        return frozenset()
    if isinstance(exclude, str):
        return frozenset((exclude,))
    return frozenset(exclude)


class Registry:
    """Connections owned by this process, keyed by connection id.

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

    # ------------------------------------------------------------------ groups

    def join_group_here(self, connection: Connection, group: str) -> bool | None:
        """Add *connection* to *group* in this process only.

        Returns whether it is the group's first member here, or None when it
        was a member already. Raises InvalidGroupNameError for a bad name.
        """
        validate_group_name(group)
        members = self.groups.get(group)
        if members is None:
            members = self.groups[group] = {}
        connection_id = connection.connection_id
        if connection_id in members:
            return None
        first_here = not members
        members[connection_id] = connection
        joined = connection.groups
        if joined is None:
            connection.groups = {group}
        else:
            joined.add(group)
        return first_here

    async def join_group(self, connection: Connection, group: str) -> None:
        """Add *connection* to *group* here and in the backend (see GenericWebsocket.join_group)."""
        first_here = self.join_group_here(connection, group)
        if first_here is None or not self.tracks_members:
            return
        try:
            await self.backend.group_joined(group, connection.connection_id, first_here=first_here)
        except BaseException:
            self._forget_member(connection, group)
            raise

    async def leave_group(self, connection: Connection, group: str) -> None:
        """Remove *connection* from *group*; not a member is not an error."""
        validate_group_name(group)
        if self._forget_member(connection, group) and self.tracks_members:
            await self.backend.group_left(group, [connection.connection_id], last_here=group not in self.groups)

    def leave_all_groups_here(self, connection: Connection) -> list[tuple[str, bool]]:
        """Remove *connection* from every group in this process.

        Returns (group, last member here) for each group the backend must
        hear about: none when it keeps no membership or this node is shutting
        down (the backend then drops the whole node at once).
        """
        tell_backend = self.tracks_members and not self.shutting_down
        left = []
        groups, connection_id = self.groups, connection.connection_id
        # _forget_member() inlined: this runs on every disconnect of a member.
        for group in connection.groups or ():
            members = groups.get(group)
            if members is None or members.pop(connection_id, None) is None:
                continue
            if not members:
                del groups[group]
                if self.history:
                    self.histories.emptied(group)
            if tell_backend:
                left.append((group, group not in groups))
        connection.groups = None
        return left

    async def leave_all_groups(self, connection: Connection) -> None:
        """Remove *connection* from every group (on disconnect); backend errors are logged, not raised."""
        for group, last_here in self.leave_all_groups_here(connection):
            try:
                await self.backend.group_left(group, [connection.connection_id], last_here=last_here)
            except Exception as exc:
                # Best effort (it runs on every disconnect, shutdown included, where
                # redis-py can fail in odd ways): presence heals by itself, as the
                # backend's entry expires with this node's liveness.
                # Debug level: during an outage every disconnect would log it, and
                # the backend already logs the outage itself once.
                logger.debug("could not record that %s left %r: %r", connection.connection_id, group, exc)

    def _forget_member(self, connection: Connection, group: str) -> bool:
        members = self.groups.get(group)
        if connection.groups is not None:
            connection.groups.discard(group)
        if members is None or members.pop(connection.connection_id, None) is None:
            return False
        if not members:
            del self.groups[group]
            if self.history:
                self.histories.emptied(group)
        return True

    async def send_group(self, group: str, data: Any, exclude: str | Collection[str] | None = None) -> None:
        """Deliver *data* to every member of *group* on every node (see send_message_to_group)."""
        validate_group_name(group)
        if self.history:
            rule = self.histories.rule_for(group)
            if rule is not None:
                await self.histories.send(group, rule, data, tuple(_excluded(exclude)), self.node_id)
                return
        payload, opcode = encode_frame(data)
        excluded = _excluded(exclude)
        envelope = Envelope(
            "group_send",
            "",
            payload=payload,
            opcode=int(opcode),
            group=group,
            exclude=tuple(excluded),
            origin=self.node_id,
        )
        # The other nodes first: when the backend cannot take it, it raises
        # before anyone (this node's members included) got it, so a retry
        # never reaches a member twice.
        await self.backend.publish_to_group(group, envelope)
        await self._deliver_group(group, payload, opcode, excluded)

    async def join_group_since(self, connection: Connection, group: str, since: Position | None) -> Joined:
        """Join *group*; for a history group, replay what the connection missed since *since* first.

        See GenericWebsocket.join_group. A group without history joins as
        :meth:`join_group` does and returns ``Joined(True)``.
        """
        validate_group_name(group)
        since = check_since(since)
        rule = self.histories.rule_for(group)
        if rule is None:
            if self.tracks_members:
                await self.join_group(connection, group)
            else:
                self.join_group_here(connection, group)
            return Joined(True)

        async def add() -> bool:
            if group in (connection.groups or ()):
                return False
            if self.tracks_members:
                await self.join_group(connection, group)
            else:
                self.join_group_here(connection, group)
            return True

        try:
            return await self.histories.join(
                connection, group, rule, since, add, lambda: self._forget_member(connection, group)
            )
        except BaseException:
            if self.tracks_members and group not in (connection.groups or ()):
                try:
                    await self.backend.group_left(group, [connection.connection_id], last_here=group not in self.groups)
                except Exception as exc:
                    logger.debug("could not record that %s left %r: %r", connection.connection_id, group, exc)
            raise

    async def close_group(self, group: str, code: int, reason: str) -> None:
        """Close every member of *group* on every node (see close_group)."""
        validate_group_name(group)
        self._close_group_local(group, code, reason)
        envelope = Envelope("group_close", "", code=code, reason=reason, group=group, origin=self.node_id)
        await self.backend.publish_to_group(group, envelope)

    async def group_members(self, group: str) -> set[str]:
        """Ids of *group*'s members on every node the backend knows of."""
        validate_group_name(group)
        members = await self.backend.group_members(group)
        if members is None:
            return set(self.groups.get(group, ()))
        return members

    async def _deliver_group(self, group: str, payload: bytes, opcode: WSMsgType, excluded: Collection[str]) -> None:
        members = self.groups.get(group)
        if not members:
            return
        # Frame once, write the same bytes to every member: no task, queue or
        # re-encoding per member. Compressed connections keep per-connection
        # compressor state, so they go through aiohttp's writer instead.
        frame = build_frame(payload, opcode)
        compressed: list[Connection] = []
        for connection_id, connection in list(members.items()):
            if excluded and connection_id in excluded:
                continue
            if connection.compressed:
                compressed.append(connection)
                continue
            try:  # noqa: SIM105 - try/except is free in 3.11; a context manager per member is not
                connection.write_frame(frame)
            except ConnectionClosed:
                pass  # it is leaving; its disconnect removes it from the group
        for connection in compressed:
            await self._send_local(connection, payload, opcode)

    def _close_group_local(self, group: str, code: int, reason: str) -> None:
        for connection in list(self.groups.get(group, {}).values()):
            self.spawn(connection.close(code, reason))

    def spawn(self, coro: Any) -> None:
        """Run *coro* in a task the registry keeps a reference to until it is done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_local(self, connection: Connection, payload: bytes, opcode: WSMsgType) -> None:
        try:
            await connection.send_frame(payload, opcode)
        except ConnectionClosed as exc:
            # Closing races with sending all the time; the caller asked for
            # best effort, so a connection that just went away is not an error.
            logger.debug("connection %s closed before delivery: %s", connection.connection_id, exc)

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
