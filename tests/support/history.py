"""What the history tests share: the test apps' join answer and their resume URL."""

from __future__ import annotations

from typing import Any

from wsframe.history import Position
from wsframe.testing import WebsocketTestConnection

__all__ = ["joined_of", "path"]


async def joined_of(ws: WebsocketTestConnection) -> dict[str, Any]:
    """The ``{"joined": ...}`` answer the history test apps send after ``join_group``."""
    answer = await ws.receive_json()
    assert "joined" in answer, answer
    return answer["joined"]  # type: ignore[no-any-return]


def path(group: str, since: Position | None = None) -> str:
    """The test apps' URL for *group*, resuming from *since* when given."""
    return f"/ws/{group}/" if since is None else f"/ws/{group}/?epoch={since[0]}&offset={since[1]}"
