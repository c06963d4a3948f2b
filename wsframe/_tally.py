"""This process's running totals: connections ended, handshakes refused, what ended connections moved.

Counting costs a plain integer increment where it happens. An open
connection keeps its own message and byte counts (slots of
:class:`~wsframe._connection.Connection`); when it ends, :meth:`Tally.finished`
folds them in here. A reader (:func:`wsframe.stats`, the ``/metrics`` endpoint)
adds the open connections' counts to these totals, so nothing is lost or
counted twice, and nothing heavier than ``+= 1`` runs per message.
"""

from __future__ import annotations

from ._connection import SLOW_CONSUMER_REASON, Connection

__all__ = ["Tally", "SLOW_CONSUMER_CODE"]

SLOW_CONSUMER_CODE = 1013
"""The close code of a slow consumer closed for reading too slowly (``slow_consumer='close'``)."""


class Tally:
    """Totals of this process since it started; one lives on each registry (``registry.tally``)."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "closed",
        "messages_dropped",
        "messages_received",
        "messages_sent",
        "refused",
        "slow_closed",
        "slow_dropped",
    )

    def __init__(self) -> None:
        self.closed: dict[int, int] = {}
        """Connections that ended, by close code (1006 when the peer vanished)."""
        self.refused: dict[str, int] = {}
        """Handshakes refused, by reason: origin, auth, permission, rate, limit, timeout, not_found, invalid."""
        self.messages_received = 0
        self.messages_sent = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        """Message and byte counts of connections that have ended."""
        self.slow_closed = 0
        """Connections closed with 1013 for reading too slowly (``slow_consumer='close'``)."""
        self.slow_dropped = 0
        """Ended connections that had messages dropped for reading too slowly (``slow_consumer='drop'``)."""
        self.messages_dropped = 0
        """Messages those ended connections had dropped."""

    def refuse(self, reason: str) -> None:
        """Count one refused handshake with *reason*."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def finished(self, connection: Connection) -> None:
        """Fold an ended *connection*'s counts into the totals (once, when it leaves the registry)."""
        code = connection.close_code or 1006
        self.closed[code] = self.closed.get(code, 0) + 1
        self.messages_received += connection.received_messages
        self.messages_sent += connection.sent_messages
        self.bytes_received += connection.received_bytes
        self.bytes_sent += connection.sent_bytes
        if code == SLOW_CONSUMER_CODE and connection.close_reason == SLOW_CONSUMER_REASON:
            self.slow_closed += 1
        if connection.dropped_messages:
            self.slow_dropped += 1
            self.messages_dropped += connection.dropped_messages
