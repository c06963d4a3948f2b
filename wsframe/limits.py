"""Limits as pure decisions: connections per worker and address, message rate, outbound buffer.

Nothing here awaits or touches a socket: each class is given the numbers (a
count, a clock reading, a buffer size) and answers, so each is tested without
a server. The driver (``wsframe._session``) and the connection
(``wsframe._connection``) act on the answers.
"""

from __future__ import annotations

from typing import Literal

from . import status

__all__ = ["ConnectionLimiter", "TokenBucket", "OutboundPolicy", "Outcome"]

Outcome = Literal["write", "drop", "close"]
"""What :meth:`OutboundPolicy.decide` answers for one frame."""


class ConnectionLimiter:
    """Admits handshakes while under *max_connections* in total and *max_per_ip* per address.

    A handshake counts from the moment it is admitted until its connection
    ends, so slow handshakes cannot be used to get past the limit.
    """

    __slots__ = ("active", "by_ip", "max_connections", "max_per_ip", "open")

    def __init__(self, max_connections: int | None, max_per_ip: int | None) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.active = max_connections is not None or max_per_ip is not None
        """Whether there is a limit at all; without one, handshakes need not be counted."""
        self.open = 0
        self.by_ip: dict[str, int] = {}

    def admit(self, address: str) -> int | None:
        """Count a new connection from *address*; return the HTTP status refusing it, or None."""
        if self.max_connections is not None and self.open >= self.max_connections:
            return status.HTTP_503_SERVICE_UNAVAILABLE
        if self.max_per_ip is not None:
            count = self.by_ip.get(address, 0)
            if count >= self.max_per_ip:
                return status.HTTP_429_TOO_MANY_REQUESTS
            self.by_ip[address] = count + 1
        self.open += 1
        return None

    def release(self, address: str) -> None:
        """Uncount a connection admitted from *address*."""
        self.open -= 1
        if self.max_per_ip is not None:
            count = self.by_ip.get(address, 0) - 1
            if count > 0:
                self.by_ip[address] = count
            else:
                self.by_ip.pop(address, None)


class TokenBucket:
    """A connection's message allowance: *rate* messages per second, in bursts of up to ``max(1, rate)``.

    The bucket starts full. Times are seconds from any monotonic clock (the
    event loop's), passed in so that tests can use any numbers.
    """

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.burst = self.tokens = max(1.0, rate)
        self.last = now

    def take(self, now: float) -> bool:
        """Spend one message's token at time *now*; return False (nothing spent) when none is left."""
        tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class OutboundPolicy:
    """What becomes of a frame for a client that reads slower than we send.

    Up to *limit* bytes may wait in the connection's send buffer; past it the
    frame is dropped (``slow_consumer='drop'``) or the connection is closed
    with 1013 (``'close'``). One instance serves every connection of a handler.
    """

    __slots__ = ("drops", "limit")

    def __init__(self, limit: int, slow_consumer: Literal["close", "drop"]) -> None:
        self.limit = limit
        self.drops = slow_consumer == "drop"

    def decide(self, buffered: int) -> Outcome:
        """Return what to do with one more frame when *buffered* bytes are already waiting."""
        if buffered <= self.limit:
            return "write"
        return "drop" if self.drops else "close"
