"""History as values: the History setting, the longest-prefix rule, frames, and the in-process store."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from wsframe import ConfigurationError, History, Joined, create_app
from wsframe.backends._history import POSITION_TTL, MemoryHistory, covers
from wsframe.config import APP_ONLY, SETTINGS_KEY
from wsframe.history import (
    check_history,
    check_since,
    decode_history_frame,
    encode_history_data,
    history_frame,
    not_recovered_frame,
    rule_for,
)


@pytest.mark.parametrize("size", [0, -1, 1.5, "10", True, None])
def test_a_size_that_is_not_a_whole_number_of_at_least_one_is_refused_naming_size(size: Any) -> None:
    with pytest.raises(ConfigurationError, match="History size"):
        History(size=size, ttl=10)


@pytest.mark.parametrize("ttl", [0, -5, float("inf"), float("nan"), "60", None, False])
def test_a_ttl_that_is_not_a_positive_number_is_refused_naming_ttl(ttl: Any) -> None:
    with pytest.raises(ConfigurationError, match="History ttl"):
        History(size=10, ttl=ttl)


def test_a_valid_history_keeps_its_values() -> None:
    assert (History(size=1, ttl=0.5).size, History(size=1, ttl=0.5).ttl) == (1, 0.5)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (["chat:"], "history must map"),
        ({"": History(1, 1)}, "non-empty str"),
        ({3: History(1, 1)}, "non-empty str"),
        ({"chat:": 100}, "must be a History"),
    ],
)
def test_create_app_refuses_a_bad_history_setting_naming_it(value: Any, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        create_app({}, history=value)


def test_history_is_an_app_level_setting_read_only_once_given() -> None:
    settings = create_app({}, history={"chat:": History(5, 10)})[SETTINGS_KEY]
    assert "history" in APP_ONLY
    assert dict(settings.history or {}) == {"chat:": History(5, 10)}
    with pytest.raises(TypeError):
        settings.history["x:"] = History(1, 1)  # type: ignore[index]


def test_check_history_of_none_is_an_empty_mapping() -> None:
    assert dict(check_history(None)) == {}


def test_the_longest_matching_prefix_wins() -> None:
    rules = {"chat:": History(100, 60), "chat:vip:": History(5, 60), "news": History(7, 60)}
    assert rule_for(rules, "chat:vip:1") == History(5, 60)
    assert rule_for(rules, "chat:1") == History(100, 60)
    assert rule_for(rules, "newsroom") == History(7, 60)
    assert rule_for(rules, "room:1") is None


def test_a_message_frame_holds_group_epoch_offset_and_the_data_as_json() -> None:
    frame = history_frame("chat:1", "e1", 7, encode_history_data("hi"))
    assert msgspec.json.decode(frame) == {"group": "chat:1", "epoch": "e1", "offset": 7, "data": "hi"}
    assert msgspec.json.decode(history_frame("g", "e", 1, encode_history_data({"a": [1]})))["data"] == {"a": [1]}


def test_the_not_recovered_frame_says_so_with_the_position_delivery_goes_on_after() -> None:
    assert msgspec.json.decode(not_recovered_frame("chat:1", "e2", 40)) == {
        "group": "chat:1",
        "recovered": False,
        "epoch": "e2",
        "offset": 40,
    }


@pytest.mark.parametrize("data", [b"raw", bytearray(b"raw"), memoryview(b"raw")])
def test_bytes_for_a_history_group_raise_type_error(data: Any) -> None:
    with pytest.raises(TypeError, match="JSON only"):
        encode_history_data(data)


def test_decode_history_frame_reads_both_kinds() -> None:
    message = decode_history_frame(history_frame("g", "e", 3, b"[1]"))
    assert (message.group, message.position, message.data, message.recovered) == ("g", ("e", 3), [1], True)
    signal = decode_history_frame(not_recovered_frame("g", "e", 3))
    assert (signal.recovered, signal.data, signal.position) == (False, None, ("e", 3))


def test_decode_history_frame_refuses_another_json_object() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_history_frame(b'{"n": 1}')


def test_joined_position_is_none_without_history() -> None:
    assert Joined(True).position is None
    assert Joined(False, "e", 4).position == ("e", 4)


@pytest.mark.parametrize(
    ("since", "top", "first_kept", "expected"),
    [
        (5, 5, None, True),  # nothing missed, even with nothing kept
        (4, 5, 5, True),
        (3, 5, 5, False),  # offset 4 is gone
        (0, 5, 1, True),
        (6, 5, 1, False),  # ahead of the epoch: not its history
        (-1, 5, 1, False),
        (2, 5, None, False),
    ],
)
def test_covers(since: int, top: int, first_kept: int | None, expected: bool) -> None:
    assert covers(since, top, first_kept) is expected


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_history_numbers_each_group_from_one_in_one_epoch() -> None:
    history = MemoryHistory()
    rule = History(10, 60)
    first = [history.append("a", b"1", rule), history.append("a", b"2", rule), history.append("b", b"1", rule)]
    assert [offset for _, offset in first] == [1, 2, 1]
    assert first[0][0] == first[1][0] != first[2][0]


def test_memory_history_replays_everything_after_a_position() -> None:
    history = MemoryHistory()
    rule = History(10, 60)
    epoch, _ = history.append("a", b'"x"', rule)
    history.append("a", b'"y"', rule)
    history.append("a", b'"z"', rule)
    read = history.read("a", (epoch, 1), rule)
    assert (read.recovered, read.epoch, read.offset, read.entries) == (True, epoch, 3, ((2, b'"y"'), (3, b'"z"')))


def test_memory_history_keeps_only_the_last_size_messages() -> None:
    history = MemoryHistory()
    rule = History(3, 60)
    epoch = ""
    for n in range(1, 8):
        epoch, _ = history.append("a", str(n).encode(), rule)
    assert history.read("a", (epoch, 4), rule).entries == ((5, b"5"), (6, b"6"), (7, b"7"))
    older = history.read("a", (epoch, 3), rule)
    assert (older.recovered, older.entries, older.offset) == (False, (), 7)


def test_memory_history_does_not_replay_messages_older_than_ttl() -> None:
    clock = Clock()
    history = MemoryHistory(clock)
    rule = History(10, 30)
    epoch, _ = history.append("a", b"1", rule)
    clock.now += 20
    history.append("a", b"2", rule)
    clock.now += 15  # the first is 35 s old, the second 15 s
    assert history.read("a", (epoch, 1), rule).entries == ((2, b"2"),)
    assert history.read("a", (epoch, 0), rule).recovered is False


def test_memory_history_refuses_another_epoch() -> None:
    history = MemoryHistory()
    rule = History(10, 60)
    history.append("a", b"1", rule)
    read = history.read("a", ("not-this-epoch", 0), rule)
    assert (read.recovered, read.entries, read.offset) == (False, (), 1)


def test_memory_history_starts_a_new_epoch_for_a_group_idle_past_the_position_ttl() -> None:
    clock = Clock()
    history = MemoryHistory(clock)
    rule = History(10, 60)
    epoch, _ = history.append("a", b"1", rule)
    clock.now += POSITION_TTL + 1
    read = history.read("a", (epoch, 1), rule)
    assert (read.recovered, read.offset) == (False, 0)
    assert read.epoch != epoch


def test_reading_a_group_never_sent_to_makes_its_epoch_at_offset_zero() -> None:
    history = MemoryHistory()
    read = history.read("fresh", None, History(10, 60))
    assert (read.recovered, read.offset, len(read.epoch)) == (True, 0, 16)
    assert history.read("fresh", (read.epoch, 0), History(10, 60)).recovered is True


def test_check_since_takes_a_str_and_an_int_as_a_tuple_or_a_list() -> None:
    assert check_since(None) is None
    assert check_since(("e", 3)) == ("e", 3)
    assert check_since(["e", 3]) == ("e", 3)


@pytest.mark.parametrize("since", [("e", "3"), (3, 3), ("e", True), ("e",), "e:3", {"epoch": "e", "offset": 3}])
def test_check_since_refuses_anything_else_saying_what_it_takes(since: Any) -> None:
    with pytest.raises(TypeError, match=r"since must be None or \(epoch, offset\)"):
        check_since(since)
