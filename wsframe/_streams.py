"""Delivery to this process's members of groups with history: in order, no gap, no duplicate.

Each history group with members here has a :class:`GroupStream` holding the
position delivered so far. A message is written to the members when it is
the next offset; an older one is a duplicate and dropped; a later one means
messages went missing on the way (the Redis listener reconnected, a reply was
lost), so the stream reads them from history and delivers them first. When
history cannot fill the gap (it no longer covers it, the epoch changed,
the store is down), each member gets the "not recovered" frame of
:mod:`wsframe.history` before delivery goes on: never a silent skip.

A join with ``since`` is serialised with delivery: while the new member is
caught up from history, live messages wait in the stream's queue, and the
member's *floor* (the offset it was caught up to) keeps it from getting any
of them twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from aiohttp import WSMsgType

from ._connection import Connection
from .backends.base import Backend, Envelope, HistoryRead
from .codec import build_frame
from .exceptions import BackendUnavailableError, ConnectionClosed
from .history import History, Joined, Position, history_frame, not_recovered_frame

__all__ = ["GroupStream", "HistoryStats"]

logger = logging.getLogger("wsframe.history")

_TEXT = WSMsgType.TEXT


@dataclasses.dataclass
class HistoryStats:
    """What this process's history groups counted (``registry.history_stats``)."""

    gaps_filled: int = 0
    """Gaps in a group's offsets found on a live connection and filled from history."""
    messages_filled: int = 0
    """Messages delivered from history to fill those gaps."""
    unrecovered: int = 0
    """Gaps history could not fill: each member of the group here got the "not recovered" frame."""
    members_told: int = 0
    """"Not recovered" frames sent (one per member per unfilled gap)."""
    duplicates: int = 0
    """Messages dropped because this process had delivered their offset already (or their epoch is over)."""
    unnumbered: int = 0
    """Sends to a history group that arrived without a position (a sender not configured with the app's
    ``history=``): dropped, since members could not resume past them."""


_Buffered = tuple[str, int, bytes, bool]
"""(epoch, offset, payload, is the "not recovered" signal) kept for a member whose join is reading."""


_CHECK = Envelope("group_send", "")
"""The queue item that asks for a read of what came after the position (see :meth:`GroupStream.check`)."""


@dataclasses.dataclass
class _Join:
    connection: Connection
    since: Position | None
    add: Callable[[], Coroutine[Any, Any, bool]]
    forget: Callable[[], object]
    done: asyncio.Future[Joined]


class GroupStream:
    """The delivery of one history group to its members in this process.

    *members* returns the group's local members now; *spawn* runs a coroutine
    in a task the registry keeps; *release* is called when the stream has no
    member and nothing to do (the registry then forgets it).
    """

    def __init__(
        self,
        group: str,
        rule: History,
        backend: Backend,
        members: Callable[[], dict[str, Connection] | None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        stats: HistoryStats,
        release: Callable[[GroupStream], None],
    ) -> None:
        self.group = group
        self.release = release
        """Called when a drain ends with no member here left: the registry forgets the stream."""
        self.rule = rule
        self.backend = backend
        self.members = members
        self.spawn = spawn
        self.stats = stats
        self.epoch: str | None = None
        self.offset = 0
        """The last offset delivered to the members here."""
        self.busy = False
        """A delivery, fill or join is under way: what arrives meanwhile waits in the queue."""
        self.queue: list[Envelope | _Join] = []
        """Envelopes, joins, and ``_CHECK`` (read history for what may have been missed), in order."""
        self.floors: dict[str, int] = {}
        """Members caught up past ``offset`` by their join -> the offset they have."""
        self.pending: dict[str, list[_Buffered]] = {}
        """Members whose join is reading history -> what was delivered meanwhile, written after the replay."""
        self._retired: set[str] = set()

    @property
    def idle(self) -> bool:
        """Nothing under way or waiting."""
        return not self.busy and not self.queue and not self.pending

    # ------------------------------------------------------------ live messages

    async def offer(self, envelope: Envelope) -> None:
        """Deliver *envelope* now when it is the next one, else hand it to a drain task; never waits on I/O."""
        if self.busy:
            self.queue.append(envelope)
            return
        self.busy = True
        handed_off = False
        try:
            if envelope.epoch == self.epoch and envelope.offset <= self.offset + 1:
                await self._deliver_next(envelope)
            else:
                self.queue.insert(0, envelope)
            if self.queue:
                self.spawn(self._drain())
                handed_off = True
        finally:
            if not handed_off:
                self.busy = False

    async def _drain(self) -> None:
        try:
            while self.queue:
                item = self.queue.pop(0)
                if isinstance(item, _Join):
                    await self._join(item)
                    continue
                try:
                    if item is _CHECK:
                        await self._check()
                    else:
                        await self._process(item)
                except Exception:  # a bug of ours: the rest of the queue must still be served
                    logger.exception("group %r: delivering offset %d failed", self.group, item.offset)
        finally:
            self.busy = False
            for item in self.queue:  # cancelled (shutdown): nobody will serve these joins
                if isinstance(item, _Join) and not item.done.done():
                    item.done.cancel()
            if not self.members():
                self.release(self)

    async def _process(self, envelope: Envelope) -> None:
        epoch = envelope.epoch
        if epoch in self._retired:
            self.stats.duplicates += 1
            return
        if self.epoch is None:  # pragma: no cover - a stream is made by a join, which sets the position
            self.epoch, self.offset = epoch, envelope.offset - 1
        if epoch != self.epoch:
            # The store lost the group's history (a Redis restarted empty): what was sent
            # between our last message and this epoch's first cannot be found anywhere.
            self._retired.add(self.epoch)
            self.epoch, self.offset = epoch, envelope.offset - 1
            self.floors.clear()
            await self._unrecovered(f"its epoch changed to {epoch}")
            await self._deliver_next(envelope)
            return
        if envelope.offset > self.offset + 1:
            await self._fill(envelope.offset)
            if self.epoch != epoch:  # a join found a newer epoch meanwhile: this one is over
                self.stats.duplicates += 1
                return
        await self._deliver_next(envelope)

    def check(self) -> None:
        """Read history after the position soon, and deliver what is there (the transport lost messages a while).

        What the next message would find as a gap is delivered now, without
        waiting for one; a new epoch is signalled now. Queued behind what
        is already waiting, so order holds.
        """
        if self.epoch is None:
            return
        self.queue.append(_CHECK)
        if not self.busy:
            self.busy = True
            self.spawn(self._drain())

    async def _check(self) -> None:
        epoch, start = self.epoch, self.offset
        try:
            read = await self.backend.history_read(self.group, (epoch or "", start), self.rule)
        except BackendUnavailableError as exc:
            logger.debug(
                "group %r: could not check history after a reconnect (%s); the next message will", self.group, exc
            )
            return
        if self.epoch != epoch:  # a join found a newer epoch while we read: it told the members
            return
        if read.epoch != epoch:
            self._retired.add(epoch or "")
            self.epoch, self.offset = read.epoch, read.offset
            self.floors.clear()
            await self._unrecovered(f"its epoch changed to {read.epoch}")
            return
        if not read.recovered:
            self.offset = read.offset
            await self._unrecovered(f"offsets {start + 1}-{read.offset} were missed and history no longer holds them")
            return
        for offset, data in read.entries:
            await self._write(offset, history_frame(self.group, read.epoch, offset, data), ())
        if read.entries:
            self.stats.gaps_filled += 1
            self.stats.messages_filled += len(read.entries)
            logger.info(
                "group %r: delivered offsets %d-%d from history after a reconnect", self.group, start + 1, self.offset
            )

    async def _fill(self, upto: int) -> None:
        """Deliver offsets ``offset + 1 .. upto - 1`` from history; on failure tell the members and skip them."""
        start, epoch = self.offset, self.epoch
        read: HistoryRead | None = None
        try:
            read = await self.backend.history_read(self.group, (self.epoch or "", start), self.rule)
        except BackendUnavailableError as exc:
            why = f"history could not be read ({exc})"
        else:
            why = "history no longer holds them" if read.epoch == self.epoch else f"its epoch is now {read.epoch}"
        if self.epoch != epoch:
            return  # a join moved the stream to a newer epoch while we read: nothing to fill
        if read is not None and read.recovered and read.epoch == self.epoch:
            for offset, data in read.entries:
                if offset >= upto:
                    break
                await self._write(offset, history_frame(self.group, self.epoch, offset, data), ())
            if self.offset == upto - 1:
                self.stats.gaps_filled += 1
                self.stats.messages_filled += upto - 1 - start
                logger.info(
                    "group %r: filled offsets %d-%d from history (missed on the way here)",
                    self.group,
                    start + 1,
                    upto - 1,
                )
                return
        self.offset = upto - 1
        await self._unrecovered(f"offsets {start + 1}-{upto - 1} were missed and {why}")

    async def _unrecovered(self, why: str, skip: Collection[str] = ()) -> None:
        members = {cid: c for cid, c in (self.members() or {}).items() if cid not in skip}
        self.stats.unrecovered += 1
        self.stats.members_told += len(members)
        logger.warning("group %r: %s; its %d member(s) here were told (recovered=false)", self.group, why, len(members))
        epoch = self.epoch or ""
        payload = not_recovered_frame(self.group, epoch, self.offset)
        frame = build_frame(payload, _TEXT)
        pending = self.pending
        for connection_id, connection in list(members.items()):
            buffered = pending.get(connection_id) if pending else None
            if buffered is not None:
                buffered.append((epoch, self.offset, payload, True))
            else:
                await _send(connection, frame, payload)

    async def _deliver_next(self, envelope: Envelope) -> None:
        """Deliver the next offset (a duplicate is dropped)."""
        offset = envelope.offset
        if offset <= self.offset:
            self.stats.duplicates += 1
            return
        await self._write(offset, history_frame(self.group, envelope.epoch, offset, envelope.payload), envelope.exclude)

    async def _write(self, offset: int, payload: bytes, exclude: tuple[str, ...]) -> None:
        """Write *payload* (message *offset*) to every member not already past it, framed once."""
        self.offset = offset
        members = self.members()
        if not members:
            return
        floors, pending = self.floors, self.pending
        frame = build_frame(payload, _TEXT)
        compressed = []
        for connection_id, connection in list(members.items()):
            if (exclude and connection_id in exclude) or (floors and floors.get(connection_id, 0) >= offset):
                continue
            if pending and connection_id in pending:
                pending[connection_id].append((self.epoch or "", offset, payload, False))
                continue
            if connection.compressed:
                compressed.append(connection)
                continue
            try:  # noqa: SIM105 - as in the registry's group delivery
                connection.write_frame(frame)
            except ConnectionClosed:
                pass  # it is leaving; its disconnect removes it from the group
        if floors:
            for connection_id in [c for c, floor in floors.items() if floor <= offset]:
                del floors[connection_id]
        for connection in compressed:  # aiohttp's writer keeps their compressor state
            await _send(connection, frame, payload)

    # -------------------------------------------------------------------- joins

    async def join(
        self,
        connection: Connection,
        since: Position | None,
        add: Callable[[], Coroutine[Any, Any, bool]],
        forget: Callable[[], object],
    ) -> Joined:
        """Make *connection* a member and replay to it what it missed since *since*.

        *add* makes it a member (False: it was one already, then nothing is
        replayed); *forget* undoes that here when the history read fails.
        While its history is read, what the stream delivers is kept for it
        and written after the replay, less what the replay held: joins run
        side by side and never hold up delivery to the other members. The
        first join of a stream (no position yet) is run in the stream's queue
        instead, as it sets the position. Raises what *add* and the history
        read raise (the connection is then not a member here).
        """
        if self.epoch is None:
            return await self._join_in_turn(connection, since, add, forget)
        connection_id = connection.connection_id
        buffered = self.pending[connection_id] = []
        try:
            if not await add():
                return Joined(True, self.epoch, self.offset)
            try:
                read = await self.backend.history_read(self.group, since, self.rule)
            except BaseException:
                forget()
                raise
            return await self._catch_up_beside(connection, since, read, buffered)
        finally:
            self.pending.pop(connection_id, None)

    async def _catch_up_beside(
        self, connection: Connection, since: Position | None, read: HistoryRead, buffered: list[_Buffered]
    ) -> Joined:
        """Write the replay, then what was kept for the member meanwhile, past what the replay held."""
        base = read.offset
        replay = read.entries if read.recovered and since is not None else ()
        joined = Joined(read.recovered, read.epoch, read.offset)
        if read.epoch != self.epoch:
            if read.epoch in self._retired or self.epoch is None:
                # Our read is older than what the stream delivers now (the store restarted
                # meanwhile): everything kept for it is of the new epoch.
                joined, base, replay = Joined(False, self.epoch, self.offset), -1, ()
            else:
                # The store lost the group since the stream's last message: move to the new epoch.
                self._retired.add(self.epoch)
                self.epoch, self.offset = read.epoch, read.offset
                self.floors.clear()
                await self._unrecovered(f"its epoch changed to {read.epoch}", skip=set(self.pending))
        for offset, data in replay:
            payload = history_frame(self.group, read.epoch, offset, data)
            await _send(connection, build_frame(payload, _TEXT), payload)
        while buffered:  # it grows while a compressed write is awaited
            epoch, offset, payload, signal = buffered.pop(0)
            if epoch != joined.epoch or offset <= base or (signal and base < 0):
                continue
            await _send(connection, build_frame(payload, _TEXT), payload)
        if self.epoch == joined.epoch and base > self.offset:
            self.floors[connection.connection_id] = base
        return joined

    async def _join_in_turn(
        self,
        connection: Connection,
        since: Position | None,
        add: Callable[[], Coroutine[Any, Any, bool]],
        forget: Callable[[], object],
    ) -> Joined:
        """Run the join in the stream's queue: deliveries wait until its replay is written."""
        done: asyncio.Future[Joined] = asyncio.get_running_loop().create_future()
        item = _Join(connection, since, add, forget, done)
        if self.busy:
            self.queue.append(item)
            return await done
        self.busy = True
        self.queue.insert(0, item)
        self.spawn(self._drain())
        return await asyncio.shield(done)

    async def _join(self, item: _Join) -> None:
        if item.done.done():  # its caller was cancelled while it waited
            return
        try:
            joined = await self._catch_up(item)
        except Exception as exc:
            if not item.done.done():
                item.done.set_exception(exc)
            return
        if not item.done.done():
            item.done.set_result(joined)

    async def _catch_up(self, item: _Join) -> Joined:
        connection = item.connection
        if not await item.add():  # a member already: nothing to replay
            return Joined(True, self.epoch, self.offset)
        try:
            read: HistoryRead = await self.backend.history_read(self.group, item.since, self.rule)
        except BaseException:
            item.forget()
            raise
        if self.epoch is None:
            self.epoch, self.offset = read.epoch, read.offset
        elif read.epoch != self.epoch and read.epoch not in self._retired:
            self._retired.add(self.epoch)
            self.epoch, self.offset = read.epoch, read.offset
            self.floors.clear()
            await self._unrecovered(f"its epoch changed to {read.epoch}", skip=connection.connection_id)
        if read.recovered and item.since is not None:
            for offset, data in read.entries:
                payload = history_frame(self.group, read.epoch, offset, data)
                await _send(connection, build_frame(payload, _TEXT), payload)
        if read.offset > self.offset:
            self.floors[connection.connection_id] = read.offset
        return Joined(read.recovered, read.epoch, read.offset)


async def _send(connection: Connection, frame: bytes, payload: bytes) -> None:
    """Write one frame to *connection* (through aiohttp's writer when compressed); a closed one is skipped."""
    try:
        if connection.compressed:
            await connection.send_frame(payload, _TEXT)
        else:
            connection.write_frame(frame)
    except ConnectionClosed:
        pass  # it is leaving; its disconnect removes it from the group
