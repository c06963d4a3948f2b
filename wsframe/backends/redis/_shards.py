"""One worker's sharded pub/sub connection to one Redis Cluster master, supervised.

A :class:`Shard` holds the shard channels (``SSUBSCRIBE``) of this node that live in
the master's slots: its node channel if it hashes there, and the channels of its
groups that do. It pumps their messages, pings when idle (the :class:`Liveness` rule
of the single-Redis listener decides when silence is an outage), and on a failure
logs, counts, backs off and asks the backend to work out where its channels live now
(a failover promotes a replica; a slot can migrate) before resubscribing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from ._keys import describe_error
from ._listener import UNREACHABLE, Liveness, RedisBackendStats, Supervised, close_quietly

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

__all__ = ["Shard", "ClusterBackendStats"]

logger = logging.getLogger("wsframe.backends.redis")

_FIRST_BACKOFF = 0.05


@dataclasses.dataclass
class ClusterBackendStats(RedisBackendStats):
    """The counters of the single-Redis backend, plus the channel moves a cluster makes.

    ``outages`` counts each shard connection lost (one per master and outage).
    """

    reroutes: int = 0
    """Times shard channels of this node moved to another master (a failover or a slot
    migration). Messages published to them between the move and the resubscription are lost."""


class Shard(Supervised):
    """This node's sharded subscriber connection to the master *name* (``host:port``).

    *receive* gets each message's data and channel. *relocate* is called after the
    connection failed, or Redis dropped a channel (its slot left this master): the
    backend refreshes the slot map and moves channels that live elsewhere now.
    *reconnected* is called once the shard is subscribed again after an outage.
    """

    stats: ClusterBackendStats
    warn_of_stalls = False  # counted only: one stall would be logged once per master

    def __init__(
        self,
        name: str,
        client: aioredis.Redis,
        *,
        stats: ClusterBackendStats,
        operation_timeout: float,
        health_check_interval: float,
        max_backoff: float,
        receive: Callable[[bytes, str], Awaitable[None]],
        relocate: Callable[[], Awaitable[None]],
        reconnected: Callable[[], None] | None = None,
    ) -> None:
        Supervised.__init__(
            self,
            client,
            stats=stats,
            operation_timeout=operation_timeout,
            health_check_interval=health_check_interval,
            max_backoff=max_backoff,
            receive=receive,
        )
        self.name = name
        self._relocate = relocate
        self._reconnected = reconnected
        """Called when the shard is subscribed again after an outage (history groups then check for gaps)."""
        self.channels: set[str] = set()
        self.task: asyncio.Task[None] | None = None
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._writing = asyncio.Lock()
        self._leaving: set[bytes] = set()
        """Channels we unsubscribed from whose SUNSUBSCRIBE Redis has not confirmed yet."""

    def _where(self) -> str:
        return f" (shard {self.name})"

    def start(self) -> None:
        """Start the supervised pump (it subscribes to :attr:`channels` first)."""
        self.task = asyncio.create_task(self.supervise(), name=f"wsframe redis cluster shard {self.name}")

    async def add(self, channel: str) -> None:
        """Subscribe to *channel* and return once the master confirmed it.

        Raises ``TimeoutError`` when no confirmation comes within four operation
        timeouts (the shard is down or slow); the channel stays wanted, so the
        supervisor subscribes to it when the shard is back.
        """
        self.channels.add(channel)
        key = channel.encode()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[key] = waiter
        try:
            async with asyncio.timeout(self.operation_timeout * 4):
                async with self._writing:
                    # None: the supervisor is (re)subscribing; it reads channels under this lock.
                    pubsub = self.pubsub
                    if pubsub is not None:
                        await pubsub.ssubscribe(channel)
                await asyncio.shield(waiter)
        finally:
            if self._pending.get(key) is waiter:
                del self._pending[key]

    async def discard(self, channel: str) -> None:
        """Stop listening on *channel* (best effort: a broken connection drops it anyway)."""
        self.channels.discard(channel)
        with contextlib.suppress(*UNREACHABLE):
            async with asyncio.timeout(self.operation_timeout), self._writing:
                pubsub = self.pubsub
                if pubsub is not None:
                    self._leaving.add(channel.encode())  # its confirmation is no slot move
                    await pubsub.sunsubscribe(channel)

    async def _subscribe(self) -> PubSub:
        pubsub = self.client.pubsub()
        try:
            async with asyncio.timeout(self.operation_timeout * 4):
                # Writes to the connection take turns (two at once would open two connections).
                # A channel add()ed before the lock is ours is subscribed here; one added
                # after, by add() on the pubsub published here. Its confirmation is read below.
                async with self._writing:
                    wanted = set(self.channels)
                    for channel in wanted:  # one SSUBSCRIBE per channel: several slots would be CROSSSLOT
                        await pubsub.ssubscribe(channel)
                    self.pubsub = pubsub
                    self._leaving.clear()
                pending = {c.encode() for c in wanted}
                while pending:
                    message = await pubsub.get_message(timeout=self.operation_timeout)
                    if message is not None and message["type"] == "ssubscribe":
                        pending.discard(message["channel"])
                        self._confirmed(message["channel"])
            return pubsub
        except BaseException:
            self.pubsub = None
            await close_quietly(pubsub)
            raise

    def _confirmed(self, channel: bytes) -> None:
        waiter = self._pending.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def supervise(self) -> None:
        """Pump until :attr:`stopping` or no channel is left here; on a failure relocate, back off, resubscribe."""
        delay = _FIRST_BACKOFF
        while not self.stopping and self.channels:
            pubsub: PubSub | None = None
            try:
                pubsub = await self._subscribe()
                was_down = self.down_since is not None
                self._mark_up()
                if was_down and self._reconnected is not None:
                    self._reconnected()
                delay = _FIRST_BACKOFF
                await self._pump(pubsub)
            except asyncio.CancelledError:
                if pubsub is not None:
                    await close_quietly(pubsub)
                raise
            except Exception as exc:
                if not isinstance(exc, UNREACHABLE):
                    logger.exception("unexpected error on the Redis Cluster shard %s; reconnecting", self.name)
                self._mark_down(exc)
            delay = await self._back_off(pubsub, delay)
            if self.stopping:
                break
            # A failover or a migration may have moved our channels to another master.
            with contextlib.suppress(*UNREACHABLE):
                await self._relocate()
        if self.down_since is not None and not self.channels:
            self._mark_up(moved=True)

    async def _pump(self, pubsub: PubSub) -> None:
        liveness = Liveness(self.health_check_interval)
        while self.channels and not self.stopping:
            liveness.waiting()
            message = await pubsub.get_message(timeout=liveness.interval)
            if message is None:
                await self._silent(pubsub, liveness)
                continue
            liveness.heard()
            kind = message["type"]
            if kind == "smessage":
                await self._receive(message["data"], self.name)
            elif kind == "ssubscribe":
                self._confirmed(message["channel"])
            elif kind == "sunsubscribe" and message["channel"] in self._leaving:
                self._leaving.discard(message["channel"])
            elif kind == "sunsubscribe" and message["channel"].decode() in self.channels:
                # We did not ask: Redis dropped the channel because its slot left this master.
                self.stats.reroutes += 1
                logger.warning(
                    "Redis Cluster shard %s dropped channel %s (its slot moved); messages published to it "
                    "until it is resubscribed on the new owner may be lost. Rerouting.",
                    self.name,
                    message["channel"].decode(),
                )
                await self._relocate()

    def _mark_down(self, exc: BaseException) -> None:
        if not self._outage_began():
            logger.debug("Redis Cluster shard %s still unreachable: %s", self.name, describe_error(exc))
            return
        logger.warning(
            "Redis Cluster shard %s is unreachable (%s); sends to channels it owns raise BackendUnavailableError "
            "and messages for this worker on it are lost until it, or the replica taking over, is back.",
            self.name,
            describe_error(exc),
        )

    def _mark_up(self, *, moved: bool = False) -> None:
        duration = self._outage_ended()
        if duration is None:
            return
        logger.warning(
            "Redis Cluster shard %s: %s after %.1f s; messages published to this worker meanwhile may have been "
            "lost (%d possibly lost sends, %d reroutes in total).",
            self.name,
            "its channels moved to another master" if moved else "reachable again",
            duration,
            self.stats.possibly_lost,
            self.stats.reroutes,
        )
