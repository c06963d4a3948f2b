"""Local IPC backend: workers on one machine reach each other over Unix sockets, no Redis.

Each node (worker process) listens on ``<directory>/<node id>.sock``. A send to
a connection owned by another node opens (once, then cached) a stream to that
node's socket and writes a length-prefixed envelope; the owner acknowledges
each envelope once it is queued for delivery, in the order received, so a
send that returned is ordered before any later send from anywhere.

Which directory: under gunicorn (``SERVER_SOFTWARE`` says ``gunicorn/...``)
every worker uses ``<runtime base>/gunicorn-<master pid>``, which the master
pid makes shared by the workers of one gunicorn and private to it, with or
without ``--preload``. Elsewhere the directory is made when the backend is
created, so processes forked afterwards share it; or pass one explicitly
(``ipc:///run/myapp``) to join processes started any other way.

Faults: a worker that exited cleanly removed its socket, so a send to its ids
finds no file and is dropped; one that was killed left a socket nobody
listens on, so the connect is refused, the file removed and the send dropped
(debug log both times). Directories of dead masters are swept at startup.

Groups: membership lives only in each node's registry; nothing is written to
disk. Every stream opens with a *hello* naming its sender, and a starting node
lists the directory once and says hello to every node there, so each node
knows every other live node without touching the filesystem again. A group
send is one envelope to every other known node (a worker without members of
the group drops it: on one machine with a few workers that is cheaper than
keeping membership in sync). ``group_members`` asks every known node for its
local members of the group over the same streams (a control frame answered in
order with the acknowledgements) and adds this node's own. A node that died
is noticed on that very query (its stream is closed by the kernel, its socket
refuses connections), so its members drop out of presence at once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import msgspec

from ..._ids import CONNECTION_ID_LENGTH, is_node_id
from ...exceptions import BackendUnavailableError, ConfigurationError
from ..base import Backend, BackendStats, Envelope, Node, check_positive, encode_envelope
from . import _wire as wire
from ._dirs import (
    in_gunicorn,
    listening_socket,
    new_directory,
    node_ids_in,
    remove_directory,
    resolve_directory,
    runtime_base,
)
from ._peer import Peers

__all__ = ["IpcBackend", "IpcBackendStats", "runtime_base", "in_gunicorn"]

logger = logging.getLogger("wsframe.backends.ipc")

_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, including the terminating NUL


@dataclasses.dataclass
class IpcBackendStats(BackendStats):
    """Counters of one :class:`IpcBackend`, for monitoring and tests.

    ``delivered``: envelopes received and handed to this process's registry;
    ``bad_messages``: incoming frames that did not decode, or whose delivery
    raised (skipped).
    """

    sent: int = 0
    """Envelopes another node acknowledged."""
    dropped: int = 0
    """Envelopes for nodes that are gone (socket missing, refused, or closed before the ack)."""


class IpcBackend(Backend):
    """Carries envelopes between worker processes on one machine through Unix sockets.

    *directory* is where the nodes' sockets live (see the module docstring
    for the default). A send waits for the owner's acknowledgement up to
    *ack_timeout* seconds and for a connection up to *connect_timeout*.

    Raises :class:`~wsframe.exceptions.ConfigurationError` when the directory
    cannot be used safely (not a directory, another user's), at construction
    or at startup.
    """

    name = "ipc"
    _label = "IPC"
    _starts = "opens the worker socket"

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        ack_timeout: float = 5.0,
        connect_timeout: float = 1.0,
        inbox_size: int = 10_000,
    ) -> None:
        self.ack_timeout = check_positive("ack_timeout", ack_timeout)
        self.connect_timeout = check_positive("connect_timeout", connect_timeout)
        self.inbox_size = int(check_positive("inbox_size", inbox_size, "envelopes", whole=True))
        self.stats: IpcBackendStats = IpcBackendStats()
        self._explicit = Path(directory) if directory is not None else None
        self._created_by = os.getpid()
        self._made_dir: Path | None = None
        if self._explicit is None and not in_gunicorn():
            # Made now, in the process that builds the app, so that every
            # process forked from it afterwards finds the same directory.
            self._made_dir = new_directory(self._created_by)
        atexit.register(self._remove_directory_at_exit)
        self.directory: Path | None = None
        self._server: asyncio.Server | None = None
        self._socket_path: Path | None = None
        self._inbox: asyncio.Queue[Envelope] | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._inbound: set[asyncio.StreamWriter] = set()
        self._inbound_tasks: set[asyncio.Task[object]] = set()
        self._peers = Peers(connect_timeout=self.connect_timeout, ack_timeout=self.ack_timeout)

    # -------------------------------------------------------------- lifecycle

    def _started(self) -> bool:
        return self._server is not None

    async def on_startup(self, node: Node) -> None:
        """Listen on this node's socket, start delivering what arrives there, and greet the other nodes.

        Raises :class:`~wsframe.exceptions.ConfigurationError` when the
        directory cannot be used (a file, unsafe, or a socket path too long
        for Unix sockets).
        """
        self._node = node
        try:
            self.directory = resolve_directory(self._explicit, self._made_dir)
        except FileExistsError:
            raise ConfigurationError(f"{self._explicit} exists and is not a directory; pass a directory") from None
        path = self._socket_path = self.directory / f"{node.node_id}.sock"
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            raise ConfigurationError(
                f"the worker socket path {path} is longer than the {_MAX_SOCKET_PATH} bytes Unix sockets allow; "
                "pass a shorter directory (backend='ipc:///run/myapp')."
            )
        path.unlink(missing_ok=True)
        self._inbox = asyncio.Queue(maxsize=self.inbox_size)
        for attempt in range(3):
            try:
                listener = listening_socket(path)
                break
            except FileNotFoundError:
                # The last worker of the previous generation removed the then
                # empty directory between our mkdir and bind: make it again.
                if attempt == 2:
                    raise
                self.directory.mkdir(mode=0o700, exist_ok=True)
        self._peers.start(self.directory, node.node_id)
        self._server = await asyncio.start_unix_server(self._serve_peer, sock=listener)
        self._delivery = asyncio.create_task(self._deliver_forever(), name=f"wsframe ipc delivery {node.node_id}")
        logger.debug("node %s listening on %s", node.node_id, self._socket_path)
        await self._discover(self.directory, node.node_id)

    async def _discover(self, directory: Path, own: str) -> None:
        """Say hello to every node in *directory*, so each knows this one before it serves anyone.

        Listening comes first: of two nodes starting together, the later
        lister sees the other's socket, and its hello tells the other.
        """
        names = await asyncio.get_running_loop().run_in_executor(None, node_ids_in, directory)
        others = [node for node in names if node != own]
        self._peers.nodes.update(others)
        await asyncio.gather(*(self._greet(node) for node in others))

    async def _greet(self, node_id: str) -> None:
        try:
            peer = await self._peers.connect(node_id)
            if peer is None or peer.hello is None:
                return  # a socket nobody listens on: removed, node forgotten
            async with asyncio.timeout(self.ack_timeout):
                await peer.hello
        except (BackendUnavailableError, TimeoutError) as exc:
            # Kept as a node: a group send to it will say whether it recovered.
            logger.warning("worker node %s did not answer our hello at startup: %s", node_id, exc or "timed out")

    async def on_shutdown(self) -> None:
        """Stop listening, remove this node's socket and close every stream; remove the directory if empty."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._socket_path is not None:
            self._socket_path.unlink(missing_ok=True)
        for writer in list(self._inbound):
            writer.close()
        tasks: list[asyncio.Task[object]] = []
        for inbound in list(self._inbound_tasks):
            # A stream blocked on a full inbox would otherwise wait forever.
            inbound.cancel()
            tasks.append(inbound)
        tasks.extend(self._peers.close())
        delivery, self._delivery = self._delivery, None
        if delivery is not None:
            delivery.cancel()
            tasks.append(delivery)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            await server.wait_closed()
        if self.directory is not None and self._explicit is None:
            # The last worker out removes the shared directory.
            with contextlib.suppress(OSError):
                self.directory.rmdir()

    def _remove_directory_at_exit(self) -> None:
        remove_directory(self._created_by, self._explicit, self._made_dir)

    # ---------------------------------------------------------------- receive

    async def _serve_peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        inbox = self._inbox
        if inbox is None:  # pragma: no cover - the server starts after the inbox exists
            writer.close()
            return
        task = asyncio.current_task()
        self._inbound.add(writer)
        if task is not None:
            self._inbound_tasks.add(task)
        try:
            while True:
                try:
                    size, control = wire.read_header(await reader.readexactly(wire.HEADER.size))
                except wire.FrameTooLarge as exc:
                    logger.warning("closing an IPC stream that announced a %d-byte frame", exc.size)
                    return
                body = await reader.readexactly(size)
                if control:
                    # Answered at once, not through the inbox, in order with the acknowledgements.
                    writer.write(self._answer(body))
                    if writer.transport.get_write_buffer_size() > 65536:
                        await writer.drain()
                    continue
                envelope = self._decode(body, "an IPC stream")
                if envelope is None:
                    writer.write(wire.ACK_BAD)
                    continue
                # Queue, then acknowledge: the sender's next send (from any
                # process) is therefore queued after this one.
                await inbox.put(envelope)
                writer.write(wire.ACK_OK)
                if writer.transport.get_write_buffer_size() > 65536:
                    await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # the sender closed its end
        except asyncio.CancelledError:
            # Only on_shutdown cancels this task. Returning instead of
            # re-raising: asyncio's stream server (3.11) reports a cancelled
            # handler as an unhandled exception.
            return
        except OSError as exc:
            logger.debug("incoming IPC stream broke: %s", exc)
        finally:
            self._inbound.discard(writer)
            if task is not None:
                self._inbound_tasks.discard(task)
            writer.close()

    def _answer(self, body: bytes) -> bytes:
        """Carry out a control frame from another node and return the bytes that answer it."""
        node = self._node
        try:
            control = wire.decode_control(body)
        except (msgspec.DecodeError, TypeError) as exc:
            self.stats.bad_messages += 1
            logger.warning("skipping an IPC control frame that does not decode: %s", exc)
            return wire.ACK_BAD
        if node is None:  # pragma: no cover - the server starts after the node is set
            return wire.ACK_BAD
        if control.kind == "hello":
            node_id = control.node_id
            if not is_node_id(node_id) or node_id == node.node_id:
                self.stats.bad_messages += 1
                logger.warning("ignoring a hello from %r, which is not another node's id", node_id)
                return wire.ACK_BAD
            self._peers.heard_from(node_id)
            return wire.ACK_OK
        return wire.reply_frame(node.local_members(control.group))

    async def _deliver_forever(self) -> None:
        inbox = self._inbox
        if inbox is None:  # pragma: no cover - started by on_startup after the inbox is made
            return
        while True:
            await self._deliver(await inbox.get())

    # ------------------------------------------------------------------- send

    async def publish_to_node(self, node_id: str, envelope: Envelope) -> None:
        """Hand *envelope* to node *node_id* and wait until that node has queued it.

        A node that is gone (no socket, refused, closed before acknowledging)
        is not an error: the envelope is dropped and counted. Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` when the node does
        not connect within ``connect_timeout`` or acknowledge within
        ``ack_timeout`` (its loop is blocked or its inbox full), and before
        startup. On cancellation the envelope may or may not be delivered.
        """
        self._require_started()
        if not is_node_id(node_id):
            # Never build a path from something that is not a node id.
            logger.debug("dropping %s for %s: %r is not a node id", envelope.kind, envelope.connection_id, node_id)
            return
        acknowledged = await self._peers.ask(
            node_id,
            wire.envelope_frame(encode_envelope(envelope)),
            f"take the {envelope.kind} for {_target(envelope)}",
            "(its event loop is blocked or its inbox is full); it may still arrive.",
        )
        if acknowledged is None:
            self.stats.dropped += 1
            logger.debug(
                "node %s is gone or went away before taking %s for %s; dropped",
                node_id,
                envelope.kind,
                envelope.connection_id,
            )
        elif acknowledged:
            self.stats.sent += 1
        else:  # pragma: no cover - only a peer running an incompatible wsframe answers this
            logger.warning("node %s could not decode the %s for %s", node_id, envelope.kind, envelope.connection_id)

    # ----------------------------------------------------------------- groups

    async def publish_to_group(self, group: str, envelope: Envelope) -> None:
        """Hand a group envelope to every other live node, concurrently, and wait until each has queued it.

        One envelope per other node whether or not it has members (they drop
        it): the price of keeping no shared membership state. Nodes found
        gone are dropped and forgotten. Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` before startup,
        and once every node had its chance when one did not take it within
        ``ack_timeout`` (the others have it).
        """
        self._require_started()
        results = await asyncio.gather(
            *(self.publish_to_node(node, envelope) for node in sorted(self._peers.nodes)), return_exceptions=True
        )
        _raise_first(results)

    async def group_members(self, group: str) -> set[str]:
        """Return *group*'s members on this node and on every other live node, asked now.

        A node that died answers nothing (its stream is closed or its socket
        refuses): its members are left out at once. Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` before startup
        and when a node does not answer within ``ack_timeout``.
        """
        node = self._require_started()
        nodes = sorted(self._peers.nodes)
        results = await asyncio.gather(*(self._members_of(other, group) for other in nodes), return_exceptions=True)
        _raise_first(results)
        members = set(node.local_members(group))
        for result in results:
            if isinstance(result, set):
                members |= result
        return members

    async def _members_of(self, node_id: str, group: str) -> set[str]:
        # Twice at most: a cached stream may have broken because the node
        # died, or for a reason of its own; a fresh connect tells which.
        for _ in range(2):
            answer = await self._peers.ask(
                node_id,
                wire.control_frame(wire.Control("members", group=group)),
                f"say who is in group {group!r}",
                "(its event loop is blocked).",
            )
            if isinstance(answer, bytes):
                try:
                    ids = wire.decode_members(answer)
                except msgspec.DecodeError as exc:
                    self.stats.bad_messages += 1
                    logger.warning("node %s answered a presence query with garbage: %s", node_id, exc)
                    return set()
                # A node speaks only for its own connections.
                return {i for i in ids if len(i) == CONNECTION_ID_LENGTH and i.startswith(node_id)}
            if answer is not None:
                logger.warning("node %s did not understand a presence query; counted as no members", node_id)
                return set()
        return set()


def _target(envelope: Envelope) -> str:
    return f"group {envelope.group!r}" if envelope.kind.startswith("group_") else envelope.connection_id


def _raise_first(results: Iterable[object]) -> None:
    """Re-raise the first exception among gathered *results*, after all of them finished."""
    for result in results:
        if isinstance(result, BaseException):
            raise result
