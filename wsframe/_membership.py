"""Group membership in this process and through the backend: joins, leaves, group sends and closes.

A mixin of :class:`wsframe.registry.Registry`: the registry owns the state
(its connections, ``groups``, the backend, the history groups) and this class
holds what it does with groups, so that the registry module keeps to
connections by id and routing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import WSMsgType

from ._connection import Connection
from ._histories import HistoryGroups
from ._ids import validate_group_name
from .backends.base import Backend, Envelope
from .codec import build_frame, encode_frame
from .exceptions import ConnectionClosed
from .history import History, Joined, Position, check_since

__all__ = ["GroupMembership"]

logger = logging.getLogger("wsframe.registry")


def _excluded(exclude: str | Collection[str] | None) -> frozenset[str]:
    if exclude is None:
        return frozenset()
    if isinstance(exclude, str):
        return frozenset((exclude,))
    return frozenset(exclude)


class GroupMembership:
    """Groups of this process's connections; see the registry for the state it uses."""

    backend: Backend
    history: Mapping[str, History]
    node_id: str
    groups: dict[str, dict[str, Connection]]
    histories: HistoryGroups
    tracks_members: bool
    shutting_down: bool
    _tasks: set[asyncio.Task[None]]

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
