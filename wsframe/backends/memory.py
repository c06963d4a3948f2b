"""The embedded default backend: one process, nothing shared.

Every live connection is in this process's registry, so an id owned by any
other node can only be stale (a previous run, another server): it is dropped
and logged at debug level, like any unknown id.
"""

from __future__ import annotations

import logging

from .base import Backend, Envelope

__all__ = ["MemoryBackend"]

logger = logging.getLogger("wsframe.backends")


class MemoryBackend(Backend):
    """Process-local backend: no cross-process delivery."""

    name = "memory"

    async def publish_to_node(self, node_id: str, envelope: Envelope) -> None:
        """Drop *envelope*: no other node is reachable from a single process."""
        logger.debug("dropping %s for %s: node %s is not this process", envelope.kind, envelope.connection_id, node_id)
