"""``Publisher``: send to and close websocket connections from outside the server.

For code that is not running inside the wsframe app (a script, a job-queue
worker, a Django view): it publishes the same envelopes the Redis backend
does, with redis-py's synchronous client, so no event loop is needed::

    from wsframe import Publisher

    with Publisher("redis://127.0.0.1:6379/0") as publisher:
        publisher.send_message_to_websocket(connection_id, {"detail": "done"})
        publisher.close_websocket_connection(connection_id, code=4000, reason="logged out")
        publisher.send_message_to_group("room:42", {"detail": "maintenance at noon"})
        print(len(publisher.group_members("room:42")), "people in the room")

The app must run with the Redis backend on the same Redis and prefix. Give
the publisher the app's ``history=`` too, and its sends to those groups are
numbered and kept by the same Lua script the app runs, so members see one
sequence whoever sent. With a
``redis+cluster://host:port,...`` URL it talks to a Redis Cluster as the
cluster backend does (hash-tagged names, ``SPUBLISH`` to the owning shard).
redis-py is imported when the first publisher is made, not with wsframe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import status
from ._ids import CONNECTION_ID_LENGTH, NODE_ID_LENGTH, is_node_id, validate_group_name
from .backends.base import Envelope, check_positive, encode_envelope
from .backends.redis import _history
from .backends.redis import _keys as keys
from .codec import encode_frame
from .exceptions import BackendUnavailableError, ConfigurationError
from .history import History, check_history, encode_history_data, rule_for

if TYPE_CHECKING:
    import redis as sync_redis

__all__ = ["Publisher"]

_ORIGIN = "publisher"
"""The ``origin`` of the publisher's group envelopes: not a node id, so every node delivers them."""


class Publisher:
    """Sends to connections and groups of a wsframe app that uses the Redis backend, synchronously.

    *redis* is a URL or a ``redis.Redis`` client (yours: :meth:`close` leaves
    it open). *prefix* must be the app's, and *history* too (the app's
    ``create_app(history=...)``) for sends to its history groups to be
    numbered and kept. Each call gives up after *timeout* seconds.
    Thread-safe (redis-py's connection pool is). Raises
    :class:`~wsframe.exceptions.ConfigurationError` for a bad URL, prefix or
    history.
    """

    def __init__(
        self,
        redis: str | sync_redis.Redis,
        *,
        prefix: str = keys.DEFAULT_PREFIX,
        timeout: float = 1.0,
        history: Mapping[str, History] | None = None,
    ) -> None:
        self.prefix = keys.check_prefix(prefix)
        seconds = check_positive("timeout", timeout)
        self.history = check_history(history)
        from redis.exceptions import NoScriptError, RedisError

        self._no_script: type[Exception] = NoScriptError
        self._unreachable: tuple[type[Exception], ...] = (RedisError, OSError)
        """What the client raises when Redis is gone or too slow (redis-py is imported here, on first use)."""
        self._owns_client = isinstance(redis, str)
        self._sharded = isinstance(redis, str) and redis.startswith(f"{keys.CLUSTER_SCHEME}:")
        """A Redis Cluster: hash-tagged names and sharded publishes, as the cluster backend uses."""
        if self._sharded:
            assert isinstance(redis, str)
            client: Any = _make_cluster_client(redis, seconds)
            self.url = keys.parse_cluster_url(redis).url
        else:
            client = _make_client(redis, seconds)
            self.url = keys.redacted_url(redis) if isinstance(redis, str) else repr(client.connection_pool)
        self._client = client
        self._client_once: Any = None
        """The client for history sends, which never re-sends a command (made on first use)."""

    def send_message_to_websocket(self, connection_id: str, data: Any) -> bool:
        """Send *data* to *connection_id*, encoded as :meth:`GenericWebsocket.send` does.

        Returns True when a worker was listening for the id's node (it
        delivers if the connection is still open), False when none was (the
        worker is gone) or the id is malformed. Raises ``TypeError`` when
        *data* cannot be encoded and
        :class:`~wsframe.exceptions.BackendUnavailableError` when Redis does
        not take the message in time; nothing was sent then.
        """
        payload, opcode = encode_frame(data)
        return self._publish(Envelope("send", connection_id, payload=payload, opcode=int(opcode)))

    def close_websocket_connection(
        self, connection_id: str, code: int = status.WS_1000_NORMAL_CLOSURE, reason: str = ""
    ) -> bool:
        """Close *connection_id* with *code* and *reason*; returns as :meth:`send_message_to_websocket`.

        Raises ``ValueError`` for a code that may not be sent (as
        :func:`wsframe.close_websocket_connection`), and the same errors otherwise.
        """
        if not status.is_valid_close_code(code):
            raise ValueError(f"{code} is not a close code that can be sent; use 1000-1003, 1007-1014 or 3000-4999.")
        return self._publish(Envelope("close", connection_id, code=code, reason=reason))

    def send_message_to_group(self, group: str, data: Any, *, exclude: str | Collection[str] | None = None) -> int:
        """Send *data* to every member of *group* on every worker, except the connection ids in *exclude*.

        Encoded as :meth:`GenericWebsocket.send`; one PUBLISH on the group's
        channel, which only workers with members listen to. Returns how many
        workers took it (0: nobody is in the group, which is not an error).
        For a group with history it goes through the app's Lua script: kept,
        numbered and published in one step (``TypeError`` for bytes).
        Raises :class:`~wsframe.exceptions.InvalidGroupNameError`,
        ``TypeError`` when *data* cannot be encoded or *exclude* holds
        something other than strings, and
        :class:`~wsframe.exceptions.BackendUnavailableError` when Redis does not
        take the message in time; nothing was sent then. A send to a history
        group is never retried by the client: if Redis was only slow, it may
        have kept and sent the message, so retrying is the caller's choice (a
        retry after such a timeout numbers the message a second time).
        """
        validate_group_name(group)
        rule = rule_for(self.history, group) if self.history else None
        if rule is None:
            payload, frame_type = encode_frame(data)
            opcode = int(frame_type)
        else:
            payload, opcode = encode_history_data(data), 1  # a text frame: JSON
        excluded = (exclude,) if isinstance(exclude, str) else tuple(exclude or ())
        if not all(isinstance(connection_id, str) for connection_id in excluded):
            raise TypeError(f"exclude takes a connection id or a collection of them, got {exclude!r}")
        envelope = Envelope.group_send(group, payload, opcode, exclude=excluded, origin=_ORIGIN)
        if rule is not None:
            return self._publish_history(group, envelope, rule)
        return self._publish_to_group(group, envelope)

    def close_group(self, group: str, code: int = status.WS_1000_NORMAL_CLOSURE, reason: str = "") -> int:
        """Close every member of *group* on every worker with *code* and *reason*.

        Returns as :meth:`send_message_to_group`, without waiting for the
        closing handshakes. Raises ``ValueError`` for a code that may not be
        sent, and the errors of :meth:`send_message_to_group`.
        """
        validate_group_name(group)
        if not status.is_valid_close_code(code):
            raise ValueError(f"{code} is not a close code that can be sent; use 1000-1003, 1007-1014 or 3000-4999.")
        envelope = Envelope("group_close", "", code=code, reason=reason, group=group, origin=_ORIGIN)
        return self._publish_to_group(group, envelope)

    def group_members(self, group: str) -> set[str]:
        """Return the ids of *group*'s members on every live worker (presence), as the app's ``group_members``.

        Members of a worker whose liveness key expired (it died ``presence_ttl``
        ago) are left out and pruned from Redis. Raises
        :class:`~wsframe.exceptions.InvalidGroupNameError`, and
        :class:`~wsframe.exceptions.BackendUnavailableError` when Redis does not
        answer in time.
        """
        validate_group_name(group)
        key = (keys.cluster_members_key if self._sharded else keys.members_key)(self.prefix, group)
        alive_key = keys.cluster_alive_key if self._sharded else keys.alive_key
        try:
            members = keys.member_ids(self._client.smembers(key))
            nodes = keys.nodes_to_check(members)
            alive_keys = [alive_key(self.prefix, node) for node in nodes]
            # In a cluster the liveness keys live in many slots: one MGET per slot.
            mget = self._client.mget_nonatomic if self._sharded else self._client.mget
            alive = mget(alive_keys) if nodes else []
        except self._unreachable as exc:
            raise BackendUnavailableError(
                f"Redis at {self.url} did not say who is in group {group!r} ({exc})."
            ) from exc
        stale = keys.stale_members(members, nodes, alive)
        if stale:
            # As the app's backend does: ids of a node that stopped refreshing are gone for good.
            # If Redis fails now the next look prunes them; the answer is right either way.
            with contextlib.suppress(*self._unreachable):
                self._client.srem(key, *stale)
        return members - stale

    def close(self) -> None:
        """Release the connections this publisher opened (a client you passed stays open)."""
        if self._owns_client:
            self._client.close()
        if self._client_once is not None:
            self._client_once.close()
            self._client_once.connection_pool.disconnect()
            self._client_once = None

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _publish(self, envelope: Envelope) -> bool:
        connection_id = envelope.connection_id
        node_id = connection_id[:NODE_ID_LENGTH]
        if len(connection_id) != CONNECTION_ID_LENGTH or not is_node_id(node_id):
            return False
        channel = (keys.cluster_node_channel if self._sharded else keys.node_channel)(self.prefix, node_id)
        return bool(self._publish_on(channel, envelope, f"{envelope.kind} for {connection_id}"))

    def _publish_to_group(self, group: str, envelope: Envelope) -> int:
        channel = (keys.cluster_group_channel if self._sharded else keys.group_channel)(self.prefix, group)
        return self._publish_on(channel, envelope, f"{envelope.kind} to group {group!r}")

    def _publish_history(self, group: str, envelope: Envelope, rule: History) -> int:
        """Run the history script for *envelope* (as the app's backend does); return the workers that took it."""
        channel = (keys.cluster_group_channel if self._sharded else keys.group_channel)(self.prefix, group)
        command = "SPUBLISH" if self._sharded else "PUBLISH"
        arguments = _history.publish_arguments(self.prefix, group, channel, envelope, rule, command)
        try:
            try:
                reply = self._once().execute_command("EVALSHA", _history.PUBLISH.sha, *arguments)
            except self._no_script:  # EVALSHA ran nothing: sending the text cannot run it twice
                reply = self._once().execute_command("EVAL", _history.PUBLISH.text, *arguments)
        except self._unreachable as exc:
            raise BackendUnavailableError(
                f"Redis at {self.url} did not take the group_send to group {group!r} ({exc}); "
                "probably not sent, but it may have been kept and sent if Redis was only slow."
            ) from exc
        return _history.parse_publish(reply, f"Redis at {self.url}")[2]

    def _once(self) -> Any:
        """A client on the same server that sends each command once: no retry after a timeout.

        The plain client retries once on a lost connection, which is harmless
        for a PUBLISH that may reach a subscriber twice at worst. The history
        script must not run twice: Redis may have run it and the reply been
        lost, and a retry would keep and number the message a second time.
        """
        if self._sharded:
            return self._client  # the cluster client is made without retries
        if self._client_once is None:
            import redis as sync_redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            pool = self._client.connection_pool
            kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
            once = sync_redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            self._client_once = sync_redis.Redis(connection_pool=once)
        return self._client_once

    def _publish_on(self, channel: str, envelope: Envelope, what: str) -> int:
        """PUBLISH *envelope* on *channel*; return how many subscribers took it, or raise naming *what*."""
        try:
            if self._sharded:
                return int(self._client.spublish(channel, encode_envelope(envelope)))
            return int(self._client.publish(channel, encode_envelope(envelope)))
        except self._unreachable as exc:
            raise BackendUnavailableError(f"Redis at {self.url} did not take the {what} ({exc}); not sent.") from exc


def _make_client(target: str | sync_redis.Redis, timeout: float) -> sync_redis.Redis:
    import redis as sync_redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if isinstance(target, sync_redis.Redis):
        if target.connection_pool.connection_kwargs.get("decode_responses"):
            raise ConfigurationError("the Redis client given to Publisher must be made with decode_responses=False")
        return target
    if not isinstance(target, str):
        raise ConfigurationError(
            f"Publisher takes a URL such as 'redis://127.0.0.1:6379/0' or a redis.Redis client, "
            f"got {type(target).__name__}"
        )
    try:
        return sync_redis.Redis.from_url(
            target, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1)
        )
    except ValueError as exc:
        raise ConfigurationError(f"not a Redis URL: {keys.redacted_url(target)!r} ({exc})") from None


def _make_cluster_client(url: str, timeout: float) -> Any:
    """A sync ``redis.cluster.RedisCluster`` on the startup nodes of *url*; redirections followed, no retry."""
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    location = keys.parse_cluster_url(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in location.nodes],  # type: ignore[no-untyped-call]
        username=location.username,
        password=location.password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
