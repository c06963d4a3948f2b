"""Redis backend: many workers on many machines, one pub/sub channel per node.

Every node (worker process) subscribes to ``<prefix>node:<node_id>``. A send
to a connection owned by another node is one ``PUBLISH`` to that node's
channel, so exactly one worker receives it (targeted delivery, not a fan-out
to every worker). Sends to connections in this process never touch Redis.

Pub/sub is at-most-once: a message published while the owner's subscription
is down is gone. The backend never loses silently: a publish that fails
raises :class:`~wsframe.exceptions.BackendUnavailableError` within
``operation_timeout``, and :attr:`RedisBackend.stats` counts what may have
been lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .._ids import is_node_id
from ..exceptions import BackendUnavailableError, ConfigurationError
from .base import Backend, Envelope, decode_envelope, encode_envelope

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

    from ..registry import Registry

__all__ = [
    "RedisBackend",
    "RedisBackendStats",
    "DEFAULT_PREFIX",
    "node_channel",
    "group_channel",
    "members_key",
    "alive_key",
    "redacted_url",
    "check_prefix",
]

logger = logging.getLogger("wsframe.backends.redis")

DEFAULT_PREFIX = "wsframe:"
"""Channels are named ``<prefix>node:<node id>``; give each app sharing a Redis its own prefix."""

_FIRST_BACKOFF = 0.05
_UNREACHABLE = (RedisError, OSError, TimeoutError)
_MAX_CONNECTIONS = 50
"""Redis connections one process opens for commands (publishes share one of them)."""
_LATE_WAITS_LIMIT = 3
"""Late waits in a row with a PING unanswered after which the listener gives Redis up anyway."""


def node_channel(prefix: str, node_id: str) -> str:
    """Return the pub/sub channel node *node_id* listens on under *prefix*."""
    return f"{prefix}node:{node_id}"


def group_channel(prefix: str, group: str) -> str:
    """Return the pub/sub channel of *group*: nodes with members of it subscribe there."""
    return f"{prefix}group:{group}"


def members_key(prefix: str, group: str) -> str:
    """Return the key of the Redis set holding *group*'s member connection ids (every node)."""
    return f"{prefix}members:{group}"


def alive_key(prefix: str, node_id: str) -> str:
    """Return the key a running node keeps alive (with a TTL) so presence can tell it from a dead one."""
    return f"{prefix}alive:{node_id}"


def check_prefix(prefix: object) -> str:
    """Return *prefix* when it is a usable channel prefix; raise ``ConfigurationError`` naming the problem."""
    if not isinstance(prefix, str) or not prefix:
        raise ConfigurationError(f"the Redis prefix must be a non-empty string such as 'myapp:', got {prefix!r}")
    return prefix


def redacted_url(url: str) -> str:
    """Return *url* with any password replaced by ``***``, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclasses.dataclass
class RedisBackendStats:
    """Counters of one :class:`RedisBackend`, for monitoring and tests."""

    published: int = 0
    """Envelopes Redis accepted for another node."""
    delivered: int = 0
    """Envelopes received from Redis and handed to this process's registry."""
    publish_failures: int = 0
    """Sends that raised ``BackendUnavailableError`` (Redis down or too slow): not delivered."""
    unrouted: int = 0
    """Envelopes Redis accepted but no node was subscribed to: the owner is gone, or its
    listener was reconnecting (then the message was lost)."""
    bad_messages: int = 0
    """Messages on our channel that did not decode, or whose delivery raised; skipped."""
    outages: int = 0
    """Times the listener lost Redis. Anything published to this node during an outage is lost."""
    outage_seconds: float = 0.0
    """Total length of the outages that have ended."""
    loop_stalls: int = 0
    """Times the listener found that the event loop had not run for over half a health-check
    interval (a blocking call, a long GC pause). Not counted as outages: Redis was not to blame."""

    @property
    def possibly_lost(self) -> int:
        """Sends that may not have reached their connection: failed publishes plus unrouted ones."""
        return self.publish_failures + self.unrouted


class _Outbox:
    """The PUBLISHes of this process, written to Redis in batches over one connection.

    A send joins the batch being gathered while the previous one is on the
    wire; when nothing is in flight it goes at once, alone. So at a low rate
    each PUBLISH costs what a plain ``client.publish()`` does, and under load
    one write and one read carry many of them. It also means sends never
    compete for pooled connections: redis-py's pool raises
    ``MaxConnectionsError`` past 100 publishes in flight instead of queueing
    them. Envelopes leave in the order they were handed in.
    """

    def __init__(self, client: aioredis.Redis, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        self._pending: list[tuple[str, bytes, asyncio.Future[int]]] = []
        self._in_flight: list[tuple[str, bytes, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def publish(self, channel: str, data: bytes) -> int:
        """PUBLISH *data* on *channel*; return how many subscribers got it, or raise what Redis raised.

        A send cancelled (or timed out) before its batch went out is not sent.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((channel, data, future))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return await future

    def close(self) -> None:
        """Fail every send still waiting (shutdown)."""
        if self._flusher is not None:
            self._flusher.cancel()
        for _, _, future in [*self._in_flight, *self._pending]:
            if not future.done():
                future.set_exception(RedisConnectionError("the Redis backend is shutting down"))
        self._pending = []

    async def _flush(self) -> None:
        try:
            while self._pending:
                # Sends whose caller gave up while they waited are dropped here, unsent.
                batch = self._in_flight = [entry for entry in self._pending if not entry[2].done()]
                self._pending = []
                if not batch:
                    continue
                try:
                    async with asyncio.timeout(self._timeout):
                        if len(batch) == 1:
                            channel, data, _ = batch[0]
                            results = [await self._client.publish(channel, data)]
                        else:
                            pipe = self._client.pipeline(transaction=False)
                            for channel, data, _ in batch:
                                pipe.publish(channel, data)
                            results = await pipe.execute()
                except Exception as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), receivers in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(receivers)
        finally:
            self._flusher = None
            self._in_flight = []


class RedisBackend(Backend):
    """Carries envelopes between nodes over Redis pub/sub.

    *redis* is a URL (``redis://host:6379/0``, ``rediss://...``, ``unix:///path``)
    or a ``redis.asyncio.Redis`` client made with ``decode_responses=False``
    (yours: it is not closed on shutdown). *prefix* namespaces every channel,
    so several apps can share one Redis. Publishes give up after
    *operation_timeout* seconds; the listener pings Redis after
    *health_check_interval* idle seconds, takes a PING unanswered for another
    interval (while the event loop ran) for an outage, and reconnects with
    backoff up to *max_backoff* seconds between attempts.

    Raises :class:`~wsframe.exceptions.ConfigurationError` at construction for
    a bad URL, prefix or client, and
    :class:`~wsframe.exceptions.BackendUnavailableError` from
    :meth:`on_startup` when Redis cannot be reached (the message names the URL).
    """

    name = "redis"

    def __init__(
        self,
        redis: str | aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        operation_timeout: float = 0.5,
        health_check_interval: float = 5.0,
        max_backoff: float = 1.0,
        presence_ttl: float = 15.0,
    ) -> None:
        self.prefix = check_prefix(prefix)
        for name, value in (
            ("operation_timeout", operation_timeout),
            ("health_check_interval", health_check_interval),
            ("max_backoff", max_backoff),
            ("presence_ttl", presence_ttl),
        ):
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
        self.operation_timeout = float(operation_timeout)
        self.health_check_interval = float(health_check_interval)
        self.max_backoff = float(max_backoff)
        self.presence_ttl = float(presence_ttl)
        self._url: str | None = None
        self._user_client: aioredis.Redis | None = None
        if isinstance(redis, str):
            try:
                aioredis.connection.parse_url(redis)
            except ValueError as exc:
                raise ConfigurationError(f"not a Redis URL: {redacted_url(redis)!r} ({exc})") from None
            self._url = redis
            self.url = redacted_url(redis)
        elif isinstance(redis, aioredis.Redis):
            kwargs = redis.connection_pool.connection_kwargs
            if kwargs.get("decode_responses"):
                raise ConfigurationError(
                    "the Redis client given to wsframe must be made with decode_responses=False "
                    "(wsframe sends binary envelopes); or pass a URL instead."
                )
            self._user_client = redis
            self.url = _describe_pool(kwargs)
        else:
            raise ConfigurationError(
                f"redis= takes a URL such as 'redis://127.0.0.1:6379/0' or a redis.asyncio.Redis client, "
                f"got {type(redis).__name__}"
            )
        self.stats = RedisBackendStats()
        self._registry: Registry | None = None
        self._client: aioredis.Redis | None = None
        self._outbox: _Outbox | None = None
        self._listener_client: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._channel = ""
        self._down_since: float | None = None
        self._failures_at_outage_start = 0
        # Groups: the channels of groups with members here (resubscribed after
        # every reconnect), the live pubsub, and joins waiting for Redis to
        # confirm their SUBSCRIBE.
        self._group_channels: set[str] = set()
        self._pubsub: PubSub | None = None
        self._pending_subscriptions: dict[bytes, asyncio.Future[None]] = {}
        self._keepalive: asyncio.Task[None] | None = None
        self._stopping = False

    def channel_for(self, node_id: str) -> str:
        """Return the channel that node *node_id* listens on (``<prefix>node:<node id>``)."""
        return node_channel(self.prefix, node_id)

    # -------------------------------------------------------------- lifecycle

    async def on_startup(self, registry: Registry) -> None:
        """Connect, subscribe to this node's channel and start the supervised listener.

        Raises :class:`~wsframe.exceptions.BackendUnavailableError` naming the
        URL when Redis does not answer within ``operation_timeout``; under
        gunicorn that makes the worker exit with a boot error.
        """
        self._registry = registry
        self._stopping = False
        self._channel = self.channel_for(registry.node_id)
        self._client, self._listener_client = self._make_clients()
        self._outbox = _Outbox(self._client, self.operation_timeout)
        try:
            async with asyncio.timeout(self.operation_timeout * 4):
                await self._client.ping()
            pubsub = await self._subscribe()
        except _UNREACHABLE as exc:
            await self._close_clients()
            raise BackendUnavailableError(
                f"Redis at {self.url} is unreachable at startup ({_describe(exc)}). Start Redis or fix the URL "
                "given to create_app(redis=...)."
            ) from exc
        self._listener = asyncio.create_task(self._supervise(pubsub), name=f"wsframe redis listener {self._channel}")
        self._keepalive = asyncio.create_task(self._keep_alive(), name=f"wsframe redis presence {registry.node_id}")
        logger.debug("node %s listening on Redis channel %s at %s", registry.node_id, self._channel, self.url)

    async def on_shutdown(self) -> None:
        """Stop the listener and close the connections this backend opened (never a client you passed)."""
        self._stopping = True
        for task in (self._keepalive, self._listener):
            if task is not None:
                await _cancel_and_wait(task)
        self._keepalive = self._listener = None
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.close()
        client, registry = self._client, self._registry
        if client is not None and registry is not None:
            # Leave presence at once rather than after presence_ttl.
            with contextlib.suppress(*_UNREACHABLE):
                async with asyncio.timeout(self.operation_timeout):
                    await client.delete(alive_key(self.prefix, registry.node_id))
        await self._close_clients()

    # ---------------------------------------------------------------- publish

    async def publish_to_node(self, node_id: str, envelope: Envelope) -> None:
        """PUBLISH *envelope* on node *node_id*'s channel.

        Returns once Redis has taken it (delivery to the subscriber is
        at-most-once). A node nobody listens for is not an error (counted in
        ``stats.unrouted``). Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` at once while the
        listener knows Redis is down (nothing was sent then), and within
        ``operation_timeout`` otherwise: then the message was probably not
        delivered, but may still be, if Redis was only slow or the reply was
        lost. It is never sent twice. Cancellation may leave the message
        published or not.
        """
        outbox = self._outbox
        if outbox is None:
            raise BackendUnavailableError(
                "the Redis backend is not started; start the app (its on_startup connects to Redis) before sending."
            )
        if not is_node_id(node_id):
            logger.debug("dropping %s for %s: %r is not a node id", envelope.kind, envelope.connection_id, node_id)
            return
        if self._down_since is not None:
            self.stats.publish_failures += 1
            down_for = time.monotonic() - self._down_since
            raise BackendUnavailableError(
                f"Redis at {self.url} has been unreachable for {down_for:.1f} s; "
                f"{envelope.kind} for {envelope.connection_id} not sent. Retry when Redis is back."
            )
        data = encode_envelope(envelope)
        try:
            async with asyncio.timeout(self.operation_timeout):
                receivers = await outbox.publish(self.channel_for(node_id), data)
        except _UNREACHABLE as exc:
            self.stats.publish_failures += 1
            raise BackendUnavailableError(
                f"Redis at {self.url} did not take the {envelope.kind} for {envelope.connection_id} "
                f"({_describe(exc)}); it was probably not delivered, but may still be if Redis was only slow."
            ) from exc
        self.stats.published += 1
        if not receivers:
            self.stats.unrouted += 1
            logger.debug(
                "no worker listens for node %s; %s for %s dropped", node_id, envelope.kind, envelope.connection_id
            )

    # ----------------------------------------------------------------- groups

    def _available_client(self, what: str) -> aioredis.Redis:
        client = self._client
        if client is None:
            raise BackendUnavailableError(
                "the Redis backend is not started; start the app (its on_startup connects to Redis) first."
            )
        if self._down_since is not None:
            self.stats.publish_failures += 1
            raise BackendUnavailableError(
                f"Redis at {self.url} has been unreachable for {time.monotonic() - self._down_since:.1f} s; "
                f"{what} failed. Retry when Redis is back."
            )
        return client

    async def _call(self, what: str, operation: Any) -> Any:
        try:
            async with asyncio.timeout(self.operation_timeout):
                return await operation
        except _UNREACHABLE as exc:
            self.stats.publish_failures += 1
            raise BackendUnavailableError(f"Redis at {self.url}: {what} failed ({_describe(exc)}).") from exc

    async def publish_to_group(self, group: str, envelope: Envelope) -> None:
        """PUBLISH *envelope* once on *group*'s channel: only nodes with members subscribe to it.

        Raises :class:`~wsframe.exceptions.BackendUnavailableError` fast when
        Redis is down (this node's members have been served already).
        """
        self._available_client(f"{envelope.kind} to group {group!r}")
        outbox = self._outbox
        if outbox is None:  # pragma: no cover - set together with the client
            raise BackendUnavailableError("the Redis backend is not started")
        await self._call(
            f"{envelope.kind} to group {group!r}",
            outbox.publish(group_channel(self.prefix, group), encode_envelope(envelope)),
        )
        self.stats.published += 1

    async def group_joined(self, group: str, connection_id: str, *, first_here: bool) -> None:
        """Add the id to the group's member set; the first local member subscribes this node to the group.

        Returns once Redis has confirmed the subscription, so a group send
        made after join_group() returns reaches the new member.
        """
        client = self._available_client(f"join of {group!r}")
        await self._call(f"join of {group!r}", client.sadd(members_key(self.prefix, group), connection_id))
        if not first_here:
            return
        channel = group_channel(self.prefix, group)
        self._group_channels.add(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return  # the supervisor subscribes to every group channel when it reconnects
        waiter = asyncio.get_running_loop().create_future()
        self._pending_subscriptions[channel.encode()] = waiter
        try:
            await self._call(f"join of {group!r}", pubsub.subscribe(channel))
            async with asyncio.timeout(self.operation_timeout * 4):
                await asyncio.shield(waiter)
        except TimeoutError as exc:
            raise BackendUnavailableError(
                f"Redis at {self.url} did not confirm the subscription to group {group!r} in time."
            ) from exc
        finally:
            self._pending_subscriptions.pop(channel.encode(), None)

    async def group_left(self, group: str, connection_ids: list[str], *, last_here: bool) -> None:
        """Remove the ids from the group's member set; the last local member unsubscribes this node."""
        if last_here:
            channel = group_channel(self.prefix, group)
            self._group_channels.discard(channel)
            pubsub = self._pubsub
            if pubsub is not None:
                with contextlib.suppress(*_UNREACHABLE):
                    await pubsub.unsubscribe(channel)
        client = self._available_client(f"leave of {group!r}")
        await self._call(f"leave of {group!r}", client.srem(members_key(self.prefix, group), *connection_ids))

    async def group_members(self, group: str) -> set[str]:
        """Return the group's members on every live node, pruning those of nodes that died."""
        client = self._available_client(f"presence of {group!r}")
        key = members_key(self.prefix, group)
        raw = await self._call(f"presence of {group!r}", client.smembers(key))
        members = {m.decode() if isinstance(m, bytes) else str(m) for m in raw}
        own = self._registry.node_id if self._registry is not None else ""
        nodes = sorted({m[:8] for m in members} - {own})
        if not nodes:
            return members
        alive = await self._call(
            f"presence of {group!r}", client.mget([alive_key(self.prefix, node) for node in nodes])
        )
        dead = {node for node, flag in zip(nodes, alive, strict=True) if flag is None}
        stale = {m for m in members if m[:8] in dead}
        if stale:
            # The owner stopped refreshing its liveness key (killed, or cut
            # off for longer than presence_ttl): its members are gone.
            with contextlib.suppress(BackendUnavailableError):
                await self._call(f"pruning {group!r}", client.srem(key, *stale))
        return members - stale

    async def _keep_alive(self) -> None:
        """Refresh this node's liveness key every third of presence_ttl, for as long as the app runs."""
        registry = self._registry
        if registry is None:  # pragma: no cover - started by on_startup after the registry is set
            return
        key = alive_key(self.prefix, registry.node_id)
        ttl_ms = int(self.presence_ttl * 1000)
        while not self._stopping:
            client = self._client
            if client is not None:
                try:
                    async with asyncio.timeout(self.operation_timeout):
                        await client.set(key, b"1", px=ttl_ms)
                except _UNREACHABLE as exc:
                    # The listener logs and counts outages; presence just tries again.
                    logger.debug("could not refresh presence of node %s: %s", registry.node_id, _describe(exc))
            await asyncio.sleep(self.presence_ttl / 3)

    # --------------------------------------------------------------- listener

    def _make_clients(self) -> tuple[aioredis.Redis, aioredis.Redis]:
        # The listener's connection never retries by itself: the supervisor
        # owns reconnection, so every outage is seen, logged and counted once.
        # Commands never retry either (see below).
        timeouts: dict[str, Any] = {
            "socket_timeout": self.operation_timeout,
            "socket_connect_timeout": self.operation_timeout,
        }
        if self._user_client is not None:
            pool = self._user_client.connection_pool
            listener_kwargs = {**pool.connection_kwargs, **timeouts, "retry": Retry(NoBackoff(), 0)}
            listener_pool = aioredis.ConnectionPool(connection_class=pool.connection_class, **listener_kwargs)
            return self._user_client, aioredis.Redis(connection_pool=listener_pool)
        url = self._url or ""
        # A blocking pool: past max_connections commands in flight (a storm of
        # joins as thousands of clients connect at once), a command waits up to
        # operation_timeout for a free connection. redis-py's default pool
        # raises MaxConnectionsError instead, which would fail those joins.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=_MAX_CONNECTIONS,
            timeout=self.operation_timeout,
            # No retry: a PUBLISH whose reply was lost after Redis ran it would
            # go out twice. Connections left stale by an outage are dropped
            # when the listener is back (_supervise) instead.
            retry=Retry(NoBackoff(), 0),
            **timeouts,
        )
        client = aioredis.Redis(connection_pool=pool)  # _close_clients() closes the pool too
        listener = aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **timeouts)
        return client, listener

    async def _close_clients(self) -> None:
        listener, self._listener_client = self._listener_client, None
        client, self._client = self._client, None
        if listener is not None:
            await listener.aclose(close_connection_pool=True)
        if client is not None and client is not self._user_client:
            await client.aclose(close_connection_pool=True)

    async def _subscribe(self) -> PubSub:
        """Return a pubsub subscribed to this node's channel, confirmed by Redis."""
        client = self._listener_client
        if client is None:  # pragma: no cover - only after shutdown, when the listener is cancelled
            raise RedisConnectionError("the Redis backend is shut down")
        pubsub = client.pubsub()
        channels = {self._channel, *self._group_channels}
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
                self._pubsub = pubsub
                return pubsub
        except BaseException:
            await _close_quietly(pubsub)
            raise

    async def _supervise(self, pubsub: PubSub | None) -> None:
        """Pump messages; on any failure log, count, back off and resubscribe, forever."""
        delay = _FIRST_BACKOFF
        while not self._stopping:
            try:
                if pubsub is None:
                    pubsub = await self._subscribe()
                    if self._down_since is not None:
                        await self._drop_stale_connections()
                    self._mark_up()
                    delay = _FIRST_BACKOFF
                await self._pump(pubsub)
            except asyncio.CancelledError:
                if pubsub is not None:
                    await _close_quietly(pubsub)
                raise
            except Exception as exc:
                # Any failure, including one we did not foresee: the listener
                # must outlive it, so treat it as an outage and reconnect.
                if not isinstance(exc, _UNREACHABLE):
                    logger.exception("unexpected error in the Redis listener for %s; reconnecting", self._channel)
                self._mark_down(exc)
            if pubsub is not None:
                self._pubsub = None
                await _close_quietly(pubsub)
                pubsub = None
            # Jitter so that every worker does not hit a restarted Redis at once.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.max_backoff)

    async def _drop_stale_connections(self) -> None:
        # Redis is back after an outage: the command connections opened before
        # it are likely dead (a restarted server). Closed now, they reconnect
        # on their next use, so the first sends afterwards do not fail on them.
        client = self._client
        if client is not None and client is not self._user_client:
            with contextlib.suppress(*_UNREACHABLE):
                await client.connection_pool.disconnect()

    async def _pump(self, pubsub: PubSub) -> None:
        interval = self.health_check_interval
        # When the PING that is still unanswered went out (None: none is), and
        # how many waits since then came back late.
        pinged_at: float | None = None
        late_waits = 0
        while True:
            asked = time.monotonic()
            message = await pubsub.get_message(timeout=interval)
            now = time.monotonic()
            if message is None:
                if now - asked > 1.5 * interval:
                    # The wait came back far later than asked: the event loop
                    # itself did not run (a long GC pause, a handler that
                    # blocked). Redis's silence meanwhile proves nothing: its
                    # answer may be in the socket, unread; the next wait reads it.
                    self.stats.loop_stalls += 1
                    logger.warning(
                        "the event loop did not run for about %.1f s (a blocking call or a long garbage "
                        "collection?); every connection of this worker waited. Checking Redis again.",
                        now - asked - interval,
                    )
                    if pinged_at is not None:
                        late_waits += 1
                        # A loop that stalls on every wait must not hide a dead Redis for ever.
                        if late_waits >= _LATE_WAITS_LIMIT:
                            raise RedisConnectionError(
                                f"no answer from Redis for {now - pinged_at:.1f} s "
                                f"(over {late_waits} stalls of the event loop)"
                            )
                elif pinged_at is not None:
                    # A PING went unanswered for a whole interval in which the
                    # loop ran: Redis (or the network to it) is gone.
                    raise RedisConnectionError(f"no answer from Redis for {now - pinged_at:.1f} s")
                if pinged_at is None:
                    # Idle: a PING proves the connection is alive.
                    await pubsub.ping()
                    pinged_at = time.monotonic()
                continue
            late_waits = 0
            pinged_at = None  # anything from Redis, the PONG included, shows it is there
            kind = message["type"]
            if kind == "message":
                await self._deliver(message["data"])
            elif kind == "subscribe":
                waiter = self._pending_subscriptions.pop(message["channel"], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def _deliver(self, data: Any) -> None:
        registry = self._registry
        if registry is None:  # pragma: no cover - the listener starts after the registry is set
            return
        try:
            envelope = decode_envelope(data)
        except (msgspec.DecodeError, TypeError) as exc:
            self.stats.bad_messages += 1
            logger.warning("skipping a message on %s that is not a wsframe envelope: %s", self._channel, exc)
            return
        try:
            await registry.deliver_envelope(envelope)
        except Exception:
            self.stats.bad_messages += 1
            logger.exception("delivering %s to %s failed; skipped", envelope.kind, envelope.connection_id)
            return
        self.stats.delivered += 1

    def _mark_down(self, exc: BaseException) -> None:
        if self._down_since is not None:
            logger.debug("Redis at %s still unreachable: %s", self.url, _describe(exc))
            return
        self._down_since = time.monotonic()
        self._failures_at_outage_start = self.stats.publish_failures
        self.stats.outages += 1
        logger.warning(
            "Redis at %s is unreachable (%s); sends to other workers raise BackendUnavailableError and messages "
            "for this worker are lost until it is back. Reconnecting.",
            self.url,
            _describe(exc),
        )

    def _mark_up(self) -> None:
        if self._down_since is None:
            return
        duration = time.monotonic() - self._down_since
        self._down_since = None
        self.stats.outage_seconds += duration
        failed = self.stats.publish_failures - self._failures_at_outage_start
        logger.warning(
            "Redis at %s is reachable again after %.1f s; resubscribed to %s. %d send(s) failed during the outage; "
            "messages published to this worker meanwhile may have been lost (%d possibly lost in total).",
            self.url,
            duration,
            self._channel,
            failed,
            self.stats.possibly_lost,
        )


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel *task* and wait until it has ended, cancelling again if a cancel was swallowed.

    On Python 3.11 redis-py writes each command inside ``asyncio.wait_for``,
    which can swallow a cancel that lands mid-write (seen in 31 of 40
    start/stop cycles with a 1 ms health check): the loops would go on. They
    also stop at their next turn once ``_stopping`` is set. Bounded: a task
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


async def _close_quietly(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()
    except Exception as exc:  # the connection is already broken; nothing to save
        logger.debug("closing a broken pubsub connection: %s", _describe(exc))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe_pool(kwargs: dict[str, Any]) -> str:
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
