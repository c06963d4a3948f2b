"""The command path of the Redis backend: its clients, and every command of a process pipelined over one connection."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["Outbox", "make_clients", "MAX_CONNECTIONS"]

MAX_CONNECTIONS = 2
"""Redis connections one process opens for commands: the outbox pipelines every command over one
at a time; the second serves shutdown while a batch hangs. Plus the listener's: three in all."""


def make_clients(url: str, user_client: aioredis.Redis | None, timeout: float) -> tuple[aioredis.Redis, aioredis.Redis]:
    """Return the command client and the listener's client, for *url* or on *user_client*'s settings.

    Neither retries by itself: the listener's supervisor owns reconnection, so
    every outage is seen, logged and counted once, and a PUBLISH whose reply
    was lost after Redis ran it must not go out twice. Connections left stale
    by an outage are dropped when the listener is back instead.
    """
    timeouts: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if user_client is not None:
        pool = user_client.connection_pool
        listener_kwargs = {**pool.connection_kwargs, **timeouts, "retry": Retry(NoBackoff(), 0)}
        listener_pool = aioredis.ConnectionPool(connection_class=pool.connection_class, **listener_kwargs)
        return user_client, aioredis.Redis(connection_pool=listener_pool)
    # A blocking pool of MAX_CONNECTIONS: the outbox holds one at a time, and
    # anything else waits up to *timeout* for a free one rather than opening more.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=timeout, retry=Retry(NoBackoff(), 0), **timeouts
    )
    client = aioredis.Redis(connection_pool=pool)  # closing it with close_connection_pool=True closes the pool
    listener = aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **timeouts)
    return client, listener


_Entry = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


class Outbox:
    """The commands of this process (PUBLISH, SADD, presence refreshes...), written to Redis in batches.

    A command joins the batch being gathered while the previous one is on the
    wire; when nothing is in flight it goes at once, alone. So at a low rate
    each command costs what a plain ``client.execute_command()`` does, and
    under load one write and one read carry many of them. Only one batch is
    in flight at a time, so the backend uses one command connection however
    many clients join at once (a storm of joins queues here, it does not open
    connections). Commands leave in the order they were handed in.
    """

    def __init__(self, client: aioredis.Redis, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        self._pending: list[_Entry] = []
        self._in_flight: list[_Entry] = []
        self._flusher: asyncio.Task[None] | None = None

    async def publish(self, channel: str, data: bytes) -> int:
        """PUBLISH *data* on *channel*; return how many subscribers got it, or raise what Redis raised.

        A send cancelled (or timed out) before its batch went out is not sent.
        """
        receivers: int = await self.command("PUBLISH", channel, data)
        return receivers

    async def command(self, *args: Any) -> Any:
        """Run one Redis command (``"SADD", key, member``); return its reply, or raise what Redis raised.

        A command cancelled (or timed out) before its batch went out is not sent.
        """
        return await self._enqueue([args])[0]

    async def commands(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run *commands* in order, in one batch when nothing else is queued; return their replies.

        Raises the first error of any of them (the others ran or not, each on its own).
        """
        results = await asyncio.gather(*self._enqueue(commands), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    def _enqueue(self, commands: list[tuple[Any, ...]]) -> list[asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []
        for args in commands:
            future: asyncio.Future[Any] = loop.create_future()
            self._pending.append((args, future))
            futures.append(future)
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return futures

    def close(self) -> None:
        """Fail every command still waiting (shutdown)."""
        if self._flusher is not None:
            self._flusher.cancel()
        for _, future in [*self._in_flight, *self._pending]:
            if not future.done():
                future.set_exception(RedisConnectionError("the Redis backend is shutting down"))
        self._pending = []

    async def _flush(self) -> None:
        try:
            while self._pending:
                # Commands whose caller gave up while they waited are dropped here, unsent.
                batch = self._in_flight = [entry for entry in self._pending if not entry[1].done()]
                self._pending = []
                if not batch:
                    continue
                try:
                    async with asyncio.timeout(self._timeout):
                        if len(batch) == 1:
                            results = [await self._client.execute_command(*batch[0][0])]  # type: ignore[no-untyped-call]
                        else:
                            pipe = self._client.pipeline(transaction=False)
                            for args, _ in batch:
                                pipe.execute_command(*args)
                            results = await pipe.execute(raise_on_error=False)
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._flusher = None
            self._in_flight = []
