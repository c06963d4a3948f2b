"""Counting open connections per worker and per client address."""

from __future__ import annotations

from . import status

__all__ = ["ConnectionLimiter"]


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
