"""What the Redis backend and the sync ``Publisher`` agree on: names, prefix, presence.

The key and channel schema under a prefix, the prefix check, how a Redis
location is written in logs and errors (password redacted), and the rule for
pruning presence: a member whose node's liveness key expired is gone. Pure
functions, no I/O and no redis import, so the synchronous publisher shares
them without loading the asyncio client.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ..._ids import NODE_ID_LENGTH
from ...exceptions import ConfigurationError
from ..base import check_positive

__all__ = [
    "DEFAULT_PREFIX",
    "node_channel",
    "group_channel",
    "members_key",
    "alive_key",
    "group_nodes_key",
    "check_prefix",
    "check_timings",
    "redacted_url",
    "describe_pool",
    "describe_error",
    "member_ids",
    "nodes_to_check",
    "stale_members",
    "CLUSTER_SCHEME",
    "ClusterLocation",
    "parse_cluster_url",
    "cluster_node_channel",
    "cluster_group_channel",
    "cluster_members_key",
    "cluster_alive_key",
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


def check_timings(
    operation_timeout: object, health_check_interval: object, max_backoff: object, presence_ttl: object
) -> tuple[float, float, float, float]:
    """Return the four timing options of a Redis backend, each checked positive (``ConfigurationError`` if not)."""
    return (
        check_positive("operation_timeout", operation_timeout),
        check_positive("health_check_interval", health_check_interval),
        check_positive("max_backoff", max_backoff),
        check_positive("presence_ttl", presence_ttl),
    )


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


# Redis Cluster. Every name carries a hash tag ({node id} or {group}), so a
# node's channel and liveness key share one slot, and a group's channel and
# member set share another: each command touches one slot, and nodes and
# groups spread over the masters.

CLUSTER_SCHEME = "redis+cluster"
"""``redis+cluster://host:port,host:port``: the startup nodes of a Redis Cluster."""


@dataclasses.dataclass(frozen=True)
class ClusterLocation:
    """What a ``redis+cluster://`` URL says: the startup nodes and the credentials."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        """The URL without the password, for logs and errors."""
        user = f"{self.username or ''}:***@" if self.password is not None else ""
        return f"{CLUSTER_SCHEME}://{user}" + ",".join(f"{host}:{port}" for host, port in self.nodes)


def parse_cluster_url(url: str) -> ClusterLocation:
    """Return the startup nodes of ``redis+cluster://[user:password@]host:port[,host:port...]``.

    Raises ``ConfigurationError`` naming the problem (the password redacted).
    """
    scheme, sep, rest = url.partition("://")
    if scheme != CLUSTER_SCHEME or not sep:
        raise ConfigurationError(f"a Redis Cluster URL starts with {CLUSTER_SCHEME}://, got {redacted_url(url)!r}")
    netloc = rest.split("/", 1)[0]
    credentials, _, hosts = netloc.rpartition("@")
    username, password = None, None
    if credentials:
        user, has_password, secret = credentials.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if has_password else None)
    nodes = []
    for entry in hosts.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            shown = ClusterLocation((), username, password).url + hosts
            raise ConfigurationError(f"not a Redis Cluster URL: {shown!r}; use {CLUSTER_SCHEME}://host:port,host:port")
        nodes.append((host.strip("[]"), int(port)))
    return ClusterLocation(tuple(nodes), username, password)


def cluster_node_channel(prefix: str, node_id: str) -> str:
    """Return the shard channel node *node_id* listens on in a cluster (hash tag: the node id)."""
    return f"{prefix}node:{{{node_id}}}"


def cluster_alive_key(prefix: str, node_id: str) -> str:
    """Return node *node_id*'s liveness key in a cluster: in the slot of its channel."""
    return f"{prefix}alive:{{{node_id}}}"


def cluster_group_channel(prefix: str, group: str) -> str:
    """Return the shard channel of *group* in a cluster (hash tag: the group name)."""
    return f"{prefix}group:{{{group}}}"


def cluster_members_key(prefix: str, group: str) -> str:
    """Return the member set of *group* in a cluster: in the slot of its channel."""
    return f"{prefix}members:{{{group}}}"
