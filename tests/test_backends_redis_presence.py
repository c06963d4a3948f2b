"""What a node writes back to Redis for presence, and how it counts the group sends it missed: no Redis.

:class:`Presence` builds its refresh pipeline from the node's own members and the leaves still to
repeat; :class:`GroupLosses` numbers sends per group and finds the numbers missing from those
heard. Both are driven here directly, with a node of fixed members.
"""

from __future__ import annotations

import time
from typing import Any

from wsframe.backends.base import Envelope
from wsframe.backends.redis._listener import RedisBackendStats
from wsframe.backends.redis._presence import GroupLosses, Presence

NODE = "aaaaaaaa"
OTHER = "bbbbbbbb"


class Here:
    """A node whose members are what the test put in ``groups``."""

    node_id = NODE

    def __init__(self, groups: dict[str, list[str]]) -> None:
        self.groups = groups

    async def deliver_envelope(self, envelope: Envelope) -> None:
        raise AssertionError("presence never delivers")

    def local_members(self, group: str) -> list[str]:
        return list(self.groups.get(group, []))

    def local_groups(self) -> list[str]:
        return list(self.groups)


def presence(groups: dict[str, list[str]]) -> Presence:
    return Presence(
        Here(groups), prefix="p:", ttl=15.0, operation_timeout=0.5, max_backoff=1.0, stats=RedisBackendStats()
    )


def refresh_commands(p: Presence) -> list[tuple[Any, ...]]:
    """The refresh's commands on liveness and member sets (the nodes-per-group ones are tested apart)."""
    return [command for command in p._commands()[0] if command[0] in {"SET", "SADD", "SREM"}]


def member(digit: str) -> str:
    return NODE + digit * 24


def test_a_refresh_sets_the_liveness_key_with_the_ttl_and_adds_every_local_member_per_group() -> None:
    p = presence({"red": [member("1"), member("2")], "blue": [member("3")]})
    assert refresh_commands(p) == [
        ("SET", f"p:alive:{NODE}", b"1", "PX", 15000),
        ("SADD", "p:members:red", member("1"), member("2")),
        ("SADD", "p:members:blue", member("3")),
    ]


def test_a_refresh_lists_this_node_among_each_groups_nodes_until_the_ttl_and_drops_expired_ones() -> None:
    before = int(time.time() * 1000)
    commands = [c for c in presence({"red": [member("1")]})._commands()[0] if c[0].startswith("Z")]
    after = int(time.time() * 1000)
    (zadd, key, expires, node), (trim, trimmed_key, low, now) = commands
    assert (zadd, key, node, trim, trimmed_key, low) == (
        "ZADD",
        "p:nodes:red",
        NODE,
        "ZREMRANGEBYSCORE",
        "p:nodes:red",
        "-inf",
    )
    assert before <= now <= after
    assert expires == now + 15000


def test_a_leave_is_removed_again_by_the_refreshes_before_the_members_are_added() -> None:
    p = presence({"red": [member("1")]})
    p.left("red", [member("2")])
    assert refresh_commands(p)[1:] == [("SREM", "p:members:red", member("2")), ("SADD", "p:members:red", member("1"))]


def test_a_member_that_joins_again_is_no_longer_removed_by_the_refreshes() -> None:
    p = presence({"red": [member("1")]})
    p.left("red", [member("1")])
    p.joined("red", member("1"))
    assert refresh_commands(p)[1:] == [("SADD", "p:members:red", member("1"))]
    assert p.pending_leaves == 0


def group_send(number: int, origin: str = OTHER, group: str = "red") -> Envelope:
    return Envelope("group_send", "", group=group, origin=origin, seq=number)


def test_sends_are_numbered_from_one_per_group() -> None:
    losses = GroupLosses(RedisBackendStats())
    assert [losses.next_number("red"), losses.next_number("red"), losses.next_number("blue")] == [1, 2, 1]


def test_numbers_skipped_by_a_sender_are_counted_as_missed_sends_and_member_deliveries() -> None:
    stats = RedisBackendStats()
    losses = GroupLosses(stats)
    for number in (1, 2, 5, 6, 9):
        losses.heard(group_send(number), members_here=3)
    assert (stats.group_missed, stats.group_member_deliveries_missed) == (4, 12)


def test_the_first_send_heard_from_a_sender_and_unnumbered_sends_count_nothing() -> None:
    stats = RedisBackendStats()
    losses = GroupLosses(stats)
    losses.heard(group_send(7), members_here=1)
    losses.heard(group_send(0), members_here=1)
    losses.heard(group_send(3, origin="cccccccc"), members_here=1)
    assert stats.group_missed == 0


def test_senders_and_groups_are_numbered_apart() -> None:
    stats = RedisBackendStats()
    losses = GroupLosses(stats)
    for envelope in (group_send(1), group_send(1, group="blue"), group_send(2), group_send(2, group="blue")):
        losses.heard(envelope, members_here=1)
    assert stats.group_missed == 0


def test_a_group_left_by_its_last_member_here_starts_afresh() -> None:
    stats = RedisBackendStats()
    losses = GroupLosses(stats)
    losses.heard(group_send(1), members_here=1)
    losses.forget("red")
    losses.heard(group_send(40), members_here=1)
    assert stats.group_missed == 0
