"""A cached stream to another IPC node, matching its answers to the frames sent, in order."""

from __future__ import annotations

import asyncio
import collections
import logging

from ._wire import AckReader, Answer

__all__ = ["Peer"]

logger = logging.getLogger("wsframe.backends.ipc")


class Peer:
    """A stream to node *node_id*, with the futures of unacknowledged frames in order.

    Its reading task ends when the stream closes or breaks, or the peer says
    something out of protocol; every frame still unanswered then gets None.
    """

    def __init__(self, node_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.node_id = node_id
        self.reader = reader
        self.writer = writer
        self.pending: collections.deque[asyncio.Future[Answer]] = collections.deque()
        self.closed = False
        self.hello: asyncio.Future[Answer] | None = None
        self.task = asyncio.create_task(self._read_acks(), name=f"wsframe ipc acks {node_id}")

    def request(self, frame: bytes) -> asyncio.Future[Answer]:
        """Write *frame*; the returned future gets the peer's answer to it (None if the stream is closed)."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_result(None)
            return future
        self.pending.append(future)
        self.writer.write(frame)
        return future

    async def _read_acks(self) -> None:
        acks = AckReader()
        try:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                for answer in acks.feed(chunk):
                    if not self._resolve(answer):
                        return
                if acks.too_large is not None:
                    logger.warning("node %s announced a %d-byte answer; closing", self.node_id, acks.too_large)
                    return
        except OSError as exc:
            logger.debug("stream to node %s broke: %s", self.node_id, exc)
        finally:
            self.close()

    def _resolve(self, answer: Answer) -> bool:
        """Hand *answer* to the oldest unanswered frame; False (after a warning) when there is none."""
        if not self.pending:
            logger.warning("node %s sent an acknowledgement for nothing; closing", self.node_id)
            return False
        future = self.pending.popleft()
        if not future.done():
            future.set_result(answer)
        return True

    def close(self) -> None:
        """Close the stream; every frame not yet answered gets None (at-most-once)."""
        if self.closed:
            return
        self.closed = True
        # Whatever was not acknowledged went down with the node: at-most-once.
        for future in self.pending:
            if not future.done():
                future.set_result(None)
        self.pending.clear()
        self.writer.close()
