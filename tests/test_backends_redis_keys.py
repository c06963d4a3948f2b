"""The names and the presence rule the Redis backend and the sync Publisher share: pure, no Redis."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from wsframe.backends.redis._keys import (
    alive_key,
    describe_error,
    describe_pool,
    group_channel,
    member_ids,
    members_key,
    node_channel,
    nodes_to_check,
    stale_members,
)

LIVE = "aaaaaaaa"
DEAD = "bbbbbbbb"
OWN = "cccccccc"


def ids(node: str, *digits: str) -> set[str]:
    return {node + digit * 24 for digit in digits}


def test_every_name_lives_under_the_prefix() -> None:
    assert node_channel("app:", LIVE) == "app:node:aaaaaaaa"
    assert group_channel("app:", "room:1") == "app:group:room:1"
    assert members_key("app:", "room:1") == "app:members:room:1"
    assert alive_key("app:", LIVE) == "app:alive:aaaaaaaa"


def test_member_ids_read_bytes_and_str_alike() -> None:
    assert member_ids([b"aaaaaaaa" + b"1" * 24, LIVE + "2" * 24]) == ids(LIVE, "1", "2")


def test_the_nodes_to_check_are_the_owners_of_members_sorted_and_never_this_node() -> None:
    members = ids(DEAD, "1", "2") | ids(LIVE, "3") | ids(OWN, "4")
    assert nodes_to_check(members, own=OWN) == [LIVE, DEAD]
    assert nodes_to_check(members) == [LIVE, DEAD, OWN]


def test_members_of_a_node_whose_liveness_key_expired_are_stale() -> None:
    members = ids(LIVE, "1") | ids(DEAD, "2", "3")
    assert stale_members(members, [LIVE, DEAD], [b"1", None]) == ids(DEAD, "2", "3")


def test_no_member_is_stale_while_every_node_is_alive() -> None:
    members = ids(LIVE, "1") | ids(DEAD, "2")
    assert stale_members(members, [LIVE, DEAD], [b"1", b"1"]) == set()


def test_a_pool_is_described_as_a_url_without_credentials() -> None:
    assert describe_pool({"host": "cache", "port": 6380, "db": 2, "password": "secret"}) == "redis://cache:6380/2"
    assert describe_pool({"path": "/run/redis.sock", "password": "secret"}) == "unix:///run/redis.sock"


def test_an_error_is_described_by_its_type_and_message() -> None:
    assert describe_error(TimeoutError()) == "TimeoutError"
    assert describe_error(OSError("connection refused")) == "OSError: connection refused"


@given(st.text(min_size=1, max_size=256), st.text(min_size=1, max_size=256))
def test_two_group_names_never_share_a_channel_or_a_members_key(first: str, second: str) -> None:
    # SUBSCRIBE matches channels exactly, so names with glob characters stay apart too.
    assume(first != second)
    assert group_channel("app:", first) != group_channel("app:", second)
    assert members_key("app:", first) != members_key("app:", second)


@given(st.text(min_size=1, max_size=256), st.text(alphabet="0123456789abcdef", min_size=8, max_size=8))
def test_no_group_name_gives_a_node_channel(group: str, node: str) -> None:
    assert group_channel("app:", group) != node_channel("app:", node)
