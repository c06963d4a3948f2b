"""The ``wsframe`` command: ``wsframe run``, ``wsframe routes`` and ``wsframe asyncapi`` of a ``module:app``.

Every mistake on the command line (a bad argument, a target that does not
import, a :class:`~wsframe.exceptions.ConfigurationError` from the app) ends
the command with one line on stderr saying what to fix, and exit status 2.
Errors inside the application's own code keep their traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import errno
import importlib
import importlib.util
import ipaddress
import logging
import os
import pkgutil
import re
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from aiohttp import web

from . import __version__
from .exceptions import ConfigurationError

__all__ = ["main", "load_app", "UsageError"]

EXAMPLE = "samples.book.main:app"


class UsageError(SystemExit):
    """A command-line mistake; ``str()`` is the one line :func:`main` prints before exiting with 2.

    A SystemExit, so code that calls :func:`load_app` itself and does not
    catch it still stops with the message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show every option's default in ``--help`` and keep descriptions as written."""


def _closest(name: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def _missing_module(module_name: str, missing: str) -> str:
    """Say which part of *module_name* is wrong: the top package (wrong folder) or a submodule (a typo)."""
    parent, _, child = missing.rpartition(".")
    if not parent:
        return (
            f"cannot import {module_name!r}: there is no {missing!r} in the current folder ({os.getcwd()}) "
            "or on sys.path. Run from the folder that holds it, or fix the name."
        )
    try:
        spec = importlib.util.find_spec(parent)
    except ImportError:
        spec = None
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    siblings = sorted(info.name for info in pkgutil.iter_modules(places))
    listed = f" (it has: {', '.join(siblings)})" if siblings else ""
    return (
        f"cannot import {module_name!r}: package {parent!r} has no module {child!r}{_closest(child, siblings)}{listed}"
    )


def load_app(target: str) -> web.Application:
    """Import ``module:attribute`` and return the application it names.

    The attribute may be an application or a function returning one. The
    current directory is importable, as with ``python -m``. Raises
    :class:`UsageError` with a message saying what to fix when the target is
    malformed, its module or attribute does not exist (naming which part is
    wrong), it is not an application, or the app raises ConfigurationError.
    Other exceptions from the application's code propagate unchanged.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"expected module:attribute (e.g. {EXAMPLE}), got {target!r}")
    if "/" in module_name or module_name.endswith(".py"):
        dotted = module_name.removesuffix(".py").strip("/").replace("/", ".")
        raise UsageError(f"{module_name!r} is a file path; write the module's dotted name: {dotted}:{attribute}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise UsageError(_missing_module(module_name, exc.name)) from None
        raise
    except ConfigurationError as exc:
        raise UsageError(f"{module_name} is misconfigured: {exc}") from None
    try:
        obj = getattr(module, attribute)
    except AttributeError:
        apps = [name for name, value in vars(module).items() if isinstance(value, web.Application)]
        hint = _closest(attribute, apps) or (f"; it has {', '.join(apps)}" if apps else "")
        raise UsageError(f"module {module_name!r} has no attribute {attribute!r}{hint}") from None
    if not isinstance(obj, web.Application) and callable(obj):
        try:
            obj = obj()
        except ConfigurationError as exc:
            raise UsageError(f"{target} is misconfigured: {exc}") from None
    if not isinstance(obj, web.Application):
        raise UsageError(f"{target} is a {type(obj).__name__}, not an aiohttp Application")
    return obj


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _host(value: str) -> str:
    with_brackets = value.startswith("[") and value.endswith("]")
    bare = value[1:-1] if with_brackets else value
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if "://" in value or "/" in value:
        raise argparse.ArgumentTypeError(f"{value!r} is a URL; give the host name or address only, e.g. 127.0.0.1")
    if ":" in value:
        raise argparse.ArgumentTypeError(f"{value!r} has a port in it; give the port with --port")
    if not _HOSTNAME.fullmatch(value) or len(value) > 253 or value.replace(".", "").isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a host name or IP address")
    return value


def _server(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{value!r} is not host:port, e.g. 127.0.0.1:8000")
    return f"{_host(host) if not host.startswith('[') else host}:{_port(port)}"


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return the event loop constructor for --loop, or None for asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # the optional speed extra
    except ImportError:
        if choice == "uvloop":
            raise UsageError("--loop uvloop needs uvloop: pip install 'wsframe[speed]'") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = load_app(args.app)
    loop_factory = _loop_factory(args.loop)
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    logging.getLogger("wsframe").info("event loop: %s", type(loop).__module__.split(".")[0])
    try:
        web.run_app(
            app, host=args.host, port=args.port, loop=loop, print=lambda msg: logging.getLogger("wsframe").info(msg)
        )
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on --host {args.host}: {exc.strerror}") from None
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise UsageError(
                f"cannot listen on {args.host}:{args.port}: {exc.strerror}. Pick another --port or --host."
            ) from None
        raise
    except ConfigurationError as exc:  # from the app's startup hooks (a backend URL, a setting)
        raise UsageError(f"{args.app} is misconfigured: {exc}") from None
    return 0


def _routes(args: argparse.Namespace) -> int:
    from .app import ROUTES_KEY

    app = load_app(args.app)
    routes = app.get(ROUTES_KEY)
    if routes is None:
        raise UsageError(f"{args.app} was not made by wsframe.create_app()")
    rows = [(r.kind, r.path, f"{r.target.__module__}.{r.target.__qualname__}") for r in routes]
    width = max((len(path) for _, path, _ in rows), default=4)
    for kind, path, target in rows:
        print(f"{kind:<9} {path:<{width}}  {target}")
    return 0


def _asyncapi(args: argparse.Namespace) -> int:
    from .asyncapi import asyncapi_document, encode_document

    app = load_app(args.app)
    try:
        document = asyncapi_document(
            app, title=args.title, version=args.api_version, description=args.description, server=args.server
        )
    except ConfigurationError as exc:
        raise UsageError(f"{args.app}: {exc}") from None
    sys.stdout.buffer.write(encode_document(document))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wsframe", description="Run and inspect wsframe applications.", formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    target_help = f"module:attribute of the application, e.g. {EXAMPLE}"
    run = commands.add_parser("run", help="serve an app in one process (development)", formatter_class=_Help)
    run.add_argument("app", help=target_help)
    run.add_argument("--host", type=_host, default="127.0.0.1", help="address to listen on")
    run.add_argument("--port", type=_port, default=8000, help="TCP port to listen on")
    run.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="logging threshold"
    )
    run.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="event loop: uvloop when installed (auto), or insist on one",
    )
    run.set_defaults(func=_run)
    routes = commands.add_parser("routes", help="print the compiled url table", formatter_class=_Help)
    routes.add_argument("app", help=target_help)
    routes.set_defaults(func=_routes)
    asyncapi = commands.add_parser(
        "asyncapi", help="print the AsyncAPI 3.0 document of the websocket routes (JSON)", formatter_class=_Help
    )
    asyncapi.add_argument("app", help=target_help)
    asyncapi.add_argument("--title", default="wsframe application", help="info.title of the document")
    asyncapi.add_argument("--api-version", default="0.1.0", help="info.version: the version of your API")
    asyncapi.add_argument("--description", default=None, help="info.description")
    asyncapi.add_argument(
        "--server", type=_server, default=None, help="host:port of a ws server entry, e.g. 127.0.0.1:8000"
    )
    asyncapi.set_defaults(func=_asyncapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wsframe`` console script and ``python -m wsframe``.

    Returns the exit status: 0 on success, 2 after printing a one-line
    ``wsframe: ...`` error for a command-line mistake (see :class:`UsageError`).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], Any] = args.func
    try:
        result: int = func(args)
    except UsageError as exc:
        print(f"wsframe: {exc.message}", file=sys.stderr)
        return 2
    return result
