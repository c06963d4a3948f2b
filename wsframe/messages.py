"""Typed messages: decoding frames into the type ``receive()`` asks for.

``async def receive(self, data: ChatMessage)`` (a msgspec Struct, a tagged
union of Structs, a TypedDict, ``dict``, ``list``...) makes wsframe decode
each frame as JSON and validate it before ``receive`` runs. ``str``,
``bytes``, ``str | bytes``, ``Any`` or no annotation keep the raw frame. The
decoder is built once per handler class, when the url table is compiled.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from .exceptions import ConfigurationError

__all__ = ["MessageDecoder", "decoder_for", "describe_error"]

MessageDecoder = Callable[[str | bytes], Any]

_RAW = {str, bytes, bytearray, Any, inspect.Parameter.empty, type(None)}


def _is_raw(tp: Any) -> bool:
    if tp in _RAW:
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return all(_is_raw(arg) for arg in typing.get_args(tp))
    return False


def decoder_for(receive: Callable[..., Any], where: str) -> MessageDecoder | None:
    """Return the decoder for *receive*'s ``data`` annotation, or None for raw frames.

    Raises :class:`ConfigurationError` naming *where* when the annotation is
    not a type msgspec can decode JSON into.
    """
    params = list(inspect.signature(receive).parameters.values())
    if len(params) < 2:
        return None
    name = params[1].name
    try:
        hints = typing.get_type_hints(receive)
    except Exception as exc:
        raise ConfigurationError(f"{where}: cannot resolve the type hints of receive(): {exc}") from exc
    tp = hints.get(name, inspect.Parameter.empty)
    if _is_raw(tp):
        return None
    try:
        info = msgspec.inspect.type_info(tp)
        decoder = msgspec.json.Decoder(tp)
    except TypeError as exc:
        raise ConfigurationError(f"{where}: receive() annotation {tp!r} cannot be decoded from JSON: {exc}") from exc
    if isinstance(info, msgspec.inspect.CustomType):
        raise ConfigurationError(
            f"{where}: receive() annotation {tp!r} cannot be decoded from JSON; use a msgspec Struct, "
            "a TypedDict, a dataclass, dict, list or a union of Structs."
        )
    return decoder.decode


def describe_error(error: Exception) -> str:
    """A short, client-safe description of why a message was refused (names the field)."""
    if isinstance(error, msgspec.ValidationError):
        return f"Invalid message: {error}"
    return "Invalid message: malformed JSON"
