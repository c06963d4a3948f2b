"""What the Redis backend and the sync ``Publisher`` agree on: names, prefix, presence.

The key and channel schema under a prefix, the prefix check, how a Redis
location is written in logs and errors (password redacted), and the rule for
pruning presence: a member whose node's liveness key expired is gone. Pure
functions, no I/O and no redis import, so the synchronous publisher shares
them without loading the asyncio client.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..._ids import NODE_ID_LENGTH
from ...exceptions import ConfigurationError

__all__ = [
    "DEFAULT_PREFIX",
    "node_channel",
    "group_channel",
    "members_key",
    "alive_key",
    "group_nodes_key",
    "check_prefix",
    "redacted_url",
    "describe_pool",
    "describe_error",
    "member_ids",
    "nodes_to_check",
    "stale_members",
]

DEFAULT_PREFIX = "wsframe:"
"""Channels are named ``<prefix>node:<node id>``; give each app sharing a Redis its own prefix."""


def node_channel(prefix: str, node_id: str) -> str:
    """Return the pub/sub channel node *node_id* listens on under *prefix*."""
    return f"{prefix}node:{node_id}"


def group_channel(prefix: str, group: str) -> str:
    """Return the pub/sub channel of *group*: nodes with members of it subscribe there."""
    return f"{prefix}group:{group}"


def members_key(prefix: str, group: str) -> str:
    """Return the key of the Redis set holding *group*'s member connection ids (every node)."""
    return f"{prefix}members:{group}"


def group_nodes_key(prefix: str, group: str) -> str:
    """Return the key of the sorted set of nodes with members of *group*, each scored with when it expires (ms)."""
    return f"{prefix}nodes:{group}"


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


def describe_pool(kwargs: dict[str, Any]) -> str:
    """Return where a client's connection pool *kwargs* point, as a URL without credentials."""
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def describe_error(exc: BaseException) -> str:
    """Return ``"Type: message"`` for *exc* (just the type when the message is empty), for logs."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# Presence. A group's members are one Redis set shared by every node; a node
# that dies cannot remove its ids, so a reader drops the ids of every node
# whose liveness key has expired, and prunes them from the set.


def member_ids(raw: Iterable[bytes | str]) -> set[str]:
    """Return the connection ids of a members set as Redis returned them (bytes or str)."""
    return {m.decode() if isinstance(m, bytes) else str(m) for m in raw}


def nodes_to_check(members: Iterable[str], own: str = "") -> list[str]:
    """Return the nodes owning *members* whose liveness must be read, sorted; never *own* (this node)."""
    return sorted({m[:NODE_ID_LENGTH] for m in members} - {own})


def stale_members(members: Iterable[str], nodes: Sequence[str], alive: Sequence[object]) -> set[str]:
    """Return the *members* owned by a node whose liveness key read None in *alive* (one per *nodes*)."""
    dead = {node for node, flag in zip(nodes, alive, strict=True) if flag is None}
    return {m for m in members if m[:NODE_ID_LENGTH] in dead}
