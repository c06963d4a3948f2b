"""The backend interface: how one process hands a message to another.

A backend only moves encoded envelopes between processes (nodes). The
registry owns connections, encoding and lifecycle; it calls the backend only
for a connection id that does not live in this process.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    from ..registry import Registry

__all__ = ["Backend", "Envelope", "encode_envelope", "decode_envelope"]


class Envelope(msgspec.Struct, array_like=True, frozen=True):
    """One instruction for the node that owns ``connection_id``, or for a group's members.

    ``kind`` is ``"send"`` (deliver ``payload`` as a frame with ``opcode``) or
    ``"close"`` (close with ``code`` and ``reason``) for one connection;
    ``"group_send"`` / ``"group_close"`` do the same for every local member of
    ``group`` except the ids in ``exclude``. ``origin`` is the sending node, so
    a node that hears its own group publish does not deliver it twice.
    Fields are only ever appended, with defaults, so envelopes from an older
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


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def encode_envelope(envelope: Envelope) -> bytes:
    """Serialise *envelope* for the wire (msgpack, array-like)."""
    return _encoder.encode(envelope)


def decode_envelope(data: bytes) -> Envelope:
    """Parse bytes made by :func:`encode_envelope`; raises ``msgspec.DecodeError`` on garbage."""
    return _decoder.decode(data)


class Backend(abc.ABC):
    """Moves envelopes to the process that owns a connection.

    Lifecycle: ``on_startup(registry)`` when the app starts (after any fork),
    ``on_shutdown()`` when it stops. Implementations deliver incoming envelopes
    by calling ``registry.deliver_envelope``.
    """

    name: str = "backend"

    async def on_startup(self, registry: Registry) -> None:  # noqa: B027 - optional hook
        """Start listening for envelopes addressed to ``registry.node_id``."""

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

        Redis publishes once on the group's channel, which only nodes with
        members subscribe to; IPC writes it to every other live worker on the
        machine. Raises BackendUnavailableError quickly when the transport is down.
        """

    async def group_joined(self, group: str, connection_id: str, *, first_here: bool) -> None:  # noqa: B027
        """Record that *connection_id* (of this node) joined *group*; *first_here*: no other local member yet."""

    async def group_left(self, group: str, connection_ids: list[str], *, last_here: bool) -> None:  # noqa: B027
        """Record that *connection_ids* left *group*; *last_here*: no local member remains."""

    async def group_members(self, group: str) -> set[str] | None:
        """Return the member ids of *group* on every node, or None when only this node's are known."""
        return None
