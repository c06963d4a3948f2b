"""Turning what a handler sends into websocket frames.

``str`` becomes a text frame unchanged, ``bytes``-like a binary frame, and
everything else is encoded once with msgspec JSON into a compact text frame.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgspec
from aiohttp import WSMsgType

__all__ = ["encode_frame", "json_encoder", "build_frame", "build_close_frame"]

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


_HEADER_16: Final = struct.Struct("!BBH").pack
_HEADER_64: Final = struct.Struct("!BBQ").pack
_CLOSE_CODE: Final = struct.Struct("!H").pack


def build_frame(payload: bytes, opcode: int) -> bytes:
    """Return a complete, unmasked, uncompressed server frame (FIN set) carrying *payload*.

    Built once, the same bytes can be written to any number of connections:
    that is how a group send frames a message once instead of once per member.
    """
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return _HEADER_16(first, 126, length) + payload
    return _HEADER_64(first, 127, length) + payload


def build_close_frame(code: int, reason: bytes) -> bytes:
    """Return a close frame with *code* and *reason* (already cut to 123 bytes)."""
    return build_frame(_CLOSE_CODE(code) + reason, 0x8)
