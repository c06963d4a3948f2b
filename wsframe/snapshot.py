"""``wsframe.stats(app)``: a typed snapshot of this worker's connections, traffic, refusals and backend.

The same figures the ``/metrics`` endpoint exports (see docs/deployment.md),
for code inside the app: a health view, a log line, a test. They cover this
process only; under gunicorn each worker has its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from .registry import Registry, get_registry

__all__ = ["WorkerStats", "stats", "snapshot_of", "backend_counters"]


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerStats:
    """This process's figures at one moment. Counts run from the app's start; none is ever reset."""

    node_id: str
    """This process's node id (the first 8 characters of its connection ids)."""
    backend: str
    """The backend's name: ``memory``, ``ipc`` or ``redis``."""
    connections: int
    """Connections open now."""
    connections_by_route: dict[str, int]
    """Connections open now, by the path their class is mounted at (``/ws/<room>/``)."""
    opened: int
    """Connections accepted (the handshake completed)."""
    closed: dict[int, int]
    """Connections that ended, by close code (1006: the peer vanished without a close frame)."""
    refused: dict[str, int]
    """Handshakes refused, by reason: origin, auth, permission, rate, limit, timeout, not_found, invalid."""
    messages_received: int
    """Data messages received from clients."""
    messages_sent: int
    """Data messages written to clients (a group send counts once per member reached here)."""
    bytes_received: int
    """Bytes of the frames read from clients, headers included (compressed size on compressed connections)."""
    bytes_sent: int
    """Bytes of the frames written, headers and pongs included (payload size on compressed connections)."""
    slow_consumers_closed: int
    """Connections closed with 1013 because their client read too slowly (``slow_consumer='close'``)."""
    slow_consumers_dropping: int
    """Connections that had messages dropped because their client read too slowly (``slow_consumer='drop'``)."""
    messages_dropped: int
    """Messages those connections had dropped."""
    group_members: int
    """Group memberships held by this process's open connections (a connection in two groups counts twice)."""
    backend_counters: dict[str, float]
    """The backend's own counters by name (``outages``, ``publish_failures``, ``unrouted``,
    ``possibly_lost``, ...: see the backend's ``stats`` class); empty for the memory backend."""
    history_counters: dict[str, float]
    """What delivery to history groups counted here (``gaps_filled``, ``messages_filled``,
    ``unrecovered``, ``members_told``, ``duplicates``, ``unnumbered``): see docs/history.md."""


def backend_counters(backend_stats: Any) -> dict[str, float]:
    """The numeric fields and properties of a backend's ``stats`` object, by name; ``{}`` for None.

    Read by name rather than a fixed list, so a counter a backend adds shows
    up without a change here.
    """
    if backend_stats is None:
        return {}
    counters: dict[str, float] = {}
    if dataclasses.is_dataclass(backend_stats):
        for field in dataclasses.fields(backend_stats):
            value = getattr(backend_stats, field.name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                counters[field.name] = value
    for name, attribute in vars(type(backend_stats)).items():
        if isinstance(attribute, property) and not name.startswith("_"):
            value = getattr(backend_stats, name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                counters[name] = value
    return counters


def snapshot_of(registry: Registry) -> WorkerStats:
    """The figures of *registry*'s process now (what :func:`stats` returns for its app)."""
    tally = registry.tally
    received = tally.messages_received
    sent = tally.messages_sent
    bytes_received = tally.bytes_received
    bytes_sent = tally.bytes_sent
    dropping = tally.slow_dropped
    dropped = tally.messages_dropped
    by_route: dict[str, int] = {}
    for connection in registry.connections.values():
        received += connection.received_messages
        sent += connection.sent_messages
        bytes_received += connection.received_bytes
        bytes_sent += connection.sent_bytes
        if connection.dropped_messages:
            dropping += 1
            dropped += connection.dropped_messages
        route = connection.config.route
        by_route[route] = by_route.get(route, 0) + 1
    open_now = len(registry.connections)
    return WorkerStats(
        node_id=registry.node_id,
        backend=registry.backend.name,
        connections=open_now,
        connections_by_route=by_route,
        opened=sum(tally.closed.values()) + open_now,
        closed=dict(tally.closed),
        refused=dict(tally.refused),
        messages_received=received,
        messages_sent=sent,
        bytes_received=bytes_received,
        bytes_sent=bytes_sent,
        slow_consumers_closed=tally.slow_closed,
        slow_consumers_dropping=dropping,
        messages_dropped=dropped,
        group_members=sum(len(members) for members in registry.groups.values()),
        backend_counters=backend_counters(getattr(registry.backend, "stats", None)),
        history_counters=backend_counters(registry.history_stats),
    )


def stats(app: web.Application | None = None) -> WorkerStats:
    """Return a snapshot of this worker's figures for *app* (the running app when None).

    Cheap: it reads counters kept in memory (one pass over the open
    connections) and never queries the backend. Raises
    :class:`~wsframe.exceptions.ApplicationNotFoundError` when *app* is None
    and no app, or more than one, is running in this process, or when *app*
    was not made by :func:`wsframe.create_app`.
    """
    return snapshot_of(get_registry(app))
