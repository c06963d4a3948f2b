"""Group history in Redis: the keys, the two Lua scripts, and what their replies mean.

A history group has two keys, both hash-tagged with the group's name so they
share one slot in a Redis Cluster (with the group's shard channel, whose name
carries the same tag):

- ``<prefix>history-meta:{<group>}``, a hash: ``e`` the epoch (made by the
  first script that finds none: a Redis restarted empty starts a new one),
  ``o`` the last offset given out;
- ``<prefix>history:{<group>}``, a stream: one entry per message, id
  ``<offset>-0``, fields ``d`` (the message's JSON) and ``t`` (Redis time, ms).

:data:`PUBLISH` numbers a message, appends it (``XADD MAXLEN ~ size``), sets
both TTLs and publishes the envelope, atomically: a message is in history if
and only if it was published. The envelope's last two fields (epoch, offset)
are written by the script: the caller encodes the envelope with them empty
and passes the bytes before them (:func:`envelope_head`). :data:`READ`
returns the position and, when history still covers a position, every
message after it. Pure: no I/O and no redis import, so the sync ``Publisher``
shares it.
"""

from __future__ import annotations

import dataclasses
import hashlib

from ...exceptions import BackendUnavailableError
from ...history import History, Position
from .._history import POSITION_TTL, new_epoch
from ..base import Envelope, HistoryRead, encode_envelope

__all__ = [
    "Script",
    "PUBLISH",
    "READ",
    "history_key",
    "history_meta_key",
    "envelope_head",
    "publish_arguments",
    "read_arguments",
    "parse_publish",
    "parse_read",
]


@dataclasses.dataclass(frozen=True)
class Script:
    """A Lua script and its SHA1, for ``EVALSHA`` with ``EVAL`` when Redis answers ``NOSCRIPT``."""

    text: str
    sha: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode()).hexdigest())


_MAKE_EPOCH = """
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[2], 'e', epoch, 'o', 0)
  redis.call('DEL', KEYS[1])
end
"""

PUBLISH = Script(
    _MAKE_EPOCH
    + """
-- KEYS: stream, meta, channel. ARGV: new epoch, data, size, ttl ms, position ttl ms,
-- envelope head, PUBLISH or SPUBLISH.
local offset = redis.call('HINCRBY', KEYS[2], 'o', 1)
local now = redis.call('TIME')
local ms = string.format('%.0f', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], string.format('%.0f-0', offset), 'd', ARGV[2], 't', ms)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local receivers = redis.call(ARGV[7], KEYS[3], ARGV[6] .. cmsgpack.pack(epoch) .. cmsgpack.pack(offset))
return {epoch, offset, receivers}
"""
)

READ = Script(
    _MAKE_EPOCH
    + """
-- KEYS: stream, meta. ARGV: new epoch, '1' when a position is given ('0': none), its epoch, its
-- offset, size, ttl ms, position ttl ms.
-- Returns {epoch, top, 1, data...} (every message after the position) or {epoch, top, 0}.
redis.call('PEXPIRE', KEYS[2], ARGV[7], 'NX')
local top = tonumber(redis.call('HGET', KEYS[2], 'o'))
if ARGV[2] ~= '1' then return {epoch, top, 1} end
if ARGV[3] ~= epoch then return {epoch, top, 0} end
local since = tonumber(ARGV[4])
if since == top then return {epoch, top, 1} end
if since > top or since < 0 or since + 1 <= top - tonumber(ARGV[5]) then return {epoch, top, 0} end
local first = string.format('%.0f-0', since + 1)
local entries = redis.call('XRANGE', KEYS[1], first, '+')
if #entries == 0 or entries[1][1] ~= first then return {epoch, top, 0} end
local now = redis.call('TIME')
local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[6])
local fields = entries[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 't' and tonumber(fields[i + 1]) < oldest then return {epoch, top, 0} end
end
local reply = {epoch, top, 1}
for _, entry in ipairs(entries) do
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == 'd' then reply[#reply + 1] = f[i + 1] end
  end
end
return reply
"""
)


def history_key(prefix: str, group: str) -> str:
    """Return the stream holding *group*'s kept messages."""
    return f"{prefix}history:{{{group}}}"


def history_meta_key(prefix: str, group: str) -> str:
    """Return the hash holding *group*'s epoch and last offset."""
    return f"{prefix}history-meta:{{{group}}}"


_TAIL = b"\xa0\x00"
"""An envelope's empty epoch ("") and zero offset, as msgpack: what the script replaces."""


def envelope_head(envelope: Envelope) -> bytes:
    """Return *envelope* (epoch and offset unset) encoded, without its last two fields' values."""
    encoded = encode_envelope(envelope)
    if envelope.epoch or envelope.offset or not encoded.endswith(_TAIL):  # pragma: no cover - a bug of ours
        raise ValueError("envelope_head takes an envelope whose epoch and offset are unset")
    return encoded[: -len(_TAIL)]


def _position_ttl_ms(rule: History) -> int:
    return int(max(POSITION_TTL, rule.ttl) * 1000)


def publish_arguments(
    prefix: str, group: str, channel: str, envelope: Envelope, rule: History, command: str = "PUBLISH"
) -> list[str | bytes | int]:
    """Return ``numkeys, keys..., args...`` for :data:`PUBLISH` of *envelope* (its payload: the JSON)."""
    return [
        3,
        history_key(prefix, group),
        history_meta_key(prefix, group),
        channel,
        new_epoch(),
        envelope.payload,
        rule.size,
        int(rule.ttl * 1000),
        _position_ttl_ms(rule),
        envelope_head(envelope),
        command,
    ]


def read_arguments(prefix: str, group: str, since: Position | None, rule: History) -> list[str | bytes | int]:
    """Return ``numkeys, keys..., args...`` for :data:`READ` from *since* (None: the position only)."""
    epoch, offset = since if since is not None else ("", 0)
    return [
        2,
        history_key(prefix, group),
        history_meta_key(prefix, group),
        new_epoch(),
        "0" if since is None else "1",
        epoch,
        offset,
        rule.size,
        int(rule.ttl * 1000),
        _position_ttl_ms(rule),
    ]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_publish(reply: object, where: str) -> tuple[str, int, int]:
    """Return (epoch, offset, receivers) from :data:`PUBLISH`'s reply; BackendUnavailableError if malformed."""
    if not isinstance(reply, list) or len(reply) != 3:
        raise BackendUnavailableError(f"{where} answered the history script with {reply!r}")
    epoch, offset, receivers = reply
    return _text(epoch), int(offset), int(receivers)


def parse_read(reply: object, since: Position | None, where: str) -> HistoryRead:
    """Return the :class:`HistoryRead` in :data:`READ`'s reply to a read from *since*."""
    if not isinstance(reply, list) or len(reply) < 3:
        raise BackendUnavailableError(f"{where} answered the history read with {reply!r}")
    epoch, top, recovered = _text(reply[0]), int(reply[1]), bool(int(reply[2]))
    if not recovered or since is None:
        return HistoryRead(epoch, top, recovered)
    first = since[1] + 1
    entries = tuple(
        (first + i, data if isinstance(data, bytes) else str(data).encode()) for i, data in enumerate(reply[3:])
    )
    return HistoryRead(epoch, top, True, entries)
