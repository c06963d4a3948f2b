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

The key schema (:mod:`._keys`) is importable without redis-py's asyncio
client, which the sync ``Publisher`` relies on: :class:`RedisBackend` and
:class:`RedisBackendStats` load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._keys import (
    DEFAULT_PREFIX,
    alive_key,
    check_prefix,
    group_channel,
    members_key,
    node_channel,
    redacted_url,
)

if TYPE_CHECKING:
    from ._backend import RedisBackend
    from ._cluster import RedisClusterBackend
    from ._listener import RedisBackendStats

__all__ = [
    "RedisBackend",
    "RedisBackendStats",
    "RedisClusterBackend",
    "DEFAULT_PREFIX",
    "node_channel",
    "group_channel",
    "members_key",
    "alive_key",
    "redacted_url",
    "check_prefix",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: they import redis.asyncio, which the names above do not need.
    if name == "RedisBackend":
        from ._backend import RedisBackend

        return RedisBackend
    if name == "RedisClusterBackend":
        from ._cluster import RedisClusterBackend

        return RedisClusterBackend
    if name == "RedisBackendStats":
        from ._listener import RedisBackendStats

        return RedisBackendStats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
