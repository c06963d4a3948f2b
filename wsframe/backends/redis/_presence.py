"""This node's part of the Redis presence, re-asserted until it holds, and the count of missed group sends.

Redis holds each group's members in one set shared by every node, but each
node owns the truth about its own members (the registry's). :class:`Presence`
writes that truth back to Redis, in one pipeline with this node's liveness
key: at startup, every third of the presence TTL, at once after the listener
reconnects (a restarted Redis has forgotten everything), and soon after a
leave that Redis did not take (retried until it does). So a Redis restart or
pause heals by itself, and a leave is never dropped.

:class:`GroupLosses` numbers the group envelopes this node sends (per group)
and watches the numbers of those it receives (per sender and group): a
number skipped is a group send this node's members never got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from ._keys import alive_key, describe_error, group_nodes_key, members_key
from ._listener import UNREACHABLE

if TYPE_CHECKING:
    from ..base import Envelope, Node
    from ._listener import RedisBackendStats
    from ._outbox import Outbox

__all__ = ["Presence", "GroupLosses"]

logger = logging.getLogger("wsframe.backends.redis")

_MAX_TRACKED = 65_536
"""Sequence entries kept before starting afresh (a fresh entry detects nothing for one message)."""
_WARN_EVERY = 10.0
"""Seconds between two warnings about missed group sends (the count goes on)."""


class Presence:
    """Re-asserts this node's liveness and group members to Redis, and retries the leaves Redis missed."""

    def __init__(
        self,
        node: Node,
        *,
        prefix: str,
        ttl: float,
        operation_timeout: float,
        max_backoff: float,
        stats: RedisBackendStats,
    ) -> None:
        self.node = node
        self.prefix = prefix
        self.ttl = ttl
        self.operation_timeout = operation_timeout
        self.max_backoff = max_backoff
        self.stats = stats
        self.stopping = False
        self._wake = asyncio.Event()
        self._pending_leaves: dict[str, dict[str, tuple[int, int]]] = {}
        """Group -> ids that left here and may still (or again) be in Redis's set -> (a token, the
        successful refreshes when the leave was noted)."""
        self._token = 0
        self._successes = 0
        self._missed = False
        """A leave failed since the last successful refresh: retry within max_backoff."""

    @property
    def pending_leaves(self) -> int:
        """Leaves Redis has not confirmed yet (they are retried)."""
        return sum(len(ids) for ids in self._pending_leaves.values())

    def joined(self, group: str, connection_id: str) -> None:
        """Note that *connection_id* joined *group* again: an older leave of it must not be retried."""
        pending = self._pending_leaves.get(group)
        if pending is not None:
            pending.pop(connection_id, None)
            if not pending:
                del self._pending_leaves[group]

    def left(self, group: str, connection_ids: list[str]) -> None:
        """Note leaves (before telling Redis); the refreshes repeat their removal until two in a row succeeded.

        Repeated even once Redis confirmed the removal: a refresh that timed
        out earlier (Redis paused) may still run after it and add the ids
        back; two successful refreshes in a row prove Redis has run whatever
        was queued before.
        """
        self._token += 1
        pending = self._pending_leaves.setdefault(group, {})
        for connection_id in connection_ids:
            pending[connection_id] = (self._token, self._successes)

    def missed(self) -> None:
        """Note that Redis did not take a leave (failed, timed out, cancelled): refresh within max_backoff."""
        self._missed = True
        self._wake.set()

    def refresh_soon(self) -> None:
        """Wake the refresh loop now (Redis is back after an outage)."""
        self._wake.set()

    def _commands(self) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, tuple[int, int]]]]:
        node = self.node
        alive = alive_key(self.prefix, node.node_id)
        commands: list[tuple[Any, ...]] = [("SET", alive, b"1", "PX", int(self.ttl * 1000))]
        leaves = [(group, cid, noted) for group, ids in self._pending_leaves.items() for cid, noted in ids.items()]
        for group, ids in self._pending_leaves.items():
            commands.append(("SREM", members_key(self.prefix, group), *ids))
        now_ms = int(time.time() * 1000)
        expires_ms = now_ms + int(self.ttl * 1000)
        for group in node.local_groups():
            members = node.local_members(group)
            if members:
                commands.append(("SADD", members_key(self.prefix, group), *members))
                nodes = group_nodes_key(self.prefix, group)
                commands.append(("ZADD", nodes, expires_ms, node.node_id))
                commands.append(("ZREMRANGEBYSCORE", nodes, "-inf", now_ms))
        return commands, leaves

    async def refresh(self, outbox: Outbox) -> bool:
        """Write this node's liveness, pending leaves and members to Redis in one pipeline; False if it failed.

        Never raises for Redis being down or slow: the failure is counted in
        ``stats.presence_failures`` and the loop tries again.
        """
        commands, leaves = self._commands()
        try:
            async with asyncio.timeout(self.operation_timeout):
                await outbox.commands(commands)
        except UNREACHABLE as exc:
            self.stats.presence_failures += 1
            logger.debug("could not refresh presence of node %s: %s", self.node.node_id, describe_error(exc))
            return False
        self._successes += 1
        self._missed = False
        for group, connection_id, noted in leaves:
            pending = self._pending_leaves.get(group)
            # Done once two refreshes succeeded since the leave (this one removed it again); a
            # leave of the same id noted since is kept.
            if pending is not None and pending.get(connection_id) == noted and self._successes >= noted[1] + 2:
                del pending[connection_id]
                if not pending:
                    del self._pending_leaves[group]
        self.stats.presence_refreshes += 1
        return True

    async def run(self, outbox: Outbox) -> None:
        """Refresh at once, then every ``ttl / 3``, or within ``max_backoff`` after a refresh or a leave failed."""
        while not self.stopping:
            self._wake.clear()
            ok = await self.refresh(outbox)
            wait = self.ttl / 3 if ok and not self._missed else min(self.max_backoff, self.ttl / 3)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()


class GroupLosses:
    """Numbers this node's group sends, and counts the numbers missing from what it receives."""

    def __init__(self, stats: RedisBackendStats) -> None:
        self.stats = stats
        self._sent: dict[str, int] = {}
        self._heard: dict[str, dict[str, int]] = {}
        """Group -> sending node -> the number of the last envelope heard."""
        self._warned_at = -_WARN_EVERY

    def published(self, group: str, receivers: int, nodes_with_members: int) -> None:
        """Count (and warn about) a group send that Redis handed to fewer nodes than have members."""
        if receivers >= nodes_with_members:
            return
        self.stats.group_underdelivered += 1
        self._warn(
            "a group send to %r reached %d worker(s) of the %d with members (the others were not subscribed: "
            "reconnecting, or gone); %d such send(s) in total.",
            group,
            receivers,
            nodes_with_members,
            self.stats.group_underdelivered,
        )

    def _warn(self, message: str, *args: object) -> None:
        # One warning per _WARN_EVERY seconds at most, shared by both kinds of loss.
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            logger.warning(message, *args)

    def next_number(self, group: str) -> int:
        """Return the number of this node's next send to *group* (1, 2, ...)."""
        if len(self._sent) >= _MAX_TRACKED and group not in self._sent:
            self._sent.clear()  # receivers take the restart from 1 for a new sender epoch
        number = self._sent[group] = self._sent.get(group, 0) + 1
        return number

    def heard(self, envelope: Envelope, *, members_here: int) -> None:
        """Note a group envelope from another node; count (and warn about) the ones skipped before it."""
        if not envelope.seq:
            return  # an unnumbered sender (the sync Publisher)
        senders = self._heard.get(envelope.group)
        if senders is None:
            if len(self._heard) >= _MAX_TRACKED:
                self._heard.clear()
            senders = self._heard[envelope.group] = {}
        last = senders.get(envelope.origin)
        senders[envelope.origin] = envelope.seq
        if last is None or envelope.seq <= last + 1:
            return  # the first heard from this sender, in order, or the sender's numbering started afresh
        missed = envelope.seq - last - 1
        self.stats.group_missed += missed
        self.stats.group_member_deliveries_missed += missed * members_here
        self._warn(
            "%d group send(s) from node %s to group %r never reached this worker (it was not subscribed, or "
            "Redis dropped them); its %d member(s) there missed them. %d group send(s) missed in total.",
            missed,
            envelope.origin,
            envelope.group,
            members_here,
            self.stats.group_missed,
        )

    def forget(self, group: str) -> None:
        """Drop what was heard for *group*: its last member here left (this node unsubscribed)."""
        self._heard.pop(group, None)
