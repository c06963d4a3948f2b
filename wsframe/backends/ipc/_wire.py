"""The IPC wire format, sans I/O: frames one way, acknowledgements the other.

A sender writes frames: a 4-byte big-endian header holding the body's length,
its top bit set when the body is a :class:`Control` for the backend rather
than an envelope, then the body. The receiver answers every frame, in order,
with one byte (``ACK_OK`` taken, ``ACK_BAD`` refused) or, for a control frame
that asks something, ``ACK_REPLY`` followed by a header and the answer.
:class:`AckReader` turns the bytes of that answer stream, as they arrive in
chunks of any size, into answers.
"""

from __future__ import annotations

import struct
from typing import Literal

import msgspec

__all__ = [
    "HEADER",
    "MAX_FRAME",
    "ACK_OK",
    "ACK_BAD",
    "Answer",
    "AckReader",
    "Control",
    "FrameTooLarge",
    "envelope_frame",
    "control_frame",
    "reply_frame",
    "read_header",
    "decode_control",
    "decode_members",
]

HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 30
_CONTROL = 1 << 31
"""Set in a frame header: the body is a :class:`Control` for the backend itself, not an envelope."""
_ACK_OK = 1
_ACK_BAD = 0
_ACK_REPLY = 2
"""An acknowledgement carrying an answer: followed by a header and that many bytes."""
ACK_OK = bytes((_ACK_OK,))
"""The answer to a frame that was taken."""
ACK_BAD = bytes((_ACK_BAD,))
"""The answer to a frame that did not decode, or was refused."""

Answer = bool | bytes | None
"""What a peer made of a frame: taken (True), refused (False), an answer (bytes), or the stream broke (None)."""


class FrameTooLarge(ValueError):
    """A header announced more than :data:`MAX_FRAME` bytes: the stream is not speaking this protocol."""

    def __init__(self, size: int) -> None:
        super().__init__(f"a {size}-byte frame is over the {MAX_FRAME}-byte limit")
        self.size = size


class Control(msgspec.Struct, array_like=True, frozen=True):
    """A request to the backend of another node: ``hello`` (I am ``node_id``) or ``members`` of ``group``."""

    kind: Literal["hello", "members"]
    node_id: str = ""
    group: str = ""


_control_encoder = msgspec.msgpack.Encoder()
_control_decoder = msgspec.msgpack.Decoder(Control)
_members_decoder = msgspec.msgpack.Decoder(list[str])


def envelope_frame(data: bytes) -> bytes:
    """Return the frame carrying the encoded envelope *data*."""
    return HEADER.pack(len(data)) + data


def control_frame(control: Control) -> bytes:
    """Return the frame carrying *control*."""
    body = _control_encoder.encode(control)
    return HEADER.pack(len(body) | _CONTROL) + body


def reply_frame(members: list[str]) -> bytes:
    """Return the acknowledgement that answers a ``members`` query with *members*."""
    body = _control_encoder.encode(members)
    return bytes((_ACK_REPLY,)) + HEADER.pack(len(body)) + body


def read_header(header: bytes) -> tuple[int, bool]:
    """Return the body size a frame *header* announces and whether the body is a control.

    Raises :class:`FrameTooLarge` past :data:`MAX_FRAME`.
    """
    (raw,) = HEADER.unpack(header)
    size = raw & ~_CONTROL
    if size > MAX_FRAME:
        raise FrameTooLarge(size)
    return size, bool(raw & _CONTROL)


def decode_control(body: bytes) -> Control:
    """Return the control in a frame *body*; raises ``msgspec.DecodeError`` (or ``TypeError``) on garbage."""
    return _control_decoder.decode(body)


def decode_members(answer: bytes) -> list[str]:
    """Return the ids a ``members`` answer holds; raises ``msgspec.DecodeError`` on garbage."""
    return _members_decoder.decode(answer)


class AckReader:
    """Parses the answer stream of one peer: :meth:`feed` it bytes, get the answers they complete.

    An answer split across chunks is kept until its last byte arrives. Once a
    header announces more than :data:`MAX_FRAME` bytes, :attr:`too_large`
    holds that size and nothing more is parsed: the stream must be closed.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.too_large: int | None = None

    def feed(self, chunk: bytes) -> list[Answer]:
        """Return the answers *chunk* completes, oldest first (none after :attr:`too_large` is set)."""
        if self.too_large is not None:
            return []
        buffer = self._buffer
        if not buffer and _ACK_REPLY not in chunk:
            # The common case, kept cheap: nothing but one-byte acknowledgements.
            return [ack == _ACK_OK for ack in chunk]
        buffer += chunk
        answers: list[Answer] = []
        offset = 0
        while offset < len(buffer):
            if buffer[offset] == _ACK_REPLY:
                if len(buffer) - offset <= HEADER.size:
                    break
                (size,) = HEADER.unpack_from(buffer, offset + 1)
                if size > MAX_FRAME:
                    self.too_large = size
                    break
                end = offset + 1 + HEADER.size + size
                if len(buffer) < end:
                    break
                answers.append(bytes(buffer[offset + 1 + HEADER.size : end]))
                offset = end
            else:
                answers.append(buffer[offset] == _ACK_OK)
                offset += 1
        del buffer[:offset]
        return answers
