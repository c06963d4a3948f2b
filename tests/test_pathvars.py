"""Path-variable conversion by connect()'s type hints."""

from __future__ import annotations

import enum
import uuid
from typing import Any

import pytest

from wsframe import ConfigurationError
from wsframe.pathvars import PathConverters


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


def convert_one(annotation: Any, value: str) -> Any:
    async def connect(self: Any, v: Any) -> None: ...

    connect.__annotations__ = {"v": annotation, "return": None}  # a real object, not a string
    converters = PathConverters.for_function(connect, ["v"], "test")
    result = converters.convert({"v": value})
    return None if result is None else result["v"]


U = uuid.UUID("12345678-1234-5678-1234-567812345678")


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        (str, "abc", "abc"),
        (int, "42", 42),
        (int, "-7", -7),
        (int, "007", 7),
        (float, "1.5", 1.5),
        (float, "-2e3", -2000.0),
        (float, ".5", 0.5),
        (bool, "true", True),
        (bool, "False", False),
        (bool, "1", True),
        (bool, "0", False),
        (uuid.UUID, str(U), U),
        (Color, "red", Color.RED),
        (Level, "2", Level.HIGH),
        (int | None, "5", 5),
    ],
)
def test_value_converts(annotation: Any, value: str, expected: Any) -> None:
    assert convert_one(annotation, value) == expected


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (int, "abc"),
        (int, "1.5"),
        (int, "1e3"),
        (float, "x"),
        (float, "nan"),
        (float, "inf"),
        (float, "1_0"),
        (float, " 1"),
        (bool, "yes"),
        (uuid.UUID, "nope"),
        (Color, "green"),
    ],
)
def test_value_that_does_not_convert_gives_none(annotation: Any, value: str) -> None:
    assert convert_one(annotation, value) is None


def test_string_annotations_are_resolved() -> None:
    # This module has `from __future__ import annotations`: every hint is a string.
    async def connect(self: Any, user_id: int, room_id: str) -> None: ...

    converters = PathConverters.for_function(connect, ["user_id", "room_id"], "test")
    assert converters.convert({"user_id": "3", "room_id": "r"}) == {"user_id": 3, "room_id": "r"}


def test_missing_annotation_means_str() -> None:
    async def connect(self, name):  # type: ignore[no-untyped-def]
        ...

    assert PathConverters.for_function(connect, ["name"], "test").convert({"name": "7"}) == {"name": "7"}


def test_var_keyword_receives_undeclared_variables_as_str() -> None:
    async def connect(self: Any, **path_variables: Any) -> None: ...

    assert PathConverters.for_function(connect, ["a"], "test").convert({"a": "1"}) == {"a": "1"}


def test_unresolvable_hint_is_a_configuration_error() -> None:
    async def connect(self: Any, v: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigurationError, match="cannot resolve the type hints of connect"):
        PathConverters.for_function(connect, ["v"], "test")


class Opaque:
    pass


def test_type_without_string_conversion_is_a_configuration_error() -> None:
    async def connect(self: Any, v: Opaque) -> None: ...

    with pytest.raises(ConfigurationError, match="cannot be converted from a path segment"):
        PathConverters.for_function(connect, ["v"], "test")
