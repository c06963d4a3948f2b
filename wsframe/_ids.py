"""Connection ids, node ids and group names: the vocabulary every layer shares.

A connection id is 32 hex characters: the first 8 are the id of the node (process) that owns
it, the other 24 come from the OS's random source. A send to an id therefore goes to exactly
one process. Ids are unguessable; treat them as capabilities.

This module imports nothing from wsframe but :mod:`wsframe.exceptions`, so every layer
(the registry, the backends, the sync ``Publisher``) can use it.
"""

from __future__ import annotations

import os
import re
import secrets

from .exceptions import InvalidGroupNameError

__all__ = [
    "CONNECTION_ID_LENGTH",
    "MAX_GROUP_NAME_LENGTH",
    "NODE_ID_LENGTH",
    "is_connection_id",
    "is_node_id",
    "new_connection_id",
    "new_node_id",
    "owner_of",
    "validate_group_name",
]

NODE_ID_LENGTH = 8
CONNECTION_ID_LENGTH = 32

_NODE_ID = re.compile(r"[0-9a-f]{8}")
MAX_GROUP_NAME_LENGTH = 256
"""The longest group name, in characters: room names typed by users fit, unbounded ones do not."""


def new_node_id() -> str:
    """Return a fresh random node id (8 lowercase hex characters)."""
    return secrets.token_hex(NODE_ID_LENGTH // 2)


def new_connection_id(node_id: str) -> str:
    """Return a fresh connection id owned by *node_id*."""
    # os.urandom is what secrets.token_hex uses, minus two Python calls per connection.
    return node_id + os.urandom((CONNECTION_ID_LENGTH - NODE_ID_LENGTH) // 2).hex()


def is_node_id(node_id: str) -> bool:
    """Whether *node_id* has the shape of a node id (8 lowercase hex characters)."""
    return _NODE_ID.fullmatch(node_id) is not None


def is_connection_id(connection_id: str) -> bool:
    """Whether *connection_id* has the length of a connection id and starts with a node id."""
    return len(connection_id) == CONNECTION_ID_LENGTH and is_node_id(connection_id[:NODE_ID_LENGTH])


def owner_of(connection_id: str) -> str:
    """Return the node id that owns *connection_id* (its first 8 characters); no validation."""
    return connection_id[:NODE_ID_LENGTH]


def validate_group_name(group: object) -> str:
    """Return *group* if it is a valid group name; raise InvalidGroupNameError saying what is allowed.

    A name is any ``str`` of 1 to :data:`MAX_GROUP_NAME_LENGTH` characters
    that UTF-8 can encode (anything but a lone surrogate): spaces, any
    Unicode letter and ``* ? [ ]`` included, so what users type can name a
    room. Backends use a name only as an exact key or channel, never as a
    pattern, so no name can match another group. The error is a
    ``ValueError``: catch it to refuse the name yourself (close with a 4xxx
    code, or answer 404).
    """
    if isinstance(group, str) and 0 < len(group) <= MAX_GROUP_NAME_LENGTH and (group.isascii() or _encodes(group)):
        return group
    if not isinstance(group, str):
        raise InvalidGroupNameError(f"invalid group name {group!r}: a group name is a str, not {type(group).__name__}")
    shown = group if len(group) <= 40 else f"{group[:40]}..."
    raise InvalidGroupNameError(
        f"invalid group name {shown!r} ({len(group)} characters): use 1-{MAX_GROUP_NAME_LENGTH} characters"
        " that UTF-8 can encode"
    )


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
