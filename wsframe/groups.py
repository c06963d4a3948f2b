"""Groups: addressing every connection in a named set, on every worker, and listing them.

A handler joins with ``await self.join_group('room:42')``; anyone sends with
``await send_message_to_group('room:42', data)``. Each send is framed once,
published once to the other nodes that have members (with Redis, a channel
per group that only those nodes subscribe to), then written directly to this
process's members. Delivery is at-most-once, in order per sender.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from aiohttp import web

from . import status
from .registry import get_registry

__all__ = ["send_message_to_group", "close_group", "group_members"]


async def send_message_to_group(
    group: str,
    data: Any,
    *,
    exclude: str | Collection[str] | None = None,
    app: web.Application | None = None,
) -> None:
    """Send *data* to every member of *group*, except the connection ids in *exclude*.

    Encoding is as ``GenericWebsocket.send``. Members that cannot keep up are
    handled by their slow-consumer policy (1013 or drop), never waited for. An
    empty or unknown group is not an error. Raises
    :class:`~wsframe.exceptions.InvalidGroupNameError`, ``TypeError`` for data
    that cannot be encoded, and
    :class:`~wsframe.exceptions.BackendUnavailableError` when other nodes
    cannot be reached. The other nodes are handed the message before this
    process's members are sent it, so a send that raised reached no member
    here. With Redis the error says whether it reached anyone at all: while
    Redis is known to be down nothing went out and a retry reaches each member
    once; when Redis did not answer in time, members elsewhere may have it.
    Cancellation before the publish returns serves no local member.
    """
    await get_registry(app).send_group(group, data, exclude)


async def close_group(
    group: str,
    code: int = status.WS_1000_NORMAL_CLOSURE,
    reason: str = "",
    *,
    app: web.Application | None = None,
) -> None:
    """Close every member of *group* with *code* and *reason*, on every node.

    Returns without waiting for the closing handshakes. Raises ``ValueError``
    for a code that may not be sent, and the errors of
    :func:`send_message_to_group`.
    """
    status.check_close_code(code)
    await get_registry(app).close_group(group, code, reason)


async def group_members(group: str, *, app: web.Application | None = None) -> set[str]:
    """Return the connection ids that are members of *group*, on every node (presence).

    With Redis, members of a worker that died drop out within the backend's
    presence TTL. Raises :class:`~wsframe.exceptions.InvalidGroupNameError`
    and :class:`~wsframe.exceptions.BackendUnavailableError`.
    """
    return await get_registry(app).group_members(group)
