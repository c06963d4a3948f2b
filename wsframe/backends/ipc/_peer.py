"""The IPC backend's streams to the other nodes: which are alive, which are gone, and one cached stream each.

A :class:`Peer` is one stream, matching the peer's answers to the frames sent,
in order. :class:`Peers` connects to a node's socket on first use, says hello
on every new stream, and remembers nodes found gone so they are not tried again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from pathlib import Path

from ...exceptions import BackendUnavailableError
from . import _wire as wire
from ._wire import AckReader, Answer

__all__ = ["Peer", "Peers"]

logger = logging.getLogger("wsframe.backends.ipc")

_MAX_DEAD_NODES = 10_000


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


class Peers:
    """The other nodes of one directory, as this node knows them, and a cached stream to each.

    :attr:`nodes` are the nodes believed alive: found at startup or said
    hello since; dropped once found dead. Nothing connects before
    :meth:`start` nor after :meth:`close`.
    """

    def __init__(self, *, connect_timeout: float, ack_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self.directory: Path | None = None
        self.own = ""
        self.nodes: set[str] = set()
        self.dead: set[str] = set()
        """Nodes found gone (no socket, or refused): dropped at once, until one says hello again."""
        self._streams: dict[str, Peer] = {}
        self._connecting: dict[str, asyncio.Lock] = {}

    def start(self, directory: Path, own: str) -> None:
        """Connect to sockets in *directory* from now on, saying hello as node *own*."""
        self.directory = directory
        self.own = own

    def close(self) -> list[asyncio.Task[None]]:
        """Close every stream and forget every node; return the reading tasks, cancelled, to await."""
        self.directory = None
        tasks = []
        for peer in list(self._streams.values()):
            peer.close()
            peer.task.cancel()
            tasks.append(peer.task)
        self._streams.clear()
        self.nodes.clear()
        return tasks

    def heard_from(self, node_id: str) -> None:
        """Note that node *node_id* said hello: it is alive, whatever was thought before."""
        self.nodes.add(node_id)
        self.dead.discard(node_id)

    async def ask(self, node_id: str, frame: bytes, what: str, why: str) -> Answer:
        """Write *frame* to node *node_id* and return its answer; None when the node is gone.

        Connects first if need be. Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` when the node does
        not connect within ``connect_timeout``, or does not *what* within
        ``ack_timeout`` (the message goes on with *why*). On cancellation the
        frame may or may not have been written.
        """
        peer = self._streams.get(node_id)
        if peer is None or peer.closed:
            peer = await self.connect(node_id)
            if peer is None:
                return None
        future = peer.request(frame)
        try:
            async with asyncio.timeout(self.ack_timeout):
                await peer.writer.drain()
                return await future
        except TimeoutError:  # before OSError, of which it is a subclass
            raise BackendUnavailableError(
                f"worker node {node_id} did not {what} within {self.ack_timeout} s {why}"
            ) from None
        except OSError:
            return None  # the stream broke: the node is gone

    async def connect(self, node_id: str) -> Peer | None:
        """Return the stream to *node_id*, opened (and hello said) if need be; None when the node is gone.

        A missing socket, or one nobody listens on (removed then), marks the
        node dead. Raises :class:`~wsframe.exceptions.BackendUnavailableError`
        when it does not accept within ``connect_timeout`` or cannot be reached.
        """
        if node_id in self.dead:
            logger.debug("node %s is gone; dropped", node_id)
            return None
        lock = self._connecting.setdefault(node_id, asyncio.Lock())
        async with lock:
            peer = self._streams.get(node_id)
            if peer is not None and not peer.closed:
                return peer
            directory = self.directory
            if directory is None:  # pragma: no cover - started by the backend before it sends
                return None
            path = directory / f"{node_id}.sock"
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_unix_connection(str(path))
            except FileNotFoundError:
                self._mark_dead(node_id)
                logger.debug("no worker with node id %s here (no socket %s); dropped", node_id, path)
                return None
            except ConnectionRefusedError:
                # Nobody listens on it: the worker died without cleaning up.
                self._mark_dead(node_id)
                path.unlink(missing_ok=True)
                logger.debug("worker node %s is gone (connection refused); removed %s", node_id, path)
                return None
            except TimeoutError:
                raise BackendUnavailableError(
                    f"worker node {node_id} did not accept a connection within {self.connect_timeout} s"
                ) from None
            except OSError as exc:
                raise BackendUnavailableError(f"cannot reach worker node {node_id} at {path}: {exc}") from exc
            if self.directory is None:
                # Shut down while connecting: a stream cached now would outlive the backend.
                writer.close()
                return None
            peer = Peer(node_id, reader, writer)
            # Every stream opens by naming its sender: that is how a node
            # that started later becomes known to the others.
            peer.hello = peer.request(wire.control_frame(wire.Control("hello", node_id=self.own)))
            self._streams[node_id] = peer
            peer.task.add_done_callback(lambda _: self._forget(peer))
            return peer

    def _forget(self, peer: Peer) -> None:
        if self._streams.get(peer.node_id) is peer:
            del self._streams[peer.node_id]

    def _mark_dead(self, node_id: str) -> None:
        if len(self.dead) >= _MAX_DEAD_NODES:
            self.dead.clear()
        self.dead.add(node_id)
        self.nodes.discard(node_id)
        self._connecting.pop(node_id, None)
