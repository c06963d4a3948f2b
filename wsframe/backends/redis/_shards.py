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
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from ._keys import describe_error
from ._listener import UNREACHABLE, Liveness, RedisBackendStats, close_quietly

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


class Shard:
    """This node's sharded subscriber connection to the master *name* (``host:port``).

    *receive* gets each message's data and channel. *relocate* is called after the
    connection failed, or Redis dropped a channel (its slot left this master): the
    backend refreshes the slot map and moves channels that live elsewhere now.
    """

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
    ) -> None:
        self.name = name
        self.client = client
        self.stats = stats
        self.operation_timeout = operation_timeout
        self.health_check_interval = health_check_interval
        self.max_backoff = max_backoff
        self._receive = receive
        self._relocate = relocate
        self.channels: set[str] = set()
        self.pubsub: PubSub | None = None
        self.down_since: float | None = None
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._writing = asyncio.Lock()
        self._leaving: set[bytes] = set()
        """Channels we unsubscribed from whose SUNSUBSCRIBE Redis has not confirmed yet."""

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
                self._mark_up()
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
            self.pubsub = None
            if pubsub is not None:
                await close_quietly(pubsub)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.max_backoff)
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
                silence = liveness.silent()
                if silence.stalled_for:
                    self.stats.loop_stalls += 1
                if silence.outage:
                    raise RedisConnectionError(f"{silence.outage} (shard {self.name})")
                if silence.ping:
                    await pubsub.ping()
                    liveness.pinged()
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
        if self.down_since is not None:
            logger.debug("Redis Cluster shard %s still unreachable: %s", self.name, describe_error(exc))
            return
        self.down_since = time.monotonic()
        self.stats.outages += 1
        logger.warning(
            "Redis Cluster shard %s is unreachable (%s); sends to channels it owns raise BackendUnavailableError "
            "and messages for this worker on it are lost until it, or the replica taking over, is back.",
            self.name,
            describe_error(exc),
        )

    def _mark_up(self, *, moved: bool = False) -> None:
        if self.down_since is None:
            return
        duration = time.monotonic() - self.down_since
        self.down_since = None
        self.stats.outage_seconds += duration
        logger.warning(
            "Redis Cluster shard %s: %s after %.1f s; messages published to this worker meanwhile may have been "
            "lost (%d possibly lost sends, %d reroutes in total).",
            self.name,
            "its channels moved to another master" if moved else "reachable again",
            duration,
            self.stats.possibly_lost,
            self.stats.reroutes,
        )
