"""Turning what a handler sends into websocket frames.

``str`` becomes a text frame unchanged, ``bytes``-like a binary frame, and
everything else is encoded once with msgspec JSON into a compact text frame.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from aiohttp import WSMsgType

__all__ = ["encode_frame", "json_encoder"]

json_encoder: Final = msgspec.json.Encoder()
"""The shared msgspec JSON encoder (compact output, ``null`` for None)."""

TEXT: Final = WSMsgType.TEXT
BINARY: Final = WSMsgType.BINARY


def encode_frame(data: Any) -> tuple[bytes, WSMsgType]:
    """Return the payload bytes and opcode that *data* is sent as.

    Raises ``TypeError`` (from msgspec) with the offending type named when
    *data* is not JSON-encodable; nothing is sent in that case.
    """
    if isinstance(data, str):
        return data.encode(), TEXT
    if isinstance(data, bytes):
        return data, BINARY
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data), BINARY
    return json_encoder.encode(data), TEXT
