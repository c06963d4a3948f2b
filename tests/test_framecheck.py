"""wsframe._framecheck.FrameCheck in front of aiohttp's real frame reader, fed bytes as a socket would.

The conformance suite (tests/conformance/) checks the same rules over TCP; these
tests cut the bytes at every offset, which TCP cannot be made to do on demand.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import WebSocketError, WSMsgType
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.base_protocol import BaseProtocol

from tests.support.rawclient import Opcode, encode_frame
from wsframe._framecheck import INTERRUPTED_MESSAGE, RSV1_ON_CONTROL, UNMASKED, FrameCheck

MAX = 1 << 20
RSV1 = 0b100

STREAM = [
    encode_frame(Opcode.TEXT, b"short"),
    encode_frame(Opcode.BINARY, b"m" * 300),  # 16-bit length
    encode_frame(Opcode.PING, b"p"),
    encode_frame(Opcode.TEXT, b"l" * 70_000),  # 64-bit length
    encode_frame(Opcode.TEXT, b"frag-", fin=False),
    encode_frame(Opcode.PING, b"between fragments"),
    encode_frame(Opcode.CONTINUATION, b"ment"),
    encode_frame(Opcode.TEXT, b"", fin=False),
    encode_frame(Opcode.CONTINUATION, b"after an empty first fragment"),
    encode_frame(Opcode.TEXT, b"last"),
]
"""Valid frames of every header form; what the reader makes of them is in EXPECTED."""
EXPECTED = [
    (WSMsgType.TEXT, "short"),
    (WSMsgType.BINARY, b"m" * 300),
    (WSMsgType.PING, b"p"),
    (WSMsgType.TEXT, "l" * 70_000),
    (WSMsgType.PING, b"between fragments"),
    (WSMsgType.TEXT, "frag-ment"),
    (WSMsgType.TEXT, "after an empty first fragment"),
    (WSMsgType.TEXT, "last"),
]


def checked_reader() -> tuple[FrameCheck, WebSocketDataQueue]:
    loop = asyncio.get_running_loop()
    queue = WebSocketDataQueue(BaseProtocol(loop), MAX, loop=loop)
    return FrameCheck(WebSocketReader(queue, MAX, compress=False, decode_text=True), queue), queue


async def drain(queue: WebSocketDataQueue) -> list[tuple[WSMsgType, object]]:
    """Every message the reader queued; the error it failed with, if any, last."""
    got: list[tuple[WSMsgType, object]] = []
    while queue._buffer or queue.exception() is not None:
        try:
            msg = await queue.read()
        except WebSocketError as error:
            got.append((WSMsgType.ERROR, (error.code, str(error))))
            break
        got.append((msg.type, msg.data))
    return got


async def feed_in_two(cut: int, data: bytes) -> list[tuple[WSMsgType, object]]:
    check, queue = checked_reader()
    for part in (data[:cut], data[cut:]):
        if part:
            check.feed_data(part)
    return await drain(queue)


async def test_valid_frames_pass_whole() -> None:
    assert await feed_in_two(0, b"".join(STREAM)) == EXPECTED


async def test_valid_frames_pass_cut_at_every_header_offset() -> None:
    data = b"".join(STREAM)
    starts = [sum(len(f) for f in STREAM[:i]) for i in range(len(STREAM))]
    cuts = {start + k for start in starts for k in range(1, 15)}
    for cut in sorted(c for c in cuts if c < len(data)):
        assert await feed_in_two(cut, data) == EXPECTED, f"cut at {cut}"


async def test_valid_frames_pass_one_byte_at_a_time() -> None:
    check, queue = checked_reader()
    data = b"".join(STREAM[:3] + STREAM[4:])  # all but the 70,000-byte frame
    for i in range(len(data)):
        assert check.feed_data(data[i : i + 1]) == (False, b"")
    assert await drain(queue) == EXPECTED[:3] + EXPECTED[4:]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (encode_frame(Opcode.TEXT, b"not masked", mask=False), UNMASKED),
        (encode_frame(Opcode.BINARY, b"u" * 300, mask=False), UNMASKED),
        (encode_frame(Opcode.PING, b"compressed?", rsv=RSV1), RSV1_ON_CONTROL),
        (encode_frame(Opcode.CLOSE, b"\x03\xe8", rsv=RSV1), RSV1_ON_CONTROL),
    ],
    ids=["unmasked", "unmasked-16-bit-length", "rsv1-ping", "rsv1-close"],
)
async def test_a_faulty_frame_fails_with_1002_after_the_frames_before_it(bad: bytes, reason: str) -> None:
    data = encode_frame(Opcode.TEXT, b"one") + encode_frame(Opcode.TEXT, b"two") + bad
    for cut in range(len(data)):
        got = await feed_in_two(cut, data + encode_frame(Opcode.TEXT, b"never read"))
        assert got == [(WSMsgType.TEXT, "one"), (WSMsgType.TEXT, "two"), (WSMsgType.ERROR, (1002, reason))], cut


async def test_a_new_message_after_an_empty_unfinished_fragment_fails_with_1002() -> None:
    data = encode_frame(Opcode.TEXT, b"", fin=False) + encode_frame(Opcode.TEXT, b"interrupting")
    for cut in range(len(data)):
        assert await feed_in_two(cut, data) == [(WSMsgType.ERROR, (1002, INTERRUPTED_MESSAGE))], cut


async def test_the_common_read_of_one_small_frame_goes_straight_to_the_reader() -> None:
    check, queue = checked_reader()
    for i in range(3):
        assert check.feed_data(encode_frame(Opcode.TEXT, f"m{i}".encode())) == (False, b"")
    assert check._fast  # no frame state carried between the reads
    assert await drain(queue) == [(WSMsgType.TEXT, "m0"), (WSMsgType.TEXT, "m1"), (WSMsgType.TEXT, "m2")]


async def test_bytes_after_a_failure_are_dropped() -> None:
    check, queue = checked_reader()
    assert check.feed_data(encode_frame(Opcode.TEXT, b"bad", mask=False)) == (True, b"")
    assert check.feed_data(encode_frame(Opcode.TEXT, b"later")) == (True, b"")
    assert await drain(queue) == [(WSMsgType.ERROR, (1002, UNMASKED))]
