"""The embedded default backend: one process, nothing shared.

Every live connection is in this process's registry, so an id owned by any
other node can only be stale (a previous run, another server): it is dropped
and logged at debug level, like any unknown id.
"""

from __future__ import annotations

import logging

import msgspec

from ..history import History, Position
from ._history import MemoryHistory
from .base import Backend, Envelope, HistoryRead

__all__ = ["MemoryBackend"]

logger = logging.getLogger("wsframe.backends")


class MemoryBackend(Backend):
    """Process-local backend: no cross-process delivery."""

    name = "memory"
    supports_history = True

    def __init__(self) -> None:
        self.history = MemoryHistory()
        """The history of this process's groups that have one."""

    async def publish_to_node(self, node_id: str, envelope: Envelope) -> None:
        """Drop *envelope*: no other node is reachable from a single process."""
        logger.debug("dropping %s for %s: node %s is not this process", envelope.kind, envelope.connection_id, node_id)

    async def history_publish(self, group: str, envelope: Envelope, rule: History) -> Envelope:
        """Keep the message in this process's history and return it numbered; no other node to hand it to."""
        epoch, offset = self.history.append(group, envelope.payload, rule)
        return msgspec.structs.replace(envelope, epoch=epoch, offset=offset)

    async def history_read(self, group: str, since: Position | None, rule: History) -> HistoryRead:
        """Return *group*'s position and the messages after *since* (see :class:`MemoryHistory`); never raises."""
        return self.history.read(group, since, rule)
