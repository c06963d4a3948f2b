"""The Redis backend's listener: one supervised pub/sub connection, and the rule that tells an outage.

:class:`Liveness` is the rule, pure and driven by a clock: a PING left
unanswered for a whole health-check interval in which the event loop ran
means Redis (or the network to it) is gone; a wait that came back far later
than asked means the event loop itself stalled, which proves nothing about
Redis. :class:`Listener` does the I/O around it: subscribe, pump messages,
and on any failure log, count, back off and resubscribe, until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..base import BackendStats
from ._keys import describe_error

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

__all__ = ["RedisBackendStats", "Liveness", "Silence", "Supervised", "Listener", "UNREACHABLE", "cancel_and_wait"]

logger = logging.getLogger("wsframe.backends.redis")

UNREACHABLE = (RedisError, OSError, TimeoutError)
"""What Redis, or the network to it, raises when it is gone or too slow."""
_FIRST_BACKOFF = 0.05
_LATE_WAITS_LIMIT = 3
"""Late waits in a row with a PING unanswered after which the listener gives Redis up anyway."""


@dataclasses.dataclass
class RedisBackendStats(BackendStats):
    """Counters of one :class:`~wsframe.backends.redis.RedisBackend`, for monitoring and tests.

    ``delivered``: envelopes received from Redis and handed to this process's
    registry; ``bad_messages``: messages on our channels that did not decode,
    or whose delivery raised (skipped).
    """

    published: int = 0
    """Envelopes Redis accepted for another node."""
    publish_failures: int = 0
    """Sends that raised ``BackendUnavailableError`` (Redis down or too slow): not delivered."""
    unrouted: int = 0
    """Envelopes Redis accepted but no node was subscribed to: the owner is gone, or its
    listener was reconnecting (then the message was lost)."""
    outages: int = 0
    """Times the listener lost Redis. Anything published to this node during an outage is lost."""
    outage_seconds: float = 0.0
    """Total length of the outages that have ended."""
    group_gaps: int = 0
    """Outages that ended while this worker had group members: from the outage to the resubscribe,
    group sends to its groups were lost for its members (one count per outage, not per message)."""
    group_missed: int = 0
    """Group envelopes from another worker that this one never got, found from the senders' numbering
    when a later one arrived (a loss at the very end of a sender's stream is not seen)."""
    group_underdelivered: int = 0
    """Group sends from this worker that Redis handed to fewer workers than had members of the group
    (by PUBLISH's receiver count against the workers that refreshed their membership within
    ``presence_ttl``): some members elsewhere missed them."""
    group_member_deliveries_missed: int = 0
    """``group_missed`` times the members this worker had in the group when the loss was found."""
    presence_refreshes: int = 0
    """Times this worker wrote its liveness and members back to Redis."""
    presence_failures: int = 0
    """Presence refreshes that failed (Redis down or slow); retried within ``max_backoff``."""
    loop_stalls: int = 0
    """Times the listener found that the event loop had not run for over half a health-check
    interval (a blocking call, a long GC pause). Not counted as outages: Redis was not to blame."""

    @property
    def possibly_lost(self) -> int:
        """Sends that may not have reached their connection: failed publishes plus unrouted ones."""
        return self.publish_failures + self.unrouted


@dataclasses.dataclass(frozen=True)
class Silence:
    """What to do after a wait for a message that came back empty."""

    stalled_for: float = 0.0
    """Seconds the event loop did not run beyond the wait (0.0: it ran); worth a warning."""
    outage: str = ""
    """Why Redis is taken for gone ("" while it is not): reconnect."""
    ping: bool = False
    """Send a PING: none is unanswered, and silence alone proves nothing."""


class Liveness:
    """Decides from the timing of waits when Redis is gone; no I/O, so it is tested with a clock of its own.

    Around each wait of *interval* seconds for a message: :meth:`waiting`
    before it, then :meth:`heard` when anything came (a PONG included) or
    :meth:`silent` when nothing did, and :meth:`pinged` once a PING it asked
    for has gone out.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._asked = clock()
        self._pinged_at: float | None = None
        """When the PING that is still unanswered went out (None: none is)."""
        self._late_waits = 0
        """Waits that came back late since that PING went out."""

    def waiting(self) -> None:
        """Note that a wait of ``interval`` seconds starts now."""
        self._asked = self.clock()

    def heard(self) -> None:
        """Note that Redis said something: it is there, whatever is unanswered."""
        self._pinged_at = None
        self._late_waits = 0

    def pinged(self) -> None:
        """Note that the PING :meth:`silent` asked for has been sent."""
        self._pinged_at = self.clock()

    def silent(self) -> Silence:
        """Return what the wait that came back empty just now means."""
        now = self.clock()
        pinged_at = self._pinged_at
        stalled_for = 0.0
        if now - self._asked > 1.5 * self.interval:
            # The wait came back far later than asked: the event loop itself
            # did not run (a long GC pause, a handler that blocked). Redis's
            # silence meanwhile proves nothing: its answer may be in the
            # socket, unread; the next wait reads it.
            stalled_for = now - self._asked - self.interval
            if pinged_at is not None:
                self._late_waits += 1
                # A loop that stalls on every wait must not hide a dead Redis for ever.
                if self._late_waits >= _LATE_WAITS_LIMIT:
                    return Silence(
                        stalled_for,
                        outage=f"no answer from Redis for {now - pinged_at:.1f} s "
                        f"(over {self._late_waits} stalls of the event loop)",
                    )
        elif pinged_at is not None:
            # A PING went unanswered for a whole interval in which the loop
            # ran: Redis (or the network to it) is gone.
            return Silence(outage=f"no answer from Redis for {now - pinged_at:.1f} s")
        # Idle: a PING proves the connection is alive.
        return Silence(stalled_for, ping=pinged_at is None)


class Supervised:
    """What a supervised pub/sub connection shares: its timing knobs, the outage bookkeeping and the backoff.

    :class:`Listener` (one Redis) and the Redis Cluster's ``Shard`` (one per
    master) build on it; each logs its own outages in its own words.
    """

    stats: RedisBackendStats
    warn_of_stalls = True
    """Log a stalled event loop (besides counting it in ``loop_stalls``)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        stats: RedisBackendStats,
        operation_timeout: float,
        health_check_interval: float,
        max_backoff: float,
        receive: Callable[[bytes, str], Awaitable[None]],
    ) -> None:
        self.client = client
        self.stats = stats
        self.operation_timeout = operation_timeout
        self.health_check_interval = health_check_interval
        self.max_backoff = max_backoff
        self._receive = receive
        self.pubsub: PubSub | None = None
        self.down_since: float | None = None
        self.stopping = False

    def _where(self) -> str:
        """What an outage's message adds to name the connection ("" for the only one)."""
        return ""

    async def _silent(self, pubsub: PubSub, liveness: Liveness) -> None:
        """Act on a wait that came back empty: count a stalled loop, raise on an outage, ping when idle.

        Raises ``RedisConnectionError`` when :class:`Liveness` takes Redis for gone.
        """
        silence = liveness.silent()
        if silence.stalled_for:
            self.stats.loop_stalls += 1
            if self.warn_of_stalls:
                logger.warning(
                    "the event loop did not run for about %.1f s (a blocking call or a long garbage "
                    "collection?); every connection of this worker waited. Checking Redis again.",
                    silence.stalled_for,
                )
        if silence.outage:
            raise RedisConnectionError(silence.outage + self._where())
        if silence.ping:
            await pubsub.ping()
            liveness.pinged()

    def _outage_began(self) -> bool:
        """Note the start of an outage (count it); False when one is already under way."""
        if self.down_since is not None:
            return False
        self.down_since = time.monotonic()
        self.stats.outages += 1
        return True

    def _outage_ended(self) -> float | None:
        """Note the end of the outage under way and return its length (None when there was none)."""
        if self.down_since is None:
            return None
        duration = time.monotonic() - self.down_since
        self.down_since = None
        self.stats.outage_seconds += duration
        return duration

    async def _back_off(self, pubsub: PubSub | None, delay: float) -> float:
        """Drop *pubsub*, sleep about *delay* seconds and return the next, longer delay."""
        self.pubsub = None
        if pubsub is not None:
            await close_quietly(pubsub)
        # Jitter so that every worker does not hit a restarted Redis at once.
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        return min(delay * 2, self.max_backoff)


class Listener(Supervised):
    """This node's pub/sub connection: its own channel plus the channels of groups with members here.

    *receive* gets every message's data and channel; *reconnected* runs when
    Redis is back after an outage, before anything is received. Outages are
    counted in *stats* and logged once each, with their length when they end.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        channel: str,
        *,
        url: str,
        stats: RedisBackendStats,
        operation_timeout: float,
        health_check_interval: float,
        max_backoff: float,
        receive: Callable[[bytes, str], Awaitable[None]],
        reconnected: Callable[[], Awaitable[None]],
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
        self.channel = channel
        self.url = url
        self._reconnected = reconnected
        # The channels of groups with members here (resubscribed after every
        # reconnect), and joins waiting for Redis to confirm their SUBSCRIBE.
        self.group_channels: set[str] = set()
        self._pending_subscriptions: dict[bytes, asyncio.Future[None]] = {}
        self._failures_at_outage_start = 0

    async def subscribe(self) -> PubSub:
        """Return a pubsub subscribed to this node's channel and its groups', confirmed by Redis.

        Raises what redis-py raises, or ``TimeoutError`` after four times the
        operation timeout; the pubsub is closed then.
        """
        pubsub = self.client.pubsub()
        channels = {self.channel, *self.group_channels}
        try:
            async with asyncio.timeout(self.operation_timeout * 4):
                await pubsub.subscribe(*channels)
                # Wait for the confirmations: once Redis has them, publishes to
                # this node and its groups reach us (nothing sent right after
                # startup or a reconnect is lost to a subscription in flight).
                pending = {c.encode() for c in channels}
                while pending:
                    message = await pubsub.get_message(timeout=self.operation_timeout)
                    if message is not None and message["type"] == "subscribe":
                        pending.discard(message["channel"])
                self.pubsub = pubsub
                return pubsub
        except BaseException:
            await close_quietly(pubsub)
            raise

    @contextlib.contextmanager
    def confirmation(self, channel: str) -> Iterator[asyncio.Future[None]]:
        """Yield a future that the listener resolves when Redis confirms a SUBSCRIBE to *channel*."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_subscriptions[channel.encode()] = waiter
        try:
            yield waiter
        finally:
            self._pending_subscriptions.pop(channel.encode(), None)

    async def supervise(self, pubsub: PubSub | None) -> None:
        """Pump messages; on any failure log, count, back off and resubscribe, until :attr:`stopping`."""
        delay = _FIRST_BACKOFF
        while not self.stopping:
            try:
                if pubsub is None:
                    pubsub = await self.subscribe()
                    if self.down_since is not None:
                        await self._reconnected()
                    self._mark_up()
                    delay = _FIRST_BACKOFF
                await self._pump(pubsub)
            except asyncio.CancelledError:
                if pubsub is not None:
                    await close_quietly(pubsub)
                raise
            except Exception as exc:
                # Any failure, including one we did not foresee: the listener
                # must outlive it, so treat it as an outage and reconnect.
                if not isinstance(exc, UNREACHABLE):
                    logger.exception("unexpected error in the Redis listener for %s; reconnecting", self.channel)
                self._mark_down(exc)
            delay = await self._back_off(pubsub, delay)
            pubsub = None

    async def _pump(self, pubsub: PubSub) -> None:
        liveness = Liveness(self.health_check_interval)
        while True:
            liveness.waiting()
            message = await pubsub.get_message(timeout=liveness.interval)
            if message is None:
                await self._silent(pubsub, liveness)
                continue
            liveness.heard()  # anything from Redis, the PONG included, shows it is there
            kind = message["type"]
            if kind == "message":
                await self._receive(message["data"], self.channel)
            elif kind == "subscribe":
                waiter = self._pending_subscriptions.pop(message["channel"], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def _mark_down(self, exc: BaseException) -> None:
        if not self._outage_began():
            logger.debug("Redis at %s still unreachable: %s", self.url, describe_error(exc))
            return
        self._failures_at_outage_start = self.stats.publish_failures
        logger.warning(
            "Redis at %s is unreachable (%s); sends to other workers raise BackendUnavailableError and messages "
            "for this worker are lost until it is back. Reconnecting.",
            self.url,
            describe_error(exc),
        )

    def _mark_up(self) -> None:
        duration = self._outage_ended()
        if duration is None:
            return
        failed = self.stats.publish_failures - self._failures_at_outage_start
        groups = len(self.group_channels)
        if groups:
            self.stats.group_gaps += 1
        logger.warning(
            "Redis at %s is reachable again after %.1f s; resubscribed to %s and %d group channel(s). %d send(s) "
            "failed during the outage; messages published to this worker meanwhile may have been lost (%d "
            "possibly lost in total), group sends to its %d group(s) included (%d such gap(s) in total).",
            self.url,
            duration,
            self.channel,
            groups,
            failed,
            self.stats.possibly_lost,
            groups,
            self.stats.group_gaps,
        )


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel *task* and wait until it has ended, cancelling again if a cancel was swallowed.

    On Python 3.11 redis-py writes each command inside ``asyncio.wait_for``,
    which can swallow a cancel that lands mid-write (seen in 31 of 40
    start/stop cycles with a 1 ms health check): the loops would go on. They
    also stop at their next turn once ``stopping`` is set. Bounded: a task
    that will not end within a few seconds is left, with a warning.
    """
    for _ in range(50):
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=0.1)
        if done:
            if not task.cancelled() and task.exception() is not None:
                logger.debug("%s ended with %r", task.get_name(), task.exception())
            return
    logger.warning("%s did not stop within 5 s of being cancelled; leaving it", task.get_name())


async def close_quietly(pubsub: PubSub) -> None:
    """Close *pubsub*, logging at debug level instead of raising: its connection is likely broken."""
    try:
        await pubsub.aclose()
    except Exception as exc:  # the connection is already broken; nothing to save
        logger.debug("closing a broken pubsub connection: %s", describe_error(exc))
