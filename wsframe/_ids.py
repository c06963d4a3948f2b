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
_GROUP_NAME = re.compile(r"[A-Za-z0-9_.:@=+-]{1,128}")


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

    Names are 1-128 letters, digits and ``_ . : @ = + -``: no spaces, no
    glob characters, so a name can never match another group's channel.
    """
    if type(group) is str and group in _valid_names:
        return group
    if not isinstance(group, str) or not _GROUP_NAME.fullmatch(group):
        raise InvalidGroupNameError(
            f"invalid group name {group!r}: use 1-128 letters, digits and the characters _ . : @ = + -"
        )
    if len(_valid_names) >= _VALID_NAMES_KEPT:
        _valid_names.clear()
    _valid_names.add(group)
    return group


# Names already checked: a set lookup instead of a regex match on every join
# (a chat app joins the same few rooms all day). Bounded: per-user group names
# would otherwise grow it forever.
_valid_names: set[str] = set()
_VALID_NAMES_KEPT = 4096
