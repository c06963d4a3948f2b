"""Compiling a ``urls`` table into aiohttp's router.

::

    urls = {
        'ws/book/': BookWebsocket,                 # a GenericWebsocket subclass
        'ws/<user_id>/<room_id>/': UserWebsocket,  # <name> is a path variable
        'notify/<connection_id>/': notify,         # an aiohttp handler (every method)
        'books/': BookView,                        # an aiohttp web.View (by method)
        'api/': {'health/': health},               # a nested table is a prefix
    }

Leading and trailing slashes in keys are optional; every path answers both
with and without its trailing slash. Static segments are tried before
variables at the same position, whatever the order of the table.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .config import Settings
from .exceptions import ConfigurationError
from .handshake import build_handler_config, make_route_handler
from .limits import ConnectionLimiter
from .pathvars import PathConverters
from .registry import current_app
from .websocket import GenericWebsocket

__all__ = ["Route", "compile_urls", "flatten_urls"]

_VARIABLE = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")
_FORBIDDEN = re.compile(r"[<>{}]")


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """One entry of a compiled url table."""

    key: str
    """The table keys that lead here, joined (for error messages)."""
    segments: tuple[str, ...]
    """Path segments; a variable is written ``<name>``."""
    target: Any
    """The websocket class, view class or handler."""

    @property
    def kind(self) -> str:
        """``websocket``, ``view`` or ``http``."""
        if _is_websocket(self.target):
            return "websocket"
        if _is_view(self.target):
            return "view"
        return "http"

    @property
    def variables(self) -> list[str]:
        """Names of the path variables, in order."""
        return [m.group(1) for s in self.segments if (m := _VARIABLE.fullmatch(s))]

    @property
    def path(self) -> str:
        """The path as users write it, with a trailing slash: ``/ws/<user_id>/``."""
        return "/" + "".join(s + "/" for s in self.segments)

    def aiohttp_paths(self) -> list[str]:
        """The aiohttp patterns served: with and then without the trailing slash."""
        if not self.segments:
            return ["/"]
        # aiohttp's default variable pattern [^{}/]+ would 404 a segment holding a brace.
        body = "/" + "/".join(_VARIABLE.sub(r"{\1:[^/]+}", s) for s in self.segments)
        # aiohttp files both under the path without the slash and tries them in
        # the order added: the form the table (and the docs) write comes first.
        return [body + "/", body]


def _is_websocket(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, GenericWebsocket)


def _is_view(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, web.View)


def _is_handler(value: Any) -> bool:
    if isinstance(value, type) or not callable(value):
        return False
    return inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(type(value).__call__)


def _split(key: Any, where: str) -> tuple[str, ...]:
    if not isinstance(key, str):
        raise ConfigurationError(f"{where}: url keys must be strings, got {key!r}")
    segments = tuple(s for s in key.strip().split("/") if s)
    for segment in segments:
        if _FORBIDDEN.search(segment) and not _VARIABLE.fullmatch(segment):
            raise ConfigurationError(
                f"{where}: bad path segment {segment!r}; a variable is a whole segment written <name>"
            )
    return segments


def flatten_urls(urls: Mapping[str, Any]) -> list[Route]:
    """Return every route of *urls*, nested tables expanded, statics before variables.

    Raises :class:`ConfigurationError` naming the offending keys for a value
    that is neither a handler nor a table, a duplicate path, or two different
    variable names at one position of the same prefix.
    """
    if not isinstance(urls, Mapping):
        raise ConfigurationError(f"urls must be a dict of path -> handler, got {type(urls).__name__}")
    routes: list[Route] = []

    def walk(table: Mapping[str, Any], prefix: tuple[str, ...], where: str) -> None:
        for key, value in table.items():
            here = f"{where}[{key!r}]"
            segments = prefix + _split(key, here)
            if isinstance(value, Mapping):
                walk(value, segments, here)
            elif _is_websocket(value) or _is_view(value) or _is_handler(value):
                routes.append(Route(here, segments, value))
            else:
                raise ConfigurationError(
                    f"{here}: {value!r} is neither a GenericWebsocket subclass, an aiohttp web.View, an "
                    "async handler function nor a nested dict"
                )

    walk(urls, (), "urls")
    _check_conflicts(routes)
    # Statics first at every position, so 'ws/new/' wins over 'ws/<id>/' as a user expects.
    routes.sort(key=lambda r: tuple(bool(_VARIABLE.fullmatch(s)) for s in r.segments))
    return routes


def _check_conflicts(routes: list[Route]) -> None:
    shapes: dict[tuple[str, ...], Route] = {}
    variable_at: dict[tuple[tuple[str, ...], int], tuple[str, Route]] = {}
    for route in routes:
        shape = tuple("<>" if _VARIABLE.fullmatch(s) else s for s in route.segments)
        for index, segment in enumerate(route.segments):
            match = _VARIABLE.fullmatch(segment)
            if match is None:
                continue
            slot = (shape[:index], index)
            seen = variable_at.setdefault(slot, (match.group(1), route))
            if seen[0] != match.group(1):
                raise ConfigurationError(
                    f"{seen[1].key} and {route.key}: two different variables at one position "
                    f"(<{seen[0]}> and <{match.group(1)}>); use one name for both"
                )
        other = shapes.setdefault(shape, route)
        if other is not route:
            raise ConfigurationError(f"{other.key} and {route.key}: duplicate path {route.path}")


def compile_urls(
    router: web.UrlDispatcher,
    urls: Mapping[str, Any],
    settings: Settings | None = None,
    limiter: ConnectionLimiter | None = None,
) -> list[Route]:
    """Add every route of *urls* to *router*; returns the routes in match order.

    Websocket classes get *settings* with their own class attributes merged
    over them, and share *limiter* unless they set limits of their own.
    Raises :class:`ConfigurationError` as :func:`flatten_urls` does, and when a
    websocket class's ``connect()`` cannot take the path's variables or its
    ``receive()`` annotation cannot be decoded.
    """
    settings = settings or Settings()
    limiter = limiter or ConnectionLimiter(settings.max_connections, settings.max_connections_per_ip)
    routes = flatten_urls(urls)
    for route in routes:
        target = route.target
        if _is_websocket(target):
            where = f"{route.key} -> {target.__qualname__}"
            converters = PathConverters.for_function(target.connect, route.variables, where)
            config = build_handler_config(target, converters, settings, limiter, where, route.path)
            handler = make_route_handler(target, config)
            for path in route.aiohttp_paths():
                router.add_route("*", path, handler)
        else:
            handler = _with_current_app(target)
            for path in route.aiohttp_paths():
                router.add_route("*", path, handler)
    return routes


def _with_current_app(target: Any) -> Any:
    """Wrap an HTTP handler or View so that send_message_to_websocket() inside it finds its app.

    Only the table's handlers are wrapped (a middleware would also sit on
    every websocket's stack for its whole life). Handlers added to the router
    directly fall back to the one app running in the process.
    """

    @functools.wraps(target)
    async def handler(request: web.Request) -> web.StreamResponse:
        current_app.set(request.app)
        response: web.StreamResponse = await target(request)
        return response

    return handler
