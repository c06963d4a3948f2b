"""Deadlines of one length for many tasks, on one timer: what the handshake timeout of every connection uses.

Every entry has the same timeout, so arrival order is deadline order: a
deque keeps them sorted, and one ``call_at`` for the earliest stands for all
of them. An entry that is settled in time only leaves :attr:`Deadlines.pending`
(a dict keyed by the owner's ``id()``, so nothing keeps a settled owner
alive); its deque entry is skipped when its deadline comes.

Measured under callgrind on asyncio's event loop, a ``call_later`` and its
``cancel()`` per connection cost 24,000 instructions of an open and close
(3.3 %): the timer heap keeps every cancelled handle until its time and is
rebuilt when they pile up. This costs a dict insert, a dict pop and a deque
append.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

__all__ = ["Deadlines"]


class Deadlines:
    """Calls *expired(value)* for every entry not settled within *timeout* seconds of :meth:`add`."""

    __slots__ = ("expired", "loop", "pending", "queue", "timeout", "timer")

    def __init__(self, timeout: float, expired: Callable[[Any], object]) -> None:
        self.timeout = timeout
        self.expired = expired
        self.pending: dict[int, tuple[Any, float]] = {}
        """id(owner) -> (value, deadline), for the entries not settled yet."""
        self.queue: collections.deque[tuple[float, int]] = collections.deque()
        """(deadline, id(owner)) in deadline order, settled ones included until their turn."""
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, owner: object, value: Any) -> None:
        """Start *owner*'s deadline; *value* goes to ``expired`` when it passes. Needs a running event loop."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # the first use, or the app serves again on a new loop
            self.loop, self.timer = loop, None
            self.queue.clear()
            self.pending.clear()
        deadline = loop.time() + self.timeout
        key = id(owner)
        self.pending[key] = (value, deadline)
        self.queue.append((deadline, key))
        if self.timer is None:
            self.timer = loop.call_at(deadline, self._expire)

    def settle(self, owner: object) -> None:
        """End *owner*'s deadline (nothing happens when it has none)."""
        self.pending.pop(id(owner), None)

    def _expire(self) -> None:
        self.timer = None
        loop, queue, pending = self.loop, self.queue, self.pending
        assert loop is not None
        now = loop.time()
        while queue and queue[0][0] <= now:
            deadline, key = queue.popleft()
            entry = pending.get(key)
            if entry is None or entry[1] != deadline:
                continue  # settled in time, or gone and its id reused by a later owner
            del pending[key]
            self.expired(entry[0])
        if queue:
            self.timer = loop.call_at(queue[0][0], self._expire)
