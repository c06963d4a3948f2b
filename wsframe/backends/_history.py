"""Group history in this process (the memory backend's), and the rule of what a history still covers.

:func:`covers` is the rule every store applies: a client at ``(epoch, offset)``
can be caught up when it is this epoch's, not ahead of it, and the message
right after it is still kept (among the last ``size``, younger than ``ttl``).
:class:`MemoryHistory` keeps, per group, an epoch, a counter and the newest
``size`` messages with the time each was added.
"""

from __future__ import annotations

import collections
import secrets
import time
from collections.abc import Callable

from ..history import History, Position
from .base import HistoryRead

__all__ = ["MemoryHistory", "covers", "new_epoch", "POSITION_TTL"]

POSITION_TTL = 86400.0
"""Seconds a group's epoch and counter outlive its last message (or ``ttl``, if longer); an idle group
older than that starts a new epoch, and a client resuming into it gets ``recovered=False``."""


def new_epoch() -> str:
    """Return a fresh random epoch (16 hex characters)."""
    return secrets.token_hex(8)


def covers(since_offset: int, top: int, first_kept: int | None) -> bool:
    """Whether a client of this epoch at *since_offset* can get every message after it.

    *top* is the epoch's last offset, *first_kept* the oldest offset still
    replayable (None when none is). A client ahead of *top* is not of this
    epoch's history at all.
    """
    if since_offset == top:
        return True
    if since_offset > top or since_offset < 0 or first_kept is None:
        return False
    return first_kept <= since_offset + 1


class _Group:
    __slots__ = ("entries", "epoch", "offset", "touched")

    def __init__(self, epoch: str, size: int, now: float) -> None:
        self.epoch = epoch
        self.offset = 0
        self.entries: collections.deque[tuple[int, bytes, float]] = collections.deque(maxlen=size)
        self.touched = now


class MemoryHistory:
    """The history of every group with one, in this process; *clock* is ``time.monotonic`` but in tests.

    A group's position is kept while the process lives and the group had a
    message within ``POSITION_TTL`` (or ``ttl``) seconds; its messages as
    :class:`~wsframe.history.History` says.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._groups: dict[str, _Group] = {}

    def _group(self, group: str, rule: History) -> _Group:
        now = self.clock()
        state = self._groups.get(group)
        if state is None or now - state.touched > max(POSITION_TTL, rule.ttl):
            state = self._groups[group] = _Group(new_epoch(), rule.size, now)
        elif state.entries.maxlen != rule.size:
            state.entries = collections.deque(state.entries, maxlen=rule.size)
        return state

    def append(self, group: str, data: bytes, rule: History) -> Position:
        """Keep *data* as *group*'s next message; return its position."""
        state = self._group(group, rule)
        state.offset += 1
        state.touched = now = self.clock()
        state.entries.append((state.offset, data, now))
        return (state.epoch, state.offset)

    def read(self, group: str, since: Position | None, rule: History) -> HistoryRead:
        """Return *group*'s position and the messages after *since* when all are kept (see :func:`covers`)."""
        state = self._group(group, rule)
        if since is None:
            return HistoryRead(state.epoch, state.offset, True)
        epoch, offset = since
        if epoch != state.epoch:
            return HistoryRead(state.epoch, state.offset, False)
        oldest = self.clock() - rule.ttl
        kept = [(n, data) for n, data, added in state.entries if added >= oldest]
        if not covers(offset, state.offset, kept[0][0] if kept else None):
            return HistoryRead(state.epoch, state.offset, False)
        return HistoryRead(state.epoch, state.offset, True, tuple((n, data) for n, data in kept if n > offset))
