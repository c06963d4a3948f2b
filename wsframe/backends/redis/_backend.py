"""``RedisBackend``: the lifecycle, the sends and the group operations over Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec
import redis.asyncio as aioredis

from ..._ids import is_node_id
from ...exceptions import BackendUnavailableError, ConfigurationError
from ..base import Backend, Envelope, Node, encode_envelope
from ._historyops import RedisHistory
from ._keys import (
    DEFAULT_PREFIX,
    alive_key,
    check_prefix,
    check_timings,
    describe_error,
    describe_pool,
    group_channel,
    group_nodes_key,
    member_ids,
    members_key,
    node_channel,
    nodes_to_check,
    redacted_url,
    stale_members,
)
from ._listener import UNREACHABLE, Listener, RedisBackendStats, cancel_and_wait
from ._outbox import Outbox, make_clients
from ._presence import GroupLosses, Presence

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = ["RedisBackend"]

logger = logging.getLogger("wsframe.backends.redis")


class RedisBackend(RedisHistory, Backend):
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
    supports_history = True
    _label = "Redis"
    _starts = "connects to Redis"

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
        self.operation_timeout, self.health_check_interval, self.max_backoff, self.presence_ttl = check_timings(
            operation_timeout, health_check_interval, max_backoff, presence_ttl
        )
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
            self.url = describe_pool(kwargs)
        else:
            raise ConfigurationError(
                f"redis= takes a URL such as 'redis://127.0.0.1:6379/0' or a redis.asyncio.Redis client, "
                f"got {type(redis).__name__}"
            )
        self.stats: RedisBackendStats = RedisBackendStats()
        self._client: aioredis.Redis | None = None
        self._outbox: Outbox | None = None
        self._subscriber: Listener | None = None
        self._listener: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._presence: Presence | None = None
        self._losses = GroupLosses(self.stats)

    @property
    def _down_since(self) -> float | None:
        """When the listener lost Redis (``time.monotonic()``), or None while it has it."""
        return self._subscriber.down_since if self._subscriber is not None else None

    def _started(self) -> bool:
        return self._outbox is not None

    def channel_for(self, node_id: str) -> str:
        """Return the channel that node *node_id* listens on (``<prefix>node:<node id>``)."""
        return node_channel(self.prefix, node_id)

    # -------------------------------------------------------------- lifecycle

    async def on_startup(self, node: Node) -> None:
        """Connect, subscribe to this node's channel and start the supervised listener.

        Raises :class:`~wsframe.exceptions.BackendUnavailableError` naming the
        URL when Redis does not answer within ``operation_timeout``; under
        gunicorn that makes the worker exit with a boot error.
        """
        self._node = node
        channel = self.channel_for(node.node_id)
        self._client, listener_client = self._make_clients()
        self._subscriber = subscriber = Listener(
            listener_client,
            channel,
            url=self.url,
            stats=self.stats,
            operation_timeout=self.operation_timeout,
            health_check_interval=self.health_check_interval,
            max_backoff=self.max_backoff,
            receive=self._receive_redis,
            reconnected=self._reconnected,
        )
        self._outbox = outbox = Outbox(self._client, self.operation_timeout)
        self._losses = GroupLosses(self.stats)
        self._presence = presence = Presence(
            node,
            prefix=self.prefix,
            ttl=self.presence_ttl,
            operation_timeout=self.operation_timeout,
            max_backoff=self.max_backoff,
            stats=self.stats,
        )
        try:
            async with asyncio.timeout(self.operation_timeout * 4):
                await self._client.ping()
            pubsub = await subscriber.subscribe()
        except UNREACHABLE as exc:
            self._outbox = None
            await self._close_clients()
            raise BackendUnavailableError(
                f"Redis at {self.url} is unreachable at startup ({describe_error(exc)}). Start Redis or fix the URL "
                "given to create_app(redis=...)."
            ) from exc
        self._listener = asyncio.create_task(subscriber.supervise(pubsub), name=f"wsframe redis listener {channel}")
        self._keepalive = asyncio.create_task(presence.run(outbox), name=f"wsframe redis presence {node.node_id}")
        logger.debug("node %s listening on Redis channel %s at %s", node.node_id, channel, self.url)

    async def on_shutdown(self) -> None:
        """Stop the listener and close the connections this backend opened (never a client you passed)."""
        if self._subscriber is not None:
            self._subscriber.stopping = True
        if self._presence is not None:
            self._presence.stopping = True
        for task in (self._keepalive, self._listener):
            if task is not None:
                await cancel_and_wait(task)
        self._keepalive = self._listener = None
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.close()
        client, node, subscriber = self._client, self._node, self._subscriber
        if client is not None and node is not None:
            # Leave presence at once rather than after presence_ttl, and the
            # groups' node lists, so senders do not count sends to us as lost.
            pipe = client.pipeline(transaction=False)
            pipe.delete(alive_key(self.prefix, node.node_id))
            group_prefix = group_channel(self.prefix, "")
            for channel in subscriber.group_channels if subscriber is not None else ():
                pipe.zrem(group_nodes_key(self.prefix, channel.removeprefix(group_prefix)), node.node_id)
            with contextlib.suppress(*UNREACHABLE):
                async with asyncio.timeout(self.operation_timeout):
                    await pipe.execute()
        await self._close_clients()

    def _make_clients(self) -> tuple[aioredis.Redis, aioredis.Redis]:
        return make_clients(self._url or "", self._user_client, self.operation_timeout)

    async def _close_clients(self) -> None:
        subscriber, self._subscriber = self._subscriber, None
        client, self._client = self._client, None
        if subscriber is not None:
            await subscriber.client.aclose(close_connection_pool=True)
        if client is not None and client is not self._user_client:
            await client.aclose(close_connection_pool=True)

    async def _reconnected(self) -> None:
        # Redis is back after an outage: the command connections opened before
        # it are likely dead (a restarted server). Closed now, they reconnect
        # on their next use, so the first sends afterwards do not fail on them.
        # A restarted Redis has also forgotten this node's presence: write it
        # back now rather than at the next periodic refresh.
        client = self._client
        if client is not None and client is not self._user_client:
            with contextlib.suppress(*UNREACHABLE):
                await client.connection_pool.disconnect()
        if self._presence is not None:
            self._presence.refresh_soon()
        # What history groups were sent while we were away is in their streams:
        # read it now rather than when (if) the next message shows the gap.
        # The reads run in tasks, after the listener has marked Redis up.
        if self._node is not None:
            self._node.check_history()

    async def _receive_redis(self, data: bytes, where: str) -> None:
        """Decode and deliver, counting the numbered group envelopes of other nodes that never arrived."""
        envelope = self._decode(data, where)
        if envelope is None:
            return
        node = self._node
        if envelope.seq and node is not None and envelope.origin != node.node_id:
            self._losses.heard(envelope, members_here=len(node.local_members(envelope.group)))
        await self._deliver(envelope)

    # ---------------------------------------------------------------- publish

    async def publish_to_node(self, node_id: str, envelope: Envelope) -> None:
        """PUBLISH *envelope* on node *node_id*'s channel.

        Returns once Redis has taken it (delivery to the subscriber is
        at-most-once). A node nobody listens for is not an error (counted in
        ``stats.unrouted``). Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` before startup, at
        once while the listener knows Redis is down (nothing was sent then),
        and within ``operation_timeout`` otherwise: then the message was
        probably not delivered, but may still be, if Redis was only slow or the
        reply was lost. It is never sent twice. Cancellation may leave the
        message published or not.
        """
        self._require_started()
        if not is_node_id(node_id):
            logger.debug("dropping %s for %s: %r is not a node id", envelope.kind, envelope.connection_id, node_id)
            return
        what = f"{envelope.kind} for {envelope.connection_id}"
        outbox = self._available(f"{what} not sent")
        try:
            async with asyncio.timeout(self.operation_timeout):
                receivers = await outbox.publish(self.channel_for(node_id), encode_envelope(envelope))
        except UNREACHABLE as exc:
            self.stats.publish_failures += 1
            raise BackendUnavailableError(
                f"Redis at {self.url} did not take the {what} ({describe_error(exc)}); "
                "it was probably not delivered, but may still be if Redis was only slow."
            ) from exc
        self.stats.published += 1
        if not receivers:
            self.stats.unrouted += 1
            logger.debug("no worker listens for node %s; %s dropped", node_id, what)

    def _available(self, what: str) -> Outbox:
        """Return the outbox; raise BackendUnavailableError (counted) when not started or Redis is known down."""
        self._require_started()
        outbox = self._outbox
        down_since = self._down_since
        if outbox is None:  # pragma: no cover - _require_started checked it
            raise BackendUnavailableError("the Redis backend is not started")
        if down_since is not None:
            self.stats.publish_failures += 1
            raise BackendUnavailableError(
                f"Redis at {self.url} has been unreachable for {time.monotonic() - down_since:.1f} s; "
                f"{what}. Retry when Redis is back."
            )
        return outbox

    async def _call(self, what: str, operation: Awaitable[Any]) -> Any:
        """Await one Redis *operation* within operation_timeout; BackendUnavailableError (counted) if it fails."""
        try:
            async with asyncio.timeout(self.operation_timeout):
                return await operation
        except UNREACHABLE as exc:
            self.stats.publish_failures += 1
            raise BackendUnavailableError(f"Redis at {self.url}: {what} failed ({describe_error(exc)}).") from exc

    # ----------------------------------------------------------------- groups

    async def publish_to_group(self, group: str, envelope: Envelope) -> None:
        """PUBLISH *envelope* once on *group*'s channel: only nodes with members subscribe to it.

        The registry calls this before it serves this node's members. Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` before startup; at
        once while the listener knows Redis is down: then nothing went out, to
        anyone, and a retry once Redis is back reaches every member once; and
        within ``operation_timeout`` when Redis does not take it: then this
        node's members did not get it either, and other nodes' members
        probably did not, but may have if Redis was only slow (the error says
        so). A group envelope is numbered, so that receivers count the ones
        they missed (``stats.group_missed``).
        """
        what = f"{envelope.kind} to group {group!r}"
        outbox = self._available(f"the {what} was sent to no member, on this worker or any other")
        numbered = msgspec.structs.replace(envelope, seq=self._losses.next_number(group))
        try:
            async with asyncio.timeout(self.operation_timeout):
                receivers, nodes = await outbox.commands(
                    [
                        ("PUBLISH", group_channel(self.prefix, group), encode_envelope(numbered)),
                        ("ZCOUNT", group_nodes_key(self.prefix, group), int(time.time() * 1000), "+inf"),
                    ]
                )
        except UNREACHABLE as exc:
            self.stats.publish_failures += 1
            raise BackendUnavailableError(
                f"Redis at {self.url} did not take the {what} ({describe_error(exc)}); no member on this worker "
                "got it, and members on other workers probably did not, but may have if Redis was only slow "
                "(a retry could reach those twice)."
            ) from exc
        self.stats.published += 1
        self._losses.published(group, receivers, nodes)

    async def group_joined(self, group: str, connection_id: str, *, first_here: bool) -> None:
        """Add the id to the group's member set; the first local member subscribes this node to the group.

        Returns once Redis has confirmed the subscription, so a group send
        made after join_group() returns reaches the new member. Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` when Redis is down
        or does not confirm in time; an id Redis may have added anyway is
        removed by the next presence refresh.
        """
        what = f"join of {group!r}"
        outbox = self._available(f"{what} failed")
        presence = self._presence
        if presence is not None:
            presence.joined(group, connection_id)
        try:
            await self._call(what, outbox.command("SADD", members_key(self.prefix, group), connection_id))
            await self._subscribe_group(group, first_here=first_here)
            if first_here:
                # Subscribed: senders may now count this node among those a group send must reach.
                expires = int((time.time() + self.presence_ttl) * 1000)
                node_id = self._require_started().node_id
                await self._call(what, outbox.command("ZADD", group_nodes_key(self.prefix, group), expires, node_id))
        except BaseException:
            if presence is not None:
                presence.left(group, [connection_id])  # the registry forgets it: so must Redis
                presence.missed()
            raise

    async def _subscribe_group(self, group: str, *, first_here: bool) -> None:
        subscriber = self._subscriber
        if not first_here or subscriber is None:
            return
        channel = group_channel(self.prefix, group)
        subscriber.group_channels.add(channel)
        pubsub = subscriber.pubsub
        if pubsub is None:
            return  # the supervisor subscribes to every group channel when it reconnects
        with subscriber.confirmation(channel) as confirmed:
            await self._call(f"join of {group!r}", pubsub.subscribe(channel))
            try:
                async with asyncio.timeout(self.operation_timeout * 4):
                    await asyncio.shield(confirmed)
            except TimeoutError as exc:
                raise BackendUnavailableError(
                    f"Redis at {self.url} did not confirm the subscription to group {group!r} in time."
                ) from exc

    async def group_left(self, group: str, connection_ids: list[str], *, last_here: bool) -> None:
        """Remove the ids from the group's member set; the last local member unsubscribes this node.

        Never raises for Redis being down or slow: a removal Redis did not
        confirm is retried by the presence refresh (within ``max_backoff``
        once Redis answers), so no left member stays listed. Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` before startup.
        """
        self._require_started()
        subscriber, presence, outbox = self._subscriber, self._presence, self._outbox
        if presence is not None:
            presence.left(group, connection_ids)  # first: a cancel below must not lose the leave
        channel = group_channel(self.prefix, group)
        if last_here:
            self._losses.forget(group)
            if subscriber is not None:
                subscriber.group_channels.discard(channel)  # not resubscribed after a reconnect
        try:
            if outbox is None or self._down_since is not None:
                raise BackendUnavailableError("Redis is known to be down")
            commands: list[tuple[Any, ...]] = [("SREM", members_key(self.prefix, group), *connection_ids)]
            if last_here:
                # Before the unsubscribe, so senders stop expecting this node first.
                commands.append(("ZREM", group_nodes_key(self.prefix, group), self._require_started().node_id))
            async with asyncio.timeout(self.operation_timeout):
                await outbox.commands(commands)
        except (*UNREACHABLE, BackendUnavailableError) as exc:
            logger.debug("Redis did not take the leave of %r (%s); the presence refresh retries it", group, exc)
            if presence is not None:
                presence.missed()
        except BaseException:
            if presence is not None:
                presence.missed()
            raise
        if last_here and subscriber is not None and channel not in subscriber.group_channels:  # not joined again
            pubsub = subscriber.pubsub
            if pubsub is not None:
                with contextlib.suppress(*UNREACHABLE):
                    await pubsub.unsubscribe(channel)

    async def group_members(self, group: str) -> set[str]:
        """Return the group's members on every live node, pruning those of nodes that died.

        Raises :class:`~wsframe.exceptions.BackendUnavailableError` before
        startup and when Redis is down or too slow.
        """
        what = f"presence of {group!r}"
        outbox = self._available(f"{what} failed")
        node = self._require_started()
        key = members_key(self.prefix, group)
        members = member_ids(await self._call(what, outbox.command("SMEMBERS", key)))
        nodes = nodes_to_check(members, own=node.node_id)
        if not nodes:
            return members
        alive = await self._call(what, outbox.command("MGET", *[alive_key(self.prefix, other) for other in nodes]))
        stale = stale_members(members, nodes, alive)
        if stale:
            # The owner stopped refreshing its liveness key (killed, or cut
            # off for longer than presence_ttl): its members are gone.
            with contextlib.suppress(BackendUnavailableError):
                await self._call(f"pruning {group!r}", outbox.command("SREM", key, *stale))
        return members - stale
