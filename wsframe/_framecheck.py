"""The frame-header rules aiohttp's reader does not enforce, checked in front of it.

RFC 6455 says a server must fail the connection with 1002 when a client sends
an unmasked frame (section 5.1), sets RSV1 on a control frame (5.2; RFC 7692
defines RSV1 for data frames only) or starts a new message while a fragmented
one is unfinished (5.4). aiohttp's frame reader reads the MASK bit only to
decide whether to unmask, ignores RSV1 on control frames when deflate is on,
and misses an interrupted message whose first fragment was empty.
:class:`FrameCheck` stands in front of it: it sees every byte the connection
receives, walks the frame headers, hands the reader the bytes before a
faulty frame and then fails the connection. The queue gets a
``WebSocketError(1002)``, which aiohttp's ``receive()`` answers with a 1002
close frame, exactly as for the protocol errors aiohttp detects itself.

Cost: the common read (one whole unfragmented frame under 126 bytes: a small
message, a ping, a close) is recognised from its first two bytes by two table
lookups; only other reads walk the headers.
"""

from __future__ import annotations

from typing import Any

from aiohttp import WebSocketError

from . import status

__all__ = ["FrameCheck", "UNMASKED", "RSV1_ON_CONTROL", "INTERRUPTED_MESSAGE"]

UNMASKED = "client frames must be masked"
RSV1_ON_CONTROL = "RSV1 set on a control frame"
INTERRUPTED_MESSAGE = "a new message began before the fragmented one ended"

_FAILED = (True, b"")
"""What a reader's ``feed_data`` returns once the connection failed: eof, no tail."""
_ONE_FRAME_LENGTH = tuple((b & 0x7F) + 6 if b & 0x80 and (b & 0x7F) < 126 else -1 for b in range(256))
"""By a frame's second byte: the length of a read holding just that frame, masked with a 7-bit
length (2 header bytes, 4 of mask, the payload); -1 for any other second byte."""
_PASSES_ALONE = tuple(b & 0x8F in (0x81, 0x82) or b & 0xCF in (0x88, 0x89, 0x8A) for b in range(256))
"""By a frame's first byte: whether the frame is fine outside a fragmented message, whatever
follows: a final text or binary frame (FIN set, opcode 1 or 2), or a close, ping or pong
without RSV1. (aiohttp fails RSV2 and RSV3 itself.)"""


class FrameCheck:
    """A frame reader that checks each frame header, then delegates to aiohttp's reader.

    *reader* is aiohttp's ``WebSocketReader``; *queue* is the message queue it
    feeds, where a failure is reported. ``feed_data``/``feed_eof`` have the
    reader's contract (``feed_data`` returns ``(eof, tail)``), so the HTTP
    protocol cannot tell the two apart. Once failed, it drops what follows.
    """

    __slots__ = ("_fast", "_head", "_in_message", "_queue", "_reader", "_skip", "received")

    def __init__(self, reader: Any, queue: Any) -> None:
        self._reader = reader
        self._queue = queue
        self._skip = 0
        """Bytes of the current frame still to come: 0 at a frame boundary, -1 once failed."""
        self._head = b""
        """The start of a frame header that the last read cut off."""
        self._in_message = False
        """Whether a fragmented message is unfinished."""
        self._fast = True
        """At a frame boundary, nothing carried, no message unfinished: the next read may be one whole frame."""
        self.received = 0
        """Bytes read from the client so far, frame headers included (``Connection.received_bytes``)."""

    def feed_eof(self) -> None:
        self._reader.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        n = len(data)
        self.received += n
        if self._fast:
            # Table lookups: the cheapest test of "one whole small masked frame, fine on its own".
            if n > 5 and _ONE_FRAME_LENGTH[data[1]] == n and _PASSES_ALONE[data[0]]:
                return self._reader.feed_data(data)  # type: ignore[no-any-return]
        elif self._skip >= n:
            # The middle of a long frame's payload.
            self._skip -= n
            return self._reader.feed_data(data)  # type: ignore[no-any-return]
        return self._walk(data)

    def _walk(self, data: bytes) -> tuple[bool, bytes]:
        """Check every frame header in *data*; fail the connection at the first faulty frame."""
        if self._skip < 0:
            return _FAILED
        carried = len(self._head)
        buf = self._head + data if carried else data
        end = len(buf)
        pos = self._skip
        in_message = self._in_message
        while pos < end:
            if end - pos < 2:
                break
            first, second = buf[pos], buf[pos + 1]
            if not second & 0x80:
                return self._fail(data[: max(pos - carried, 0)], UNMASKED)
            length = second & 0x7F
            if length < 126:
                header = 6
            else:
                extra = 2 if length == 126 else 8
                if end - pos < 2 + extra:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 2 + extra], "big")
                header = 6 + extra
            opcode = first & 0x0F
            if opcode >= 8:
                if first & 0x40:
                    return self._fail(data[: max(pos - carried, 0)], RSV1_ON_CONTROL)
            elif opcode:
                if in_message:
                    return self._fail(data[: max(pos - carried, 0)], INTERRUPTED_MESSAGE)
                in_message = not first & 0x80
            elif first & 0x80:
                in_message = False  # the final fragment (aiohttp fails one with no message begun)
            pos += header + length
        self._in_message = in_message
        if pos > end:
            self._skip, self._head = pos - end, b""
        else:
            # pos == end: a boundary; pos < end: a header cut off after its first byte(s).
            self._skip, self._head = 0, buf[pos:]
        self._fast = not (self._skip or self._head or in_message)
        return self._reader.feed_data(data)  # type: ignore[no-any-return]

    def _fail(self, good: bytes, reason: str) -> tuple[bool, bytes]:
        """Hand the reader the frames before the faulty one, then fail the connection with 1002."""
        self._skip, self._fast = -1, False
        if good:
            eof, _ = self._reader.feed_data(good)
            if eof:
                return _FAILED  # the reader failed on an earlier frame: its error stands
        self._queue.set_exception(WebSocketError(status.WS_1002_PROTOCOL_ERROR, reason))
        return _FAILED
