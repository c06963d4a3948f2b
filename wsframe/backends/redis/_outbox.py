"""The batched PUBLISH outbox of the Redis backend."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["Outbox"]


class Outbox:
    """The PUBLISHes of this process, written to Redis in batches over one connection.

    A send joins the batch being gathered while the previous one is on the
    wire; when nothing is in flight it goes at once, alone. So at a low rate
    each PUBLISH costs what a plain ``client.publish()`` does, and under load
    one write and one read carry many of them. It also means sends never
    compete for pooled connections: redis-py's pool raises
    ``MaxConnectionsError`` past 100 publishes in flight instead of queueing
    them. Envelopes leave in the order they were handed in.
    """

    def __init__(self, client: aioredis.Redis, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        self._pending: list[tuple[str, bytes, asyncio.Future[int]]] = []
        self._in_flight: list[tuple[str, bytes, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def publish(self, channel: str, data: bytes) -> int:
        """PUBLISH *data* on *channel*; return how many subscribers got it, or raise what Redis raised.

        A send cancelled (or timed out) before its batch went out is not sent.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((channel, data, future))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return await future

    def close(self) -> None:
        """Fail every send still waiting (shutdown)."""
        if self._flusher is not None:
            self._flusher.cancel()
        for _, _, future in [*self._in_flight, *self._pending]:
            if not future.done():
                future.set_exception(RedisConnectionError("the Redis backend is shutting down"))
        self._pending = []

    async def _flush(self) -> None:
        try:
            while self._pending:
                # Sends whose caller gave up while they waited are dropped here, unsent.
                batch = self._in_flight = [entry for entry in self._pending if not entry[2].done()]
                self._pending = []
                if not batch:
                    continue
                try:
                    async with asyncio.timeout(self._timeout):
                        if len(batch) == 1:
                            channel, data, _ = batch[0]
                            results = [await self._client.publish(channel, data)]
                        else:
                            pipe = self._client.pipeline(transaction=False)
                            for channel, data, _ in batch:
                                pipe.publish(channel, data)
                            results = await pipe.execute()
                except Exception as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), receivers in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(receivers)
        finally:
            self._flusher = None
            self._in_flight = []
