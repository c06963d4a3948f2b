"""The single-Redis backend's history calls: one Lua script to keep and publish, one to read.

A mixin of :class:`~wsframe.backends.redis.RedisBackend`, which owns the
connections and the outage bookkeeping it uses; the scripts and their
arguments are in :mod:`._history`, shared with the ``Publisher``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import msgspec
from redis.exceptions import NoScriptError

from ...exceptions import BackendUnavailableError
from ...history import History, Position
from ..base import Envelope, HistoryRead
from . import _history
from ._keys import describe_error, group_channel
from ._listener import UNREACHABLE, RedisBackendStats
from ._outbox import Outbox
from ._presence import GroupLosses

__all__ = ["RedisHistory"]


class RedisHistory:
    """History on one Redis: the group's stream, position and channel in one script call."""

    url: str
    prefix: str
    operation_timeout: float
    stats: RedisBackendStats
    _losses: GroupLosses

    def _available(self, what: str) -> Outbox:
        raise NotImplementedError  # the backend's

    async def _call(self, what: str, operation: Awaitable[Any]) -> Any:
        raise NotImplementedError  # the backend's

    async def _script(self, outbox: Outbox, script: _history.Script, arguments: list[Any]) -> Any:
        """Run *script* by its SHA, sending its text once when Redis does not have it (a restarted Redis)."""
        try:
            return await outbox.command("EVALSHA", script.sha, *arguments)
        except NoScriptError:  # EVALSHA ran nothing: sending the text cannot run it twice
            return await outbox.command("EVAL", script.text, *arguments)

    async def history_publish(self, group: str, envelope: Envelope, rule: History) -> Envelope:
        """Number the message, keep it in the group's stream and PUBLISH it, in one Lua script.

        Raises :class:`~wsframe.exceptions.BackendUnavailableError` as
        :meth:`publish_to_group`: at once while Redis is known to be down
        (nothing was kept or sent), within ``operation_timeout`` when it does
        not answer (then it may be in history and published: members that
        missed it get it by the gap fill).
        """
        what = f"{envelope.kind} to group {group!r}"
        outbox = self._available(f"the {what} was not kept or sent to any member")
        numbered = msgspec.structs.replace(envelope, seq=self._losses.next_number(group))
        arguments = _history.publish_arguments(self.prefix, group, group_channel(self.prefix, group), numbered, rule)
        try:
            async with asyncio.timeout(self.operation_timeout):
                reply = await self._script(outbox, _history.PUBLISH, arguments)
        except UNREACHABLE as exc:
            self.stats.publish_failures += 1
            raise BackendUnavailableError(
                f"Redis at {self.url} did not take the {what} ({describe_error(exc)}); it was probably not sent, "
                "but may have been kept and sent if Redis was only slow."
            ) from exc
        epoch, offset, _ = _history.parse_publish(reply, f"Redis at {self.url}")
        self.stats.published += 1
        return msgspec.structs.replace(numbered, epoch=epoch, offset=offset)

    async def history_read(self, group: str, since: Position | None, rule: History) -> HistoryRead:
        """Return the group's position and, when its stream still covers *since*, the messages after it.

        One Lua script (XRANGE on the stream), so the position and the
        messages are read together. Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` when Redis is
        down or does not answer within ``operation_timeout``.
        """
        what = f"history read of {group!r}"
        outbox = self._available(f"{what} failed")
        arguments = _history.read_arguments(self.prefix, group, since, rule)
        reply = await self._call(what, self._script(outbox, _history.READ, arguments))
        return _history.parse_read(reply, since, f"Redis at {self.url}")
