"""Group history as values: the ``History`` setting, the longest-prefix rule, the frames, the join result.

A group whose name starts with a prefix given to ``create_app(history=...)``
keeps its last ``size`` messages for ``ttl`` seconds. Each of its messages has
a position: the group's *epoch* (a random string, new whenever the store lost
the group's history, e.g. a Redis restarted empty) and an *offset* (1, 2, ...
within the epoch). Members get each message as one text frame::

    {"group": "chat:1", "epoch": "9f2c...", "offset": 7, "data": <the message as JSON>}

and when a worker cannot fill a gap from history, each affected member gets::

    {"group": "chat:1", "recovered": false, "epoch": "...", "offset": 41}

where epoch and offset are the position delivery continues after. Only JSON
travels: bytes sent to a history group raise ``TypeError``. No I/O here.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

import msgspec

from .codec import json_encoder
from .exceptions import ConfigurationError

__all__ = [
    "History",
    "Joined",
    "Position",
    "check_history",
    "rule_for",
    "check_since",
    "encode_history_data",
    "history_frame",
    "not_recovered_frame",
    "HistoryFrame",
    "decode_history_frame",
]

Position = tuple[str, int]
"""``(epoch, offset)``: where in a group's history a message, or a client, is."""


@dataclasses.dataclass(frozen=True, slots=True)
class History:
    """Keep the last *size* messages of a group for *ttl* seconds, so members can resume after a reconnect.

    Raises :class:`~wsframe.exceptions.ConfigurationError` naming ``size`` or
    ``ttl`` when *size* is not a whole number >= 1 or *ttl* not a positive
    number of seconds.
    """

    size: int
    """Messages kept per group (the newest ones)."""
    ttl: float
    """Seconds a message is kept; an older one is not replayed."""

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise ConfigurationError(f"History size must be a whole number of messages >= 1, got {self.size!r}")
        ttl = self.ttl
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0 or ttl == float("inf"):
            raise ConfigurationError(f"History ttl must be a positive number of seconds, got {ttl!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class Joined:
    """What ``GenericWebsocket.join_group`` returns.

    ``recovered`` is True when every message after the ``since`` position was
    replayed (or none was asked for), False when history no longer covers it
    (another epoch, or older than the oldest message kept): then nothing was
    replayed. ``epoch`` and ``offset`` are the group's position after the
    replay, to store as the next ``since``; both None for a group without
    history (``recovered`` is then True: there is nothing to recover).
    """

    recovered: bool
    epoch: str | None = None
    offset: int | None = None

    @property
    def position(self) -> Position | None:
        """``(epoch, offset)`` to pass as ``since`` next time, or None for a group without history."""
        if self.epoch is None or self.offset is None:
            return None
        return (self.epoch, self.offset)


def check_history(value: object) -> Mapping[str, History]:
    """Return ``create_app``'s *history* as a read-only mapping of group-name prefix to :class:`History`.

    Raises :class:`~wsframe.exceptions.ConfigurationError` naming ``history``
    for anything but a mapping of non-empty ``str`` prefixes to ``History``.
    """
    if value is None:
        return types.MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"history must map group-name prefixes to History, such as {{'chat:': History(size=100, ttl=300)}}, "
            f"got {type(value).__name__}"
        )
    for prefix, rule in value.items():
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(f"history: a group-name prefix must be a non-empty str, got {prefix!r}")
        if not isinstance(rule, History):
            raise ConfigurationError(f"history: the value for {prefix!r} must be a History, got {rule!r}")
    return types.MappingProxyType(dict(value))


def check_since(since: object) -> Position | None:
    """Return *since* as an ``(epoch, offset)`` tuple (or None); ``TypeError`` saying what is expected otherwise.

    A position is a ``str`` epoch and an ``int`` offset, as a frame or a
    :class:`Joined` gives them; a list of the two (from JSON) is accepted.
    """
    if since is None:
        return None
    if isinstance(since, (tuple, list)) and len(since) == 2:
        epoch, offset = since
        if isinstance(epoch, str) and isinstance(offset, int) and not isinstance(offset, bool):
            return (epoch, offset)
    raise TypeError(f"since must be None or (epoch, offset), a str and an int, got {since!r}")


def rule_for(rules: Mapping[str, History], group: str) -> History | None:
    """Return the :class:`History` of the longest prefix in *rules* that *group* starts with, or None."""
    best: str | None = None
    for prefix in rules:
        if group.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return None if best is None else rules[best]


def encode_history_data(data: Any) -> bytes:
    """Return *data* as the JSON that a history frame's ``data`` holds (a ``str`` becomes a JSON string).

    Raises ``TypeError`` for bytes-like data (history groups carry JSON only)
    and, from msgspec, for data JSON cannot encode.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            "a group with history carries JSON only, not bytes: send a str or a JSON-encodable value "
            "(base64-encode binary data yourself)"
        )
    return json_encoder.encode(data)


def history_frame(group: str, epoch: str, offset: int, data: bytes) -> bytes:
    """Return the text payload ``{"group", "epoch", "offset", "data"}`` for one message (*data*: its JSON)."""
    return b"".join(
        (
            b'{"group":',
            json_encoder.encode(group),
            b',"epoch":',
            json_encoder.encode(epoch),
            b',"offset":',
            str(offset).encode(),
            b',"data":',
            data,
            b"}",
        )
    )


def not_recovered_frame(group: str, epoch: str, offset: int) -> bytes:
    """Return the text payload telling a member that messages of *group* were lost before ``(epoch, offset)``."""
    return json_encoder.encode({"group": group, "recovered": False, "epoch": epoch, "offset": offset})


class HistoryFrame(msgspec.Struct, frozen=True, kw_only=True):
    """One frame a member of a history group gets, decoded (see the module docstring).

    A message has ``recovered`` True and its ``data``; the "not recovered"
    signal has ``recovered`` False, no data, and the position delivery goes
    on after.
    """

    group: str
    epoch: str
    offset: int
    data: Any = None
    recovered: bool = True

    @property
    def position(self) -> Position:
        """``(epoch, offset)``: what to pass as ``since`` to resume after this frame."""
        return (self.epoch, self.offset)


_frame_decoder = msgspec.json.Decoder(HistoryFrame)


def decode_history_frame(text: str | bytes) -> HistoryFrame:
    """Parse a history group's frame; raises ``msgspec.ValidationError`` or ``DecodeError`` (ValueErrors) otherwise."""
    return _frame_decoder.decode(text)
