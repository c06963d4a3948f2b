"""Converting path variables by the type hints of ``connect()``.

The converters are built once per handler class when the url table is
compiled, so a request only pays for the conversion itself. A value that does
not convert means the URL names nothing: the handler answers 404.
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from .exceptions import ConfigurationError

__all__ = ["PathConverters", "converter_for"]

Converter = Callable[[str], Any]

_INT = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


class _NoMatch(Exception):
    """A path segment does not convert to the annotated type."""


def _to_int(value: str) -> int:
    if not _INT.fullmatch(value):
        raise _NoMatch
    try:
        return int(value)
    except ValueError:  # past sys.get_int_max_str_digits() (4300): no such resource
        raise _NoMatch from None


_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _to_float(value: str) -> float:
    # Python's float() also takes 'nan', 'inf', '1_0' and surrounding spaces: not numbers in a URL.
    if not _FLOAT.fullmatch(value):
        raise _NoMatch
    return float(value)


def _to_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _NoMatch


def _to_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _NoMatch from None


def _enum_converter(tp: type[enum.Enum]) -> Converter:
    by_text = {str(member.value): member for member in tp}

    def convert(value: str) -> enum.Enum:
        try:
            return by_text[value]
        except KeyError:
            raise _NoMatch from None

    return convert


def _msgspec_converter(tp: Any) -> Converter:
    def convert(value: str) -> Any:
        try:
            return msgspec.convert(value, tp, strict=False)
        except msgspec.ValidationError:
            raise _NoMatch from None

    return convert


_SIMPLE: dict[Any, Converter] = {str: str, int: _to_int, float: _to_float, bool: _to_bool, uuid.UUID: _to_uuid}


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def converter_for(tp: Any, where: str) -> Converter:
    """Return the function converting a path segment to *tp*.

    Raises :class:`ConfigurationError` naming *where* when *tp* cannot be
    built from a string.
    """
    tp = _unwrap_optional(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return str
    if tp in _SIMPLE:
        return _SIMPLE[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_converter(tp)
    try:
        info = msgspec.inspect.type_info(tp)
    except TypeError:
        info = msgspec.inspect.CustomType(tp)
    if isinstance(info, msgspec.inspect.AnyType):
        return str
    if isinstance(info, msgspec.inspect.CustomType):
        raise ConfigurationError(
            f"{where}: type {tp!r} cannot be converted from a path segment; use str, int, float, "
            "bool, uuid.UUID, an Enum or a msgspec-supported type."
        ) from None
    return _msgspec_converter(tp)


class PathConverters:
    """The converters for one handler's path variables."""

    __slots__ = ("converters",)

    def __init__(self, converters: dict[str, Converter]) -> None:
        self.converters = converters

    @classmethod
    def for_function(cls, func: Callable[..., Any], names: list[str], where: str) -> PathConverters:
        """Build converters for *names* from *func*'s signature and type hints.

        Raises :class:`ConfigurationError` when *func* cannot receive one of
        *names* as a keyword argument, or a hint has no string conversion.
        """
        try:
            hints = typing.get_type_hints(func)
        except Exception as exc:
            raise ConfigurationError(f"{where}: cannot resolve the type hints of connect(): {exc}") from exc
        signature = inspect.signature(func)
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
        converters: dict[str, Converter] = {}
        for name in names:
            param = signature.parameters.get(name)
            if param is None or param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
                if not accepts_any:
                    raise ConfigurationError(
                        f"{where}: the path has variable <{name}> but connect() has no parameter {name!r}; "
                        f"add it, e.g. `async def connect(self, {name}: str)`."
                    )
                converters[name] = str
                continue
            converters[name] = converter_for(hints.get(name, inspect.Parameter.empty), f"{where}, <{name}>")
        for param in list(signature.parameters.values())[1:]:
            required = param.default is inspect.Parameter.empty and param.kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.KEYWORD_ONLY,
            )
            if required and param.name not in converters:
                raise ConfigurationError(
                    f"{where}: connect() requires {param.name!r} but the path has no <{param.name}>; "
                    "add the variable to the path or give the parameter a default."
                )
        return cls(converters)

    def convert(self, values: Mapping[str, str]) -> dict[str, Any] | None:
        """Convert every variable; return None when one of them does not convert."""
        try:
            return {name: conv(values[name]) for name, conv in self.converters.items()}
        except _NoMatch:
            return None
