"""This process's groups with history: which groups have it, their streams, what they counted.

The registry hands this class everything about history groups: a send to
one (numbered by the backend, then delivered in order here), an envelope
that arrived for one, a join with ``since``, and the end of a group's last
local member. Each group with members here has a
:class:`~wsframe._streams.GroupStream`; membership itself stays the
registry's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from aiohttp import WSMsgType

from ._connection import Connection
from ._streams import GroupStream, HistoryStats
from .backends.base import Backend, Envelope
from .history import History, Joined, Position, encode_history_data, rule_for

__all__ = ["HistoryGroups"]

logger = logging.getLogger("wsframe.history")


class HistoryGroups:
    """The history groups of one registry: *rules* (prefix -> History), over *backend*.

    *groups* is the registry's own map of local members (read, never
    written); *spawn* runs a coroutine in a task the registry keeps.
    """

    def __init__(
        self,
        rules: Mapping[str, History],
        backend: Backend,
        groups: dict[str, dict[str, Connection]],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.rules = rules
        self.backend = backend
        self.groups = groups
        self.spawn = spawn
        self.streams: dict[str, GroupStream] = {}
        """The history groups with members here (or a join under way), by name."""
        self.stats = HistoryStats()

    def rule_for(self, group: str) -> History | None:
        """The History *group* keeps (the longest matching prefix), or None."""
        return rule_for(self.rules, group) if self.rules else None

    async def send(self, group: str, rule: History, data: Any, exclude: tuple[str, ...], origin: str) -> None:
        """Have the backend number, keep and hand *data* to the other nodes; then deliver it here, in order.

        Raises ``TypeError`` for bytes (and what JSON cannot encode) before
        anything is sent, and what ``backend.history_publish`` raises.
        """
        envelope = Envelope.group_send(
            group, encode_history_data(data), int(WSMsgType.TEXT), exclude=exclude, origin=origin
        )
        numbered = await self.backend.history_publish(group, envelope, rule)
        stream = self.streams.get(group)
        if stream is not None:
            await stream.offer(numbered)

    async def deliver(self, envelope: Envelope) -> None:
        """Hand a numbered envelope that arrived to its group's stream (none: no member here, dropped)."""
        stream = self.streams.get(envelope.group)
        if stream is not None:
            await stream.offer(envelope)

    def refuse_unnumbered(self, envelope: Envelope) -> None:
        """Count and log a send to a history group that came without a position (it is not delivered)."""
        self.stats.unnumbered += 1
        logger.warning(
            "dropped a send to history group %r that was not numbered (from %s): give every sender, "
            "Publisher included, the app's history= setting; %d dropped so far",
            envelope.group,
            envelope.origin,
            self.stats.unnumbered,
        )

    async def join(
        self,
        connection: Connection,
        group: str,
        rule: History,
        since: Position | None,
        add: Callable[[], Coroutine[Any, Any, bool]],
        forget: Callable[[], object],
    ) -> Joined:
        """Join through the group's stream (see :meth:`GroupStream.join`); made here on the first join."""
        stream = self.streams.get(group)
        if stream is None:
            stream = self.streams[group] = GroupStream(
                group, rule, self.backend, lambda: self.groups.get(group), self.spawn, self.stats, self.release
            )
        try:
            return await stream.join(connection, since, add, forget)
        finally:
            self.release(stream)

    def release(self, stream: GroupStream) -> None:
        """Forget *stream* once its group has no member here and it has nothing left to do."""
        if self.streams.get(stream.group) is stream and stream.idle and stream.group not in self.groups:
            del self.streams[stream.group]

    def emptied(self, group: str) -> None:
        """Note that *group*'s last member here left: its stream goes once idle."""
        stream = self.streams.get(group)
        if stream is not None:
            self.release(stream)

    def check(self) -> None:
        """Have every stream read what it may have missed (the backend's listener reconnected)."""
        for stream in list(self.streams.values()):
            stream.check()
