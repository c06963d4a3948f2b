"""The ``wsframe`` command: ``wsframe run module:app`` and ``wsframe routes module:app``."""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from aiohttp import web

from . import __version__

__all__ = ["main", "load_app"]


def load_app(target: str) -> web.Application:
    """Import ``module:attribute`` and return the application it names.

    The attribute may be an application or a function returning one. The
    current directory is importable, as with ``python -m``. Raises
    ``SystemExit`` with a message saying what to fix when it cannot.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise SystemExit(f"wsframe: expected module:attribute (e.g. samples.book.main:app), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise SystemExit(
                f"wsframe: cannot import {module_name!r}: {exc}. Run from the folder that holds it."
            ) from None
        raise
    try:
        obj = getattr(module, attribute)
    except AttributeError:
        raise SystemExit(f"wsframe: module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(obj, web.Application) and callable(obj):
        obj = obj()
    if not isinstance(obj, web.Application):
        raise SystemExit(f"wsframe: {target} is a {type(obj).__name__}, not an aiohttp Application")
    return obj


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return the event loop constructor for --loop, or None for asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # the optional speed extra
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("wsframe: --loop uvloop needs uvloop: pip install 'wsframe[speed]'") from None
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
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise SystemExit(
                f"wsframe: cannot listen on {args.host}:{args.port}: {exc.strerror}. Pick another --port."
            ) from None
        raise
    return 0


def _routes(args: argparse.Namespace) -> int:
    from .app import ROUTES_KEY

    app = load_app(args.app)
    routes = app.get(ROUTES_KEY)
    if routes is None:
        raise SystemExit(f"wsframe: {args.app} was not made by wsframe.create_app()")
    rows = [(r.kind, r.path, f"{r.target.__module__}.{r.target.__qualname__}") for r in routes]
    width = max((len(path) for _, path, _ in rows), default=4)
    for kind, path, target in rows:
        print(f"{kind:<9} {path:<{width}}  {target}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wsframe`` console script and ``python -m wsframe``."""
    parser = argparse.ArgumentParser(prog="wsframe", description="Run and inspect wsframe applications.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve an app in one process (development)")
    run.add_argument("app", help="module:attribute of the application, e.g. samples.book.main:app")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or insist on one",
    )
    run.set_defaults(func=_run)
    routes = commands.add_parser("routes", help="print the compiled url table")
    routes.add_argument("app")
    routes.set_defaults(func=_routes)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
