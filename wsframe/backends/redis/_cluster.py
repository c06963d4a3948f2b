"""``RedisClusterBackend``: the Redis backend on a Redis Cluster, with sharded pub/sub.

Classic PUBLISH in a cluster reaches every node; ``SPUBLISH`` reaches only the master
owning the channel's slot (and its replicas). Every name carries a hash tag
(:func:`~._keys.cluster_node_channel` and friends), so a node's channel and liveness
key share a slot, a group's channel and member set share another, and each command
touches one slot. A worker holds at most one subscriber connection per master (a
:class:`~._shards.Shard`), with the channels of its node and groups that hash there.

The guarantees are the single-Redis backend's, per shard: at-most-once delivery;
a send fails fast with :class:`~wsframe.exceptions.BackendUnavailableError` naming the
shard while this worker knows it is down, within ``operation_timeout`` otherwise; never
sent twice (no retry). After a failover or a slot migration the shards resubscribe
where the channels live now; what was published meanwhile is counted in
``stats.reroutes`` / ``stats.outages`` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from ..._ids import is_node_id
from ...exceptions import BackendUnavailableError, ConfigurationError
from ...history import History, Position
from ..base import Backend, Envelope, HistoryRead, Node, encode_envelope
from . import _history
from ._keys import (
    DEFAULT_PREFIX,
    check_prefix,
    check_timings,
    cluster_alive_key,
    cluster_group_channel,
    cluster_members_key,
    cluster_node_channel,
    describe_error,
    member_ids,
    nodes_to_check,
    parse_cluster_url,
    stale_members,
)
from ._listener import UNREACHABLE, cancel_and_wait
from ._shards import ClusterBackendStats, Shard

__all__ = ["RedisClusterBackend"]

logger = logging.getLogger("wsframe.backends.redis")


class RedisClusterBackend(Backend):
    """Carries envelopes between nodes over a Redis Cluster's sharded pub/sub.

    *url* is ``redis+cluster://host:port[,host:port...]`` (startup nodes; the rest is
    discovered). The options are the :class:`~wsframe.backends.RedisBackend`'s.
    Raises :class:`~wsframe.exceptions.ConfigurationError` at construction for a bad
    URL or prefix (one with ``{`` or ``}`` would break the hash tags), and
    :class:`~wsframe.exceptions.BackendUnavailableError` from :meth:`on_startup` when
    the cluster cannot be reached.
    """

    name = "redis-cluster"
    supports_history = True
    _label = "Redis Cluster"
    _starts = "connects to the Redis Cluster"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        operation_timeout: float = 0.5,
        health_check_interval: float = 5.0,
        max_backoff: float = 1.0,
        presence_ttl: float = 15.0,
    ) -> None:
        found = importlib.metadata.version("redis")
        if tuple(int(part) for part in found.split(".")[:2]) < (8, 0):
            raise ConfigurationError(
                f"the Redis Cluster backend needs redis-py 8.0 or newer (sharded pub/sub in asyncio), "
                f"found {found}: pip install 'redis>=8'"
            )
        self.prefix = check_prefix(prefix)
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError(f"a Redis Cluster prefix may not contain {{ or }} (hash tags), got {prefix!r}")
        if not isinstance(url, str):
            raise ConfigurationError(f"the Redis Cluster backend takes a redis+cluster:// URL, got {url!r}")
        self.location = parse_cluster_url(url)
        self.url = self.location.url
        self.operation_timeout, self.health_check_interval, self.max_backoff, self.presence_ttl = check_timings(
            operation_timeout, health_check_interval, max_backoff, presence_ttl
        )
        self.stats: ClusterBackendStats = ClusterBackendStats()
        self._cluster: RedisCluster | None = None
        self.shards: dict[str, Shard] = {}
        """This node's subscriber connections, by master (``host:port``)."""
        self._relocating = asyncio.Lock()
        self._keepalive: asyncio.Task[None] | None = None
        self._stopping = False

    def _started(self) -> bool:
        return self._cluster is not None and not self._stopping

    def _timeouts(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.operation_timeout,
            "socket_connect_timeout": self.operation_timeout,
            "username": self.location.username,
            "password": self.location.password,
        }

    # -------------------------------------------------------------- lifecycle

    async def on_startup(self, node: Node) -> None:
        """Read the slot map, subscribe to this node's channel on its master, start presence.

        Raises :class:`~wsframe.exceptions.BackendUnavailableError` naming the URL when
        the cluster does not answer within four operation timeouts.
        """
        self._node = node
        self._stopping = False
        # No retry: a command whose reply was lost after Redis ran it would run twice.
        # Redirections (MOVED/ASK after a migration) are still followed.
        self._cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.location.nodes],
            retry=Retry(NoBackoff(), 0),
            **self._timeouts(),
        )
        try:
            async with asyncio.timeout(self.operation_timeout * 4):
                await self._cluster.initialize()
            await self._listen(cluster_node_channel(self.prefix, node.node_id))
        except UNREACHABLE as exc:
            await self._close()
            raise BackendUnavailableError(
                f"the Redis Cluster at {self.url} is unreachable at startup ({describe_error(exc)}). Start it or fix "
                "the URL given to create_app(redis=...)."
            ) from exc
        self._keepalive = asyncio.create_task(self._keep_alive(node), name=f"wsframe cluster presence {node.node_id}")

    async def on_shutdown(self) -> None:
        """Stop every shard and presence, leave presence, close the connections."""
        self._stopping = True
        if self._keepalive is not None:
            await cancel_and_wait(self._keepalive)
            self._keepalive = None
        cluster, node = self._cluster, self._node
        if cluster is not None and node is not None:
            with contextlib.suppress(*UNREACHABLE):
                async with asyncio.timeout(self.operation_timeout):
                    await cluster.delete(cluster_alive_key(self.prefix, node.node_id))
        await self._close()

    async def _close(self) -> None:
        shards, self.shards = list(self.shards.values()), {}
        for shard in shards:
            await self._retire(shard)
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            with contextlib.suppress(*UNREACHABLE):
                await cluster.aclose()

    async def _retire(self, shard: Shard) -> None:
        shard.stopping = True
        if shard.task is not None and shard.task is not asyncio.current_task():
            await cancel_and_wait(shard.task)
        with contextlib.suppress(*UNREACHABLE):
            await shard.client.aclose(close_connection_pool=True)

    # ---------------------------------------------------------------- routing

    def _owner(self, channel: str) -> str:
        """The ``host:port`` of the master owning *channel*'s slot, as this node last read the slot map."""
        cluster = self._cluster
        if cluster is None:
            raise BackendUnavailableError("the Redis Cluster backend is not started")
        return str(cluster.nodes_manager.get_node_from_slot(key_slot(channel.encode())).name)

    def _shard(self, name: str) -> Shard:
        shard = self.shards.get(name)
        if shard is None:
            host, _, port = name.rpartition(":")
            client = aioredis.Redis(host=host, port=int(port), retry=Retry(NoBackoff(), 0), **self._timeouts())
            shard = self.shards[name] = Shard(
                name,
                client,
                stats=self.stats,
                operation_timeout=self.operation_timeout,
                health_check_interval=self.health_check_interval,
                max_backoff=self.max_backoff,
                receive=self._receive,
                relocate=self._relocate,
                reconnected=self._reconnected,
            )
        return shard

    def _reconnected(self) -> None:
        # What history groups were sent while a shard was away is in their streams: read it now
        # rather than when (if) the next message shows the gap. The reads run in tasks.
        if self._node is not None and not self._stopping:
            self._node.check_history()

    async def _listen(self, channel: str) -> None:
        """Subscribe to *channel* on its master; return once confirmed (TimeoutError otherwise)."""
        shard = self._shard(self._owner(channel))
        if shard.task is None or shard.task.done():
            shard.channels.add(channel)
            shard.start()
        await shard.add(channel)

    async def _relocate(self) -> None:
        """Re-read the slot map; move every channel whose slot another master owns now to that master's shard."""
        cluster = self._cluster
        if cluster is None or self._stopping:
            return
        async with self._relocating:
            async with asyncio.timeout(self.operation_timeout * 4):
                await cluster.nodes_manager.initialize()
            moved = 0
            for shard in list(self.shards.values()):
                for channel in sorted(shard.channels):
                    owner = self._owner(channel)
                    if owner != shard.name:
                        moved += 1
                        await shard.discard(channel)
                        target = self._shard(owner)
                        target.channels.add(channel)
                        if target.task is None or target.task.done():
                            target.start()
                        elif target.pubsub is not None:
                            with contextlib.suppress(*UNREACHABLE, TimeoutError):
                                await target.add(channel)
                if not shard.channels:
                    del self.shards[shard.name]
                    await self._retire(shard)
            if moved:
                logger.warning(
                    "%d channel(s) of node %s moved to another Redis Cluster master; resubscribed there.",
                    moved,
                    self._node.node_id if self._node else "?",
                )

    def _client(self, channel: str, what: str) -> RedisCluster:
        """The cluster client; BackendUnavailableError (counted) if not started or *channel*'s shard is down here."""
        self._require_started()
        cluster = self._cluster
        if cluster is None:  # pragma: no cover - _require_started checked it
            raise BackendUnavailableError("the Redis Cluster backend is not started")
        name = self._owner(channel)
        shard = self.shards.get(name)
        if shard is not None and shard.down_since is not None:
            self.stats.publish_failures += 1
            raise BackendUnavailableError(
                f"Redis Cluster shard {name} (of {self.url}) has been unreachable for "
                f"{time.monotonic() - shard.down_since:.1f} s; {what} failed. Retry when it, or its replica, is back."
            )
        return cluster

    async def _call(self, channel: str, what: str, command: str, *args: Any) -> Any:
        """Run one command on the slot of *channel* within operation_timeout; BackendUnavailableError if it fails."""
        cluster = self._client(channel, what)
        try:
            async with asyncio.timeout(self.operation_timeout):
                return await cluster.execute_command(command, *args)
        except UNREACHABLE as exc:
            raise self._shard_failed(channel, what, exc) from exc

    def _shard_failed(self, channel: str, what: str, exc: BaseException) -> BackendUnavailableError:
        """Count a failed command on *channel*'s shard and return the error that says so."""
        self.stats.publish_failures += 1
        return BackendUnavailableError(
            f"Redis Cluster shard {self._owner(channel)} (of {self.url}): {what} failed ({describe_error(exc)}); "
            "it was probably not done, but may still be if Redis was only slow."
        )

    # ---------------------------------------------------------------- publish

    async def publish_to_node(self, node_id: str, envelope: Envelope) -> None:
        """SPUBLISH *envelope* on node *node_id*'s shard channel (see :meth:`RedisBackend.publish_to_node`).

        Raises :class:`~wsframe.exceptions.BackendUnavailableError` naming the shard,
        at once while this node knows it is down, within ``operation_timeout`` otherwise.
        """
        self._require_started()
        if not is_node_id(node_id):
            return
        channel = cluster_node_channel(self.prefix, node_id)
        what = f"the {envelope.kind} for {envelope.connection_id}"
        receivers = await self._call(channel, what, "SPUBLISH", channel, encode_envelope(envelope))
        self.stats.published += 1
        if not receivers:
            self.stats.unrouted += 1
            logger.debug("no worker listens for node %s; %s dropped", node_id, what)

    async def publish_to_group(self, group: str, envelope: Envelope) -> None:
        """SPUBLISH *envelope* once on *group*'s shard channel; errors as :meth:`publish_to_node`."""
        channel = cluster_group_channel(self.prefix, group)
        await self._call(channel, f"{envelope.kind} to group {group!r}", "SPUBLISH", channel, encode_envelope(envelope))
        self.stats.published += 1

    # ---------------------------------------------------------------- history

    async def _script(self, channel: str, what: str, script: _history.Script, arguments: list[Any]) -> Any:
        """Run *script* on the slot of *channel* (its keys share the hash tag); errors as :meth:`_call`."""
        cluster = self._client(channel, what)
        try:
            async with asyncio.timeout(self.operation_timeout):
                try:
                    return await cluster.execute_command("EVALSHA", script.sha, *arguments)
                except NoScriptError:  # EVALSHA ran nothing: sending the text cannot run it twice
                    return await cluster.execute_command("EVAL", script.text, *arguments)
        except UNREACHABLE as exc:
            raise self._shard_failed(channel, what, exc) from exc

    async def history_publish(self, group: str, envelope: Envelope, rule: History) -> Envelope:
        """Number, keep and SPUBLISH the message in one script on the group's slot (see RedisBackend)."""
        channel = cluster_group_channel(self.prefix, group)
        arguments = _history.publish_arguments(self.prefix, group, channel, envelope, rule, "SPUBLISH")
        reply = await self._script(channel, f"{envelope.kind} to group {group!r}", _history.PUBLISH, arguments)
        epoch, offset, _ = _history.parse_publish(reply, f"Redis Cluster shard {self._owner(channel)}")
        self.stats.published += 1
        return msgspec.structs.replace(envelope, epoch=epoch, offset=offset)

    async def history_read(self, group: str, since: Position | None, rule: History) -> HistoryRead:
        """Return the group's position and the messages after *since* when kept (see RedisBackend)."""
        channel = cluster_group_channel(self.prefix, group)
        arguments = _history.read_arguments(self.prefix, group, since, rule)
        reply = await self._script(channel, f"history read of {group!r}", _history.READ, arguments)
        return _history.parse_read(reply, since, f"Redis Cluster shard {self._owner(channel)}")

    # ----------------------------------------------------------------- groups

    async def group_joined(self, group: str, connection_id: str, *, first_here: bool) -> None:
        """Add the id to the group's set; the first local member subscribes on the group's master, confirmed.

        Raises :class:`~wsframe.exceptions.BackendUnavailableError` when that shard is
        down or does not confirm in time.
        """
        channel = cluster_group_channel(self.prefix, group)
        what = f"join of {group!r}"
        await self._call(channel, what, "SADD", cluster_members_key(self.prefix, group), connection_id)
        if not first_here:
            return
        try:
            await self._listen(channel)
        except (*UNREACHABLE, TimeoutError) as exc:
            raise BackendUnavailableError(
                f"Redis Cluster shard {self._owner(channel)} did not confirm the subscription to group {group!r}."
            ) from exc

    async def group_left(self, group: str, connection_ids: list[str], *, last_here: bool) -> None:
        """Remove the ids from the group's set; the last local member unsubscribes. BackendUnavailableError if down."""
        channel = cluster_group_channel(self.prefix, group)
        if last_here:
            for shard in list(self.shards.values()):
                if channel in shard.channels:
                    await shard.discard(channel)
        what = f"leave of {group!r}"
        await self._call(channel, what, "SREM", cluster_members_key(self.prefix, group), *connection_ids)

    async def group_members(self, group: str) -> set[str]:
        """Return the group's members on every live node, pruning those of dead nodes.

        One SMEMBERS on the group's slot, then the owners' liveness keys slot by slot.
        Raises :class:`~wsframe.exceptions.BackendUnavailableError` when a shard involved is down.
        """
        node = self._require_started()
        channel = cluster_group_channel(self.prefix, group)
        key = cluster_members_key(self.prefix, group)
        what = f"presence of {group!r}"
        members = member_ids(await self._call(channel, what, "SMEMBERS", key))
        nodes = nodes_to_check(members, own=node.node_id)
        alive = []
        for other in nodes:
            alive_key = cluster_alive_key(self.prefix, other)
            alive.append(await self._call(alive_key, what, "GET", alive_key))
        stale = stale_members(members, nodes, alive)
        if stale:
            with contextlib.suppress(BackendUnavailableError):
                await self._call(channel, f"pruning {group!r}", "SREM", key, *stale)
        return members - stale

    async def _keep_alive(self, node: Node) -> None:
        """Refresh this node's liveness key every third of presence_ttl, for as long as the app runs."""
        key = cluster_alive_key(self.prefix, node.node_id)
        while not self._stopping:
            with contextlib.suppress(BackendUnavailableError):
                await self._call(key, "presence", "SET", key, b"1", "PX", int(self.presence_ttl * 1000))
            await asyncio.sleep(self.presence_ttl / 3)
