"""The backend interface: how one process hands a message to another.

A backend only moves encoded envelopes between processes (nodes). The
registry owns connections, encoding and lifecycle; it calls the backend only
for a connection id that does not live in this process. What a backend needs
of the registry is the :class:`Node` protocol: its id, a way to deliver an
envelope, and the local members of a group.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from typing import Literal, Protocol

import msgspec

from ..exceptions import BackendUnavailableError, ConfigurationError
from ..history import History, Position

__all__ = [
    "Backend",
    "BackendStats",
    "Envelope",
    "HistoryRead",
    "Node",
    "check_positive",
    "encode_envelope",
    "decode_envelope",
]


class Envelope(msgspec.Struct, array_like=True, frozen=True):
    """One instruction for the node that owns ``connection_id``, or for a group's members.

    ``kind`` is ``"send"`` (deliver ``payload`` as a frame with ``opcode``) or
    ``"close"`` (close with ``code`` and ``reason``) for one connection;
    ``"group_send"`` / ``"group_close"`` do the same for every local member of
    ``group`` except the ids in ``exclude``. ``origin`` is the sending node, so
    a node that hears its own group publish does not deliver it twice.
    ``seq`` numbers a node's group envelopes per group (1, 2, ...; 0: not
    numbered), so a receiver can count the ones it never got.
    ``epoch`` and ``offset`` are the position of a message to a group with
    history (``""`` and 0 otherwise); ``payload`` is then the message's JSON.
    They come last: the Redis backend's script writes them into the encoded
    envelope. Fields are only ever appended, with defaults, so envelopes from an older
    sender still decode.
    """

    kind: Literal["send", "close", "group_send", "group_close"]
    connection_id: str
    payload: bytes = b""
    opcode: int = 1
    code: int = 1000
    reason: str = ""
    group: str = ""
    exclude: tuple[str, ...] = ()
    origin: str = ""
    seq: int = 0
    epoch: str = ""
    offset: int = 0

    @classmethod
    def group_send(
        cls, group: str, payload: bytes, opcode: int, *, exclude: tuple[str, ...] = (), origin: str
    ) -> Envelope:
        """Return the envelope that delivers *payload* to *group*'s members but *exclude*, sent by *origin*."""
        return cls("group_send", "", payload=payload, opcode=opcode, group=group, exclude=exclude, origin=origin)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def encode_envelope(envelope: Envelope) -> bytes:
    """Serialise *envelope* for the wire (msgpack, array-like)."""
    return _encoder.encode(envelope)


def decode_envelope(data: bytes) -> Envelope:
    """Parse bytes made by :func:`encode_envelope`; raises ``msgspec.DecodeError`` on garbage."""
    return _decoder.decode(data)


class Node(Protocol):
    """What a backend may ask of the process it serves (the registry is one).

    ``node_id`` names this process to the others; ``deliver_envelope`` carries
    out an envelope that arrived for it; ``local_members`` answers who of
    *group* is connected here, ``local_groups`` which groups have members here;
    ``check_history`` is called when a backend's listener is back after an outage.
    """

    node_id: str

    async def deliver_envelope(self, envelope: Envelope) -> None:
        """Carry out *envelope* on this node's connections; may raise on a bug, never on a gone connection."""

    def local_members(self, group: str) -> list[str]:
        """Return the ids of this node's connections in *group* (empty when none is here)."""

    def local_groups(self) -> list[str]:
        """Return the groups with at least one member on this node (what presence re-asserts)."""

    def check_history(self) -> None:
        """Re-read the history of this node's history groups soon: the backend may have lost messages."""


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryRead:
    """A group's position, and the messages after a position asked for when history still has them all.

    ``epoch`` and ``offset`` are the group's current position (offset 0: no
    message yet in this epoch). ``recovered`` is True when ``entries`` holds
    every message after the position asked for (or none was asked for), False
    when history does not cover it; ``entries`` is then empty.
    """

    epoch: str
    offset: int
    recovered: bool
    entries: tuple[tuple[int, bytes], ...] = ()
    """(offset, the message's JSON), in order."""


@dataclasses.dataclass
class BackendStats:
    """The counters every cross-process backend keeps, for monitoring and tests."""

    delivered: int = 0
    """Envelopes received from another node and handed to this process's registry."""
    bad_messages: int = 0
    """Incoming messages that did not decode, or whose delivery raised; skipped."""


def check_positive(name: str, value: object, unit: str = "seconds", *, whole: bool = False) -> float:
    """Return *value* as a float when it is a positive number (a positive ``int`` if *whole*).

    Raises :class:`~wsframe.exceptions.ConfigurationError` naming the option
    *name* and the *unit* it is counted in otherwise.
    """
    if (isinstance(value, int) or (not whole and isinstance(value, float))) and value > 0:
        return float(value)
    raise ConfigurationError(f"{name} must be a positive number of {unit}, got {value!r}")


class Backend(abc.ABC):
    """Moves envelopes to the process that owns a connection.

    Lifecycle: ``on_startup(node)`` when the app starts (after any fork),
    ``on_shutdown()`` when it stops. Implementations deliver incoming envelopes
    through :meth:`_receive` (or :meth:`_decode` then :meth:`_deliver`), which
    call ``node.deliver_envelope`` and keep ``stats`` counted.
    """

    name: str = "backend"
    stats: BackendStats
    _node: Node | None = None
    _label = ""
    """How messages name this backend ("Redis", "IPC"); ``name`` when empty."""
    _starts = "starts it"
    """How on_startup readies this backend, for the "not started" error: "connects to Redis"."""

    async def on_startup(self, node: Node) -> None:  # noqa: B027 - optional hook
        """Start listening for envelopes addressed to ``node.node_id``."""

    async def on_shutdown(self) -> None:  # noqa: B027 - optional hook
        """Stop listening and release connections."""

    @abc.abstractmethod
    async def publish_to_node(self, node_id: str, envelope: Envelope) -> None:
        """Hand *envelope* to node *node_id*.

        Raises :class:`~wsframe.exceptions.BackendUnavailableError` quickly
        when the transport is down; an unknown node is not an error.
        """

    # Groups. The registry delivers to its own members itself; a backend only
    # carries a group send to the other nodes that have members, and keeps the
    # cluster-wide member list. The defaults suit a single process.

    async def publish_to_group(self, group: str, envelope: Envelope) -> None:  # noqa: B027 - optional hook
        """Hand a group envelope to the other nodes that may have members of *group*.

        The registry calls it before it writes to its own members, so a raise
        here means this node's members were not sent the message. Redis
        publishes once on the group's channel, which only nodes with members
        subscribe to; IPC writes it to every other live worker on the machine.
        Raises BackendUnavailableError quickly when the transport is down.
        """

    async def group_joined(self, group: str, connection_id: str, *, first_here: bool) -> None:  # noqa: B027
        """Record that *connection_id* (of this node) joined *group*; *first_here*: no other local member yet."""

    async def group_left(self, group: str, connection_ids: list[str], *, last_here: bool) -> None:  # noqa: B027
        """Record that *connection_ids* left *group*; *last_here*: no local member remains."""

    async def group_members(self, group: str) -> set[str] | None:
        """Return the member ids of *group* on every node, or None when only this node's are known."""
        return None

    # History. A backend that keeps it shares one numbering of each group's
    # messages between every node; the registry orders and fills delivery.

    supports_history = False
    """Whether :meth:`history_publish` and :meth:`history_read` work (``create_app(history=...)`` checks it)."""

    async def history_publish(self, group: str, envelope: Envelope, rule: History) -> Envelope:
        """Append *envelope*'s payload to *group*'s history and hand it to the other nodes, in one step.

        Returns the envelope with its ``epoch`` and ``offset``. Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` as
        :meth:`publish_to_group` does (then it may or may not be in history),
        and ``ConfigurationError`` on a backend without history.
        """
        raise ConfigurationError(f"the {self._label or self.name} backend keeps no group history")

    async def history_read(self, group: str, since: Position | None, rule: History) -> HistoryRead:
        """Return *group*'s position and, when history covers it, every message after *since*.

        Makes the group's epoch when it has none. Raises
        :class:`~wsframe.exceptions.BackendUnavailableError` when the store
        cannot be read, ``ConfigurationError`` on a backend without history.
        """
        raise ConfigurationError(f"the {self._label or self.name} backend keeps no group history")

    # Shared by the backends that carry envelopes between processes.

    def _started(self) -> bool:
        """Whether on_startup has readied the transport; override where more than the node is needed."""
        return self._node is not None

    def _require_started(self) -> Node:
        """Return the node served; raise BackendUnavailableError saying how to start the backend otherwise."""
        node = self._node
        if node is None or not self._started():
            raise BackendUnavailableError(
                f"the {self._label or self.name} backend is not started; "
                f"start the app (its on_startup {self._starts}) first."
            )
        return node

    def _decode(self, data: bytes, where: str) -> Envelope | None:
        """Return the envelope in *data* that arrived on *where*, or None (counted, logged) when it is garbage."""
        try:
            return decode_envelope(data)
        except (msgspec.DecodeError, TypeError) as exc:
            self.stats.bad_messages += 1
            logging.getLogger(f"wsframe.backends.{self.name}").warning(
                "skipping a message on %s that is not a wsframe envelope: %s", where, exc
            )
            return None

    async def _deliver(self, envelope: Envelope) -> None:
        """Hand *envelope* to the node; a delivery that raises is counted, logged and skipped."""
        node = self._node
        if node is None:  # pragma: no cover - receiving starts after on_startup set the node
            return
        try:
            await node.deliver_envelope(envelope)
        except Exception:
            self.stats.bad_messages += 1
            logging.getLogger(f"wsframe.backends.{self.name}").exception(
                "delivering %s to %s failed; skipped", envelope.kind, envelope.connection_id
            )
            return
        self.stats.delivered += 1

    async def _receive(self, data: bytes, where: str) -> None:
        """Decode *data* (arrived on *where*) and deliver it: the one receive path of every backend."""
        envelope = self._decode(data, where)
        if envelope is not None:
            await self._deliver(envelope)
