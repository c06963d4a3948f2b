"""An AsyncAPI 3.0 document from an application's url table.

One channel per websocket route (its path variables are the channel's
parameters), a ``receive`` operation for what the handler's ``receive()``
accepts and a ``send`` operation for what it declares it sends, with the
message schemas from msgspec's JSON Schema and the close codes and handshake
refusals the connection can end with. Print it with ``wsframe asyncapi
module:app``, or serve it by putting :func:`asyncapi_handler` in the table::

    class ChatWebsocket(GenericWebsocket):
        send_type = Joined | Said           # what send() is called with

        async def receive(self, data: Say | Who) -> None: ...

    urls = {'ws/chat/<room>/': ChatWebsocket, 'asyncapi.json': asyncapi_handler(title='Chat')}

The generator only reads the app: it never opens a connection or runs a handler.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import re
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from . import status
from .config import SETTINGS_KEY, Settings
from .exceptions import ConfigurationError
from .routing import Route

__all__ = ["SEND_TYPE_ATTRIBUTE", "asyncapi_document", "asyncapi_handler", "encode_document"]

SEND_TYPE_ATTRIBUTE = "send_type"
"""The handler class attribute naming the type its ``send()`` is called with (a Struct, a union of them...)."""

ASYNCAPI_VERSION = "3.0.0"
_REF = "#/components/schemas/{name}"
_RAW = {str, bytes, bytearray, Any, inspect.Parameter.empty, type(None)}


def _members(tp: Any) -> list[Any]:
    """The alternatives of a union, or the type itself."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return [arg for arg in typing.get_args(tp) if arg is not type(None)]
    return [tp]


def _is_raw(tp: Any) -> bool:
    return all(member in _RAW for member in _members(tp)) if tp not in _RAW else True


def _receive_type(handler: type[Any]) -> Any:
    """The annotation of *handler*'s ``receive(data)`` (``str | bytes`` when there is none)."""
    params = list(inspect.signature(handler.receive).parameters.values())
    if len(params) < 2:
        return str | bytes
    try:
        hints = typing.get_type_hints(handler.receive)
    except Exception as exc:
        raise ConfigurationError(f"{handler.__qualname__}: cannot resolve the type hints of receive(): {exc}") from exc
    tp = hints.get(params[1].name, inspect.Parameter.empty)
    return str | bytes if tp in (Any, inspect.Parameter.empty) else tp


def _raw_message(tp: Any, name: str) -> dict[str, Any]:
    members = set(_members(tp))
    text, binary = str in members, bool(members & {bytes, bytearray})
    kind = "A text or binary frame" if text == binary else ("A text frame" if text else "A binary frame")
    message: dict[str, Any] = {
        "name": name,
        "title": name,
        "summary": f"{kind}, any content, as-is (not JSON-decoded).",
    }
    message["contentType"] = "text/plain" if text else "application/octet-stream"
    message["payload"] = {"type": "string"}
    return message


def _message_key(tp: Any, fallback: str) -> str:
    return tp.__name__ if isinstance(tp, type) and issubclass(tp, msgspec.Struct) else fallback


def _struct_messages(tp: Any, fallback: str) -> list[tuple[str, Any]]:
    """(message name, type) pairs: one per Struct of a union of Structs, else one for the whole type."""
    members = _members(tp)
    if all(isinstance(m, type) and issubclass(m, msgspec.Struct) for m in members):
        return [(m.__name__, m) for m in members]
    return [(_message_key(tp, fallback), tp)]


def _fix_schema(node: Any) -> Any:
    """Make msgspec's JSON Schema (2020-12) valid AsyncAPI Schema: its discriminator is the property name."""
    if isinstance(node, dict):
        fixed = {key: _fix_schema(value) for key, value in node.items()}
        if isinstance(fixed.get("discriminator"), dict):
            fixed["discriminator"] = fixed["discriminator"]["propertyName"]
        return fixed
    if isinstance(node, list):
        return [_fix_schema(item) for item in node]
    return node


def _summary(tp: Any) -> str | None:
    doc = inspect.getdoc(tp) if isinstance(tp, type) and tp.__doc__ else None
    return doc.splitlines()[0] if doc else None


def _parameter(name: str, handler: type[Any]) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    # connect()'s hints resolved when the table compiled; should they not now, the name is enough.
    with contextlib.suppress(Exception):
        hints = typing.get_type_hints(handler.connect)
    tp = hints.get(name, str)
    parameter: dict[str, Any] = {
        "description": f"Path variable `{name}`, converted to {_type_name(tp)}; 404 if it does not convert."
    }
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        parameter["enum"] = [str(member.value) for member in tp]
    return parameter


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _close_codes(handler: type[Any], settings: Settings, typed: bool) -> dict[str, str]:
    """The close codes a connection of *handler* can end with, and when (docs/lifecycle.md)."""
    codes = {
        status.WS_1000_NORMAL_CLOSURE: "Closed by the handler or the client"
        + (f", or {settings.idle_timeout:g} s without a message" if settings.idle_timeout else ""),
        status.WS_1001_GOING_AWAY: "Server shutdown or worker restart.",
    }
    if typed:
        codes[status.WS_1007_INVALID_FRAME_PAYLOAD_DATA] = (
            "A message did not decode into the type receive() takes; the reason names the field."
        )
    if settings.rate_limit:
        codes[status.WS_1008_POLICY_VIOLATION] = f"More than {settings.rate_limit:g} messages per second."
    codes[status.WS_1009_MESSAGE_TOO_BIG] = f"A message over {settings.max_message_size} bytes."
    codes[status.WS_1011_INTERNAL_ERROR] = (
        "An exception in connect() or receive() (the traceback stays in the server's log)."
    )
    if settings.slow_consumer == "close":
        codes[status.WS_1013_TRY_AGAIN_LATER] = (
            f"The client read too slowly: over {settings.max_outbound_buffer} bytes waited to be sent."
        )
    codes[status.WS_1000_NORMAL_CLOSURE] += "."
    return {str(code): text for code, text in codes.items()}


def _refusals(route: Route, settings: Settings) -> dict[str, str]:
    """The HTTP answers instead of the upgrade (docs/lifecycle.md)."""
    forbidden = "Origin not allowed (default: same host), or connect() returned without accept()"
    refusals = {"426": "A request without the websocket upgrade."}
    if route.variables:
        refusals["404"] = "A path variable that does not convert."
    if settings.auth is not None:
        refusals["401"] = "Authentication failed."
    refusals["403"] = forbidden + (", or a permission denied it." if settings.permissions else ".")
    if settings.max_connections or settings.max_connections_per_ip:
        refusals["503"], refusals["429"] = (
            "Too many connections on this worker.",
            "Too many connections from this address.",
        )
    refusals["408"] = f"connect() took over {settings.handshake_timeout:g} s to accept or close."
    return dict(sorted(refusals.items()))


def _unique_name(proposed: str, tp: Any, owners: dict[str, Any]) -> str:
    """*proposed*, or a numbered variant when another type (a Struct of the same name elsewhere) has it."""
    name, n = proposed, 2
    while owners.setdefault(name, tp) is not tp:
        name, n = f"{proposed}_{n}", n + 1
    return name


def _channel_id(route: Route, taken: set[str]) -> str:
    base = "_".join(re.sub(r"[^A-Za-z0-9]+", "_", s.strip("<>")).strip("_") for s in route.segments) or "root"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def asyncapi_document(
    app: web.Application,
    *,
    title: str = "wsframe application",
    version: str = "0.1.0",
    description: str | None = None,
    server: str | None = None,
) -> dict[str, Any]:
    """Return the AsyncAPI 3.0 document of *app*'s websocket routes as a JSON-ready dict.

    *server* (``host:port``) adds a ``ws`` server entry. Raises
    :class:`ConfigurationError` when *app* was not made by
    :func:`wsframe.create_app`, or a handler's ``receive()`` or
    ``send_type`` is not a type msgspec can describe.
    """
    from .app import ROUTES_KEY  # app imports routing, which imports this package's handlers

    routes = app.get(ROUTES_KEY)
    if routes is None:
        raise ConfigurationError("this application was not made by wsframe.create_app(); it has no url table")
    app_settings = app.get(SETTINGS_KEY) or Settings()
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    document: dict[str, Any] = {"asyncapi": ASYNCAPI_VERSION, "info": info}
    if server:
        document["servers"] = {"default": {"host": server, "protocol": "ws"}}
    document["defaultContentType"] = "application/json"
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    typed: list[tuple[dict[str, Any], Any]] = []  # (message, type) whose payload comes from msgspec
    taken: set[str] = set()
    owners: dict[str, Any] = {}  # message name -> the type it describes
    for route in routes:
        if route.kind != "websocket":
            continue
        handler = route.target
        settings = app_settings.merged({name: getattr(handler, name, None) for name in _SETTINGS})
        channel_id = _channel_id(route, taken)
        incoming = _receive_type(handler)
        outgoing = getattr(handler, SEND_TYPE_ATTRIBUTE, None)
        where = f"{handler.__qualname__}"
        channel_messages: dict[str, Any] = {}
        directions: dict[str, list[str]] = {}
        for action, tp in (("receive", incoming), ("send", outgoing)):
            if tp is None:
                continue
            pairs = (
                [(f"{handler.__name__}_{action}", tp)]
                if _is_raw(tp)
                else _struct_messages(tp, f"{handler.__name__}_{action}")
            )
            names = []
            for proposed, member in pairs:
                name = _unique_name(proposed, member, owners)
                if name not in messages:
                    if _is_raw(member):
                        messages[name] = _raw_message(member, name)
                    else:
                        message = {"name": name, "title": name}
                        if (summary := _summary(member)) is not None:
                            message["summary"] = summary
                        messages[name] = message
                        typed.append((message, _checked(member, where, action)))
                channel_messages[name] = {"$ref": f"#/components/messages/{name}"}
                names.append(name)
            directions[action] = names
        channel: dict[str, Any] = {"address": re.sub(r"<([A-Za-z_][A-Za-z0-9_]*)>", r"{\1}", route.path)}
        if (doc := _summary(handler)) is not None:
            channel["description"] = doc
        channel["messages"] = channel_messages
        if route.variables:
            channel["parameters"] = {name: _parameter(name, handler) for name in route.variables}
        channel["bindings"] = {"ws": {"method": "GET", "bindingVersion": "0.1.0"}}
        channel["x-wsframe-handler"] = f"{handler.__module__}.{handler.__qualname__}"
        channel["x-wsframe-close-codes"] = _close_codes(handler, settings, not _is_raw(incoming))
        channel["x-wsframe-handshake-refusals"] = _refusals(route, settings)
        channels[channel_id] = channel
        for action, names in directions.items():
            operations[f"{action}_{channel_id}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": _ACTIONS[action],
                "messages": [{"$ref": f"#/channels/{channel_id}/messages/{name}"} for name in names],
            }
    document["channels"] = channels
    document["operations"] = operations
    schemas, components = msgspec.json.schema_components([tp for _, tp in typed], ref_template=_REF)
    for (message, _), schema in zip(typed, schemas, strict=True):
        message["payload"] = _fix_schema(schema)
    document["components"] = {"schemas": _fix_schema(dict(sorted(components.items()))), "messages": messages}
    return document


_ACTIONS = {
    "receive": "What the server accepts: each text frame is JSON decoded into this type before receive() runs.",
    "send": "What the server sends (the handler class's send_type).",
}
_SETTINGS = tuple(name for name in Settings.__dataclass_fields__ if name != "shutdown_timeout")


def _checked(tp: Any, where: str, action: str) -> Any:
    try:
        msgspec.json.schema(tp)
    except (TypeError, ValueError) as exc:
        what = "receive() annotation" if action == "receive" else SEND_TYPE_ATTRIBUTE
        raise ConfigurationError(f"{where}: {what} {tp!r} has no JSON Schema: {exc}") from exc
    return tp


def encode_document(document: Mapping[str, Any]) -> bytes:
    """The document as indented JSON with a final newline (the CLI's output, the route's body)."""
    return msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n"


def asyncapi_handler(
    *, title: str = "wsframe application", version: str = "0.1.0", description: str | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Return an aiohttp handler that serves the app's AsyncAPI document as JSON; put it in the url table.

    The document is built on the first request (the table is complete by
    then) and cached per application; its server is the host the request
    named. A ConfigurationError while building it is a 500 with the
    traceback in the log, as for any handler.
    """
    cache: dict[int, dict[str, Any]] = {}

    async def asyncapi(request: web.Request) -> web.Response:
        document = cache.get(id(request.app))
        if document is None:
            document = cache[id(request.app)] = asyncapi_document(
                request.app, title=title, version=version, description=description
            )
        # The server is whatever host the client used; not cached, so any Host header costs no memory.
        served = {**document, "servers": {"default": {"host": request.host, "protocol": "ws"}}}
        return web.Response(body=encode_document(_ordered(served)), content_type="application/json")

    asyncapi.__qualname__ = "asyncapi_handler"  # what `wsframe routes` shows
    return asyncapi


def _ordered(document: dict[str, Any]) -> dict[str, Any]:
    """The keys in the order asyncapi_document() writes them (servers after info)."""
    order = ["asyncapi", "info", "servers", "defaultContentType", "channels", "operations", "components"]
    return {key: document[key] for key in order if key in document}
