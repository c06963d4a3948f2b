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
import collections
import contextlib
import dataclasses
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from .._ids import CONNECTION_ID_LENGTH, is_node_id
from ..exceptions import BackendUnavailableError, ConfigurationError
from .base import Backend, Envelope, decode_envelope, encode_envelope

if TYPE_CHECKING:
    from ..registry import Registry

__all__ = ["IpcBackend", "IpcBackendStats", "runtime_base", "in_gunicorn"]

logger = logging.getLogger("wsframe.backends.ipc")

_HEADER = struct.Struct("!I")
_MAX_FRAME = 1 << 30
_CONTROL = 1 << 31
"""Set in a frame header: the body is a :class:`_Control` for the backend itself, not an envelope."""
_ACK_OK = 1
_ACK_BAD = 0
_ACK_REPLY = 2
"""An acknowledgement carrying an answer: followed by a header and that many bytes."""
_OWNED_DIR = re.compile(r"(?:gunicorn-)?(\d+)(?:-[0-9a-f]+)?")
_MAX_DEAD_NODES = 10_000
_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, including the terminating NUL


def in_gunicorn() -> bool:
    """Return whether this process is a gunicorn master or worker (gunicorn sets ``SERVER_SOFTWARE``)."""
    return os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/")


def runtime_base() -> Path:
    """Return the private folder that holds wsframe's per-app socket directories.

    ``$XDG_RUNTIME_DIR/wsframe`` when that is set, else ``<tmp>/wsframe-<uid>``.
    Created with mode 0700; raises :class:`~wsframe.exceptions.ConfigurationError`
    when it exists but is not a directory owned by this user (another user
    could otherwise read or plant sockets).
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    base = (
        Path(xdg) / "wsframe" if xdg and os.path.isdir(xdg) else Path(tempfile.gettempdir()) / f"wsframe-{os.getuid()}"
    )
    _private_dir(base)
    return base


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigurationError(
            f"{path} must be a directory owned by uid {os.getuid()} with mode 0700 for wsframe's worker sockets; "
            "remove it, or pass backend='ipc:///some/private/dir'."
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _has_live_socket(directory: Path) -> bool:
    for path in directory.glob("*.sock"):
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(0.1)
            try:
                probe.connect(str(path))
            except OSError:
                continue
            return True
    return False


def _sweep(base: Path) -> None:
    """Remove directories whose owning process (master or creator) is gone and where nobody listens.

    The socket check matters when the base is shared across pid namespaces
    (containers with a common /tmp), where a live master's pid looks dead.
    """
    for entry in base.iterdir():
        match = _OWNED_DIR.fullmatch(entry.name)
        if match and not _pid_alive(int(match.group(1))) and not _has_live_socket(entry):
            logger.debug("removing %s: the process that made it is gone", entry)
            shutil.rmtree(entry, ignore_errors=True)


@dataclasses.dataclass
class IpcBackendStats:
    """Counters of one :class:`IpcBackend`, for monitoring and tests."""

    sent: int = 0
    """Envelopes another node acknowledged."""
    delivered: int = 0
    """Envelopes received and handed to this process's registry."""
    dropped: int = 0
    """Envelopes for nodes that are gone (socket missing, refused, or closed before the ack)."""
    bad_messages: int = 0
    """Incoming frames that did not decode, or whose delivery raised; skipped."""


class _Control(msgspec.Struct, array_like=True, frozen=True):
    """A request to the backend of another node: ``hello`` (I am ``node_id``) or ``members`` of ``group``."""

    kind: Literal["hello", "members"]
    node_id: str = ""
    group: str = ""


_control_encoder = msgspec.msgpack.Encoder()
_control_decoder = msgspec.msgpack.Decoder(_Control)
_members_decoder = msgspec.msgpack.Decoder(list[str])

_Answer = bool | bytes | None
"""What a peer made of a frame: taken (True), refused (False), an answer (bytes), or the stream broke (None)."""


def _control_frame(control: _Control) -> bytes:
    body = _control_encoder.encode(control)
    return _HEADER.pack(len(body) | _CONTROL) + body


class _Peer:
    """A cached stream to another node, with the futures of unacknowledged frames in order."""

    def __init__(self, node_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.node_id = node_id
        self.reader = reader
        self.writer = writer
        self.pending: collections.deque[asyncio.Future[_Answer]] = collections.deque()
        self.closed = False
        self.hello: asyncio.Future[_Answer] | None = None
        self.task = asyncio.create_task(self._read_acks(), name=f"wsframe ipc acks {node_id}")

    def request(self, frame: bytes) -> asyncio.Future[_Answer]:
        """Write *frame*; the returned future gets the peer's answer to it."""
        future: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_result(None)
            return future
        self.pending.append(future)
        self.writer.write(frame)
        return future

    async def _read_acks(self) -> None:
        buffer = bytearray()
        try:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                if not buffer and _ACK_REPLY not in chunk:
                    # The common case, kept cheap: nothing but one-byte acknowledgements.
                    for ack in chunk:
                        if not self._resolve(ack == _ACK_OK):
                            return
                    continue
                buffer += chunk
                offset = 0
                while offset < len(buffer):
                    answer: _Answer
                    if buffer[offset] == _ACK_REPLY:
                        if len(buffer) - offset <= _HEADER.size:
                            break
                        (size,) = _HEADER.unpack_from(buffer, offset + 1)
                        if size > _MAX_FRAME:
                            logger.warning("node %s announced a %d-byte answer; closing", self.node_id, size)
                            return
                        end = offset + 1 + _HEADER.size + size
                        if len(buffer) < end:
                            break
                        answer = bytes(buffer[offset + 1 + _HEADER.size : end])
                        offset = end
                    else:
                        answer = buffer[offset] == _ACK_OK
                        offset += 1
                    if not self._resolve(answer):
                        return
                del buffer[:offset]
        except OSError as exc:
            logger.debug("stream to node %s broke: %s", self.node_id, exc)
        finally:
            self.close()

    def _resolve(self, answer: _Answer) -> bool:
        """Hand *answer* to the oldest unanswered frame; False (after a warning) when there is none."""
        if not self.pending:
            logger.warning("node %s sent an acknowledgement for nothing; closing", self.node_id)
            return False
        future = self.pending.popleft()
        if not future.done():
            future.set_result(answer)
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # Whatever was not acknowledged went down with the node: at-most-once.
        for future in self.pending:
            if not future.done():
                future.set_result(None)
        self.pending.clear()
        self.writer.close()


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

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        ack_timeout: float = 5.0,
        connect_timeout: float = 1.0,
        inbox_size: int = 10_000,
    ) -> None:
        for label, value in (("ack_timeout", ack_timeout), ("connect_timeout", connect_timeout)):
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{label} must be a positive number of seconds, got {value!r}")
        if not isinstance(inbox_size, int) or inbox_size < 1:
            raise ConfigurationError(f"inbox_size must be a positive number of envelopes, got {inbox_size!r}")
        self.ack_timeout = float(ack_timeout)
        self.connect_timeout = float(connect_timeout)
        self.inbox_size = inbox_size
        self.stats = IpcBackendStats()
        self._explicit = Path(directory) if directory is not None else None
        self._created_by = os.getpid()
        self._made_dir: Path | None = None
        if self._explicit is None and not in_gunicorn():
            # Made now, in the process that builds the app, so that every
            # process forked from it afterwards finds the same directory.
            base = runtime_base()
            _sweep(base)
            self._made_dir = base / f"{self._created_by}-{secrets.token_hex(4)}"
            self._made_dir.mkdir(mode=0o700)
        atexit.register(self._remove_directory_at_exit)
        self.directory: Path | None = None
        self._registry: Registry | None = None
        self._server: asyncio.Server | None = None
        self._socket_path: Path | None = None
        self._inbox: asyncio.Queue[Envelope] | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._inbound: set[asyncio.StreamWriter] = set()
        self._inbound_tasks: set[asyncio.Task[object]] = set()
        self._peers: dict[str, _Peer] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._dead: set[str] = set()
        self._nodes: set[str] = set()
        """Other nodes believed alive: found at startup or said hello since; dropped once found dead."""

    # -------------------------------------------------------------- lifecycle

    def _resolve_directory(self) -> Path:
        if self._explicit is not None:
            self._explicit.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self._explicit.is_dir():  # pragma: no cover - mkdir(exist_ok) raises first for files
                raise ConfigurationError(f"{self._explicit} is not a directory")
            return self._explicit
        if in_gunicorn():
            # Workers are children of the gunicorn master: its pid names the
            # one directory all of them share, with or without --preload.
            base = runtime_base()
            _sweep(base)
            directory = base / f"gunicorn-{os.getppid()}"
            directory.mkdir(mode=0o700, exist_ok=True)
            return directory
        if self._made_dir is None:  # pragma: no cover - set in __init__ whenever not under gunicorn
            raise ConfigurationError("the IPC backend has no directory")
        self._made_dir.mkdir(mode=0o700, exist_ok=True)
        return self._made_dir

    async def on_startup(self, registry: Registry) -> None:
        """Listen on this node's socket and start delivering what arrives there."""
        self._registry = registry
        try:
            self.directory = self._resolve_directory()
        except FileExistsError:
            raise ConfigurationError(f"{self._explicit} exists and is not a directory; pass a directory") from None
        path = self._socket_path = self.directory / f"{registry.node_id}.sock"
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            raise ConfigurationError(
                f"the worker socket path {path} is longer than the {_MAX_SOCKET_PATH} bytes Unix sockets allow; "
                "pass a shorter directory (backend='ipc:///run/myapp')."
            )
        path.unlink(missing_ok=True)
        self._inbox = asyncio.Queue(maxsize=self.inbox_size)
        for attempt in range(3):
            try:
                listener = _listening_socket(path)
                break
            except FileNotFoundError:
                # The last worker of the previous generation removed the then
                # empty directory between our mkdir and bind: make it again.
                if attempt == 2:
                    raise
                self.directory.mkdir(mode=0o700, exist_ok=True)
        self._server = await asyncio.start_unix_server(self._serve_peer, sock=listener)
        self._delivery = asyncio.create_task(self._deliver_forever(), name=f"wsframe ipc delivery {registry.node_id}")
        logger.debug("node %s listening on %s", registry.node_id, self._socket_path)
        await self._discover(self.directory, registry.node_id)

    async def _discover(self, directory: Path, own: str) -> None:
        """Say hello to every node in *directory*, so each knows this one before it serves anyone.

        Listening comes first: of two nodes starting together, the later
        lister sees the other's socket, and its hello tells the other.
        """
        names = await asyncio.get_running_loop().run_in_executor(None, _node_ids_in, directory)
        others = [node for node in names if node != own]
        self._nodes.update(others)
        await asyncio.gather(*(self._greet(node) for node in others))

    async def _greet(self, node_id: str) -> None:
        try:
            peer = await self._connect(node_id)
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
        for peer in list(self._peers.values()):
            peer.close()
            peer.task.cancel()
            tasks.append(peer.task)
        self._peers.clear()
        self._nodes.clear()
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
        # Forked children inherit atexit handlers; only the creator cleans up.
        if os.getpid() != self._created_by:
            return
        if self._made_dir is not None:
            shutil.rmtree(self._made_dir, ignore_errors=True)
        elif self._explicit is None and in_gunicorn():
            # Built in the gunicorn master (--preload): its workers used
            # gunicorn-<this pid>; remove what killed workers left behind.
            with contextlib.suppress(ConfigurationError):  # the base was made unsafe since startup
                shutil.rmtree(runtime_base() / f"gunicorn-{self._created_by}", ignore_errors=True)

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
                header = await reader.readexactly(_HEADER.size)
                (raw_size,) = _HEADER.unpack(header)
                size = raw_size & ~_CONTROL
                if size > _MAX_FRAME:
                    logger.warning("closing an IPC stream that announced a %d-byte frame", size)
                    return
                body = await reader.readexactly(size)
                if raw_size & _CONTROL:
                    # Answered at once, not through the inbox, in order with the acknowledgements.
                    writer.write(self._answer(body))
                    if writer.transport.get_write_buffer_size() > 65536:
                        await writer.drain()
                    continue
                try:
                    envelope = decode_envelope(body)
                except (msgspec.DecodeError, TypeError) as exc:
                    self.stats.bad_messages += 1
                    logger.warning("skipping an IPC frame that is not a wsframe envelope: %s", exc)
                    writer.write(bytes((_ACK_BAD,)))
                    continue
                # Queue, then acknowledge: the sender's next send (from any
                # process) is therefore queued after this one.
                await inbox.put(envelope)
                writer.write(bytes((_ACK_OK,)))
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
        registry = self._registry
        try:
            control = _control_decoder.decode(body)
        except (msgspec.DecodeError, TypeError) as exc:
            self.stats.bad_messages += 1
            logger.warning("skipping an IPC control frame that does not decode: %s", exc)
            return bytes((_ACK_BAD,))
        if registry is None:  # pragma: no cover - the server starts after the registry is set
            return bytes((_ACK_BAD,))
        if control.kind == "hello":
            node_id = control.node_id
            if not is_node_id(node_id) or node_id == registry.node_id:
                self.stats.bad_messages += 1
                logger.warning("ignoring a hello from %r, which is not another node's id", node_id)
                return bytes((_ACK_BAD,))
            self._nodes.add(node_id)
            self._dead.discard(node_id)
            return bytes((_ACK_OK,))
        members = _control_encoder.encode(registry.local_members(control.group))
        return bytes((_ACK_REPLY,)) + _HEADER.pack(len(members)) + members

    async def _deliver_forever(self) -> None:
        inbox, registry = self._inbox, self._registry
        if inbox is None or registry is None:  # pragma: no cover - started by on_startup after both are set
            return
        while True:
            envelope = await inbox.get()
            try:
                await registry.deliver_envelope(envelope)
            except Exception:
                self.stats.bad_messages += 1
                logger.exception("delivering %s to %s failed; skipped", envelope.kind, envelope.connection_id)
                continue
            self.stats.delivered += 1

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
        if self._server is None:
            raise BackendUnavailableError(
                "the IPC backend is not started; start the app (its on_startup opens the worker socket) first."
            )
        if not is_node_id(node_id):
            # Never build a path from something that is not a node id.
            logger.debug("dropping %s for %s: %r is not a node id", envelope.kind, envelope.connection_id, node_id)
            return
        peer = self._peers.get(node_id)
        if peer is None or peer.closed:
            peer = await self._connect(node_id)
            if peer is None:
                self.stats.dropped += 1
                return
        data = encode_envelope(envelope)
        future = peer.request(_HEADER.pack(len(data)) + data)
        try:
            async with asyncio.timeout(self.ack_timeout):
                await peer.writer.drain()
                acknowledged = await future
        except TimeoutError:  # before OSError, of which it is a subclass
            raise BackendUnavailableError(
                f"worker node {node_id} did not take the {envelope.kind} for {_target(envelope)} within "
                f"{self.ack_timeout} s (its event loop is blocked or its inbox is full); it may still arrive."
            ) from None
        except OSError:
            acknowledged = None  # the stream broke: the node is gone
        if acknowledged is None:
            self.stats.dropped += 1
            logger.debug(
                "node %s went away before taking %s for %s; dropped", node_id, envelope.kind, envelope.connection_id
            )
        elif acknowledged:
            self.stats.sent += 1
        else:  # pragma: no cover - only a peer running an incompatible wsframe answers this
            logger.warning("node %s could not decode the %s for %s", node_id, envelope.kind, envelope.connection_id)

    async def _connect(self, node_id: str) -> _Peer | None:
        if node_id in self._dead:
            logger.debug("node %s is gone; dropped", node_id)
            return None
        lock = self._connecting.setdefault(node_id, asyncio.Lock())
        async with lock:
            peer = self._peers.get(node_id)
            if peer is not None and not peer.closed:
                return peer
            directory = self.directory
            if directory is None:  # pragma: no cover - set by on_startup, checked by the caller
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
            if self._server is None:
                # Shut down while connecting: a stream cached now would outlive the backend.
                writer.close()
                return None
            peer = _Peer(node_id, reader, writer)
            own = self._registry.node_id if self._registry is not None else ""
            # Every stream opens by naming its sender: that is how a node
            # that started later becomes known to the others.
            peer.hello = peer.request(_control_frame(_Control("hello", node_id=own)))
            self._peers[node_id] = peer
            peer.task.add_done_callback(lambda _: self._forget(peer))
            return peer

    def _forget(self, peer: _Peer) -> None:
        if self._peers.get(peer.node_id) is peer:
            del self._peers[peer.node_id]

    def _mark_dead(self, node_id: str) -> None:
        if len(self._dead) >= _MAX_DEAD_NODES:
            self._dead.clear()
        self._dead.add(node_id)
        self._nodes.discard(node_id)
        self._connecting.pop(node_id, None)

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
            *(self.publish_to_node(node, envelope) for node in sorted(self._nodes)), return_exceptions=True
        )
        _raise_first(results)

    async def group_members(self, group: str) -> set[str]:
        """Return *group*'s members on this node and on every other live node, asked now.

        A node that died answers nothing (its stream is closed or its socket
        refuses): its members are left out at once. Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` before startup
        and when a node does not answer within ``ack_timeout``.
        """
        self._require_started()
        nodes = sorted(self._nodes)
        results = await asyncio.gather(*(self._members_of(node, group) for node in nodes), return_exceptions=True)
        _raise_first(results)
        members = set(self._registry.local_members(group)) if self._registry is not None else set()
        for result in results:
            if isinstance(result, set):
                members |= result
        return members

    async def _members_of(self, node_id: str, group: str) -> set[str]:
        # Twice at most: a cached stream may have broken because the node
        # died, or for a reason of its own; a fresh connect tells which.
        for _ in range(2):
            peer = self._peers.get(node_id)
            if peer is None or peer.closed:
                peer = await self._connect(node_id)
                if peer is None:
                    return set()
            future = peer.request(_control_frame(_Control("members", group=group)))
            answer: _Answer
            try:
                async with asyncio.timeout(self.ack_timeout):
                    await peer.writer.drain()
                    answer = await future
            except TimeoutError:  # before OSError, of which it is a subclass
                raise BackendUnavailableError(
                    f"worker node {node_id} did not say who is in group {group!r} within {self.ack_timeout} s "
                    "(its event loop is blocked)."
                ) from None
            except OSError:
                answer = None
            if isinstance(answer, bytes):
                try:
                    ids = _members_decoder.decode(answer)
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

    def _require_started(self) -> None:
        if self._server is None or self._registry is None:
            raise BackendUnavailableError(
                "the IPC backend is not started; start the app (its on_startup opens the worker socket) first."
            )


def _listening_socket(path: Path) -> socket.socket:
    """Return a Unix socket already listening at *path*, which appears only once it listens.

    Bound and listening under a temporary name first, then renamed into place
    (atomic): a worker that finds ``<node>.sock`` can always connect to it. A
    socket bound at its final name would be visible before listen(), and a
    peer starting at that moment would get ECONNREFUSED, take the socket for
    a dead worker's and unlink it.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temporary))
        os.chmod(temporary, 0o600)
        sock.listen(1024)
        os.rename(temporary, path)
    except BaseException:
        sock.close()
        temporary.unlink(missing_ok=True)
        raise
    sock.setblocking(False)
    return sock


def _node_ids_in(directory: Path) -> list[str]:
    """Node ids with a socket in *directory* (run in an executor: it reads the filesystem)."""
    with os.scandir(directory) as entries:
        names = [entry.name[: -len(".sock")] for entry in entries if entry.name.endswith(".sock")]
    return [name for name in names if is_node_id(name)]


def _target(envelope: Envelope) -> str:
    return f"group {envelope.group!r}" if envelope.kind.startswith("group_") else envelope.connection_id


def _raise_first(results: Iterable[object]) -> None:
    """Re-raise the first exception among gathered *results*, after all of them finished."""
    for result in results:
        if isinstance(result, BaseException):
            raise result
