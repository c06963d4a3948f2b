"""The server of the scale benchmark (``benchmarks/scale.py``), served by gunicorn.

Every websocket on ``/ws/`` joins one group and then only answers the
heartbeat. ``POST /trigger/`` sends one 64-byte text message to that group
with :func:`wsframe.send_message_to_group` (this worker's members directly,
the other workers through the backend) and answers
``{"pid": ..., "local_members": ..., "seconds": ...}`` once the send returned.

Environment (set by the driver): ``SCALE_BACKEND`` is a backend URL
(``redis://...``) or empty for the default (the local IPC backend under
gunicorn); ``SCALE_HEARTBEAT`` is the heartbeat in seconds (empty: wsframe's
default, 25 s); ``SCALE_GC_LOG`` is a directory where each worker writes, at
shutdown, ``<pid>.json``: every garbage collection of generation 1 and 2 as
``[start, seconds, generation]`` (``time.monotonic()``) and the total time spent in
generation-0 collections. ``SCALE_GC_FREEZE`` (seconds, empty: off) makes each
worker call ``gc.freeze()`` that often, moving every object alive then out of
the collector's reach: long-lived connection objects are no longer traversed by
full collections (a tuning experiment, not a default).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import time
from typing import Any

from aiohttp import web

__all__ = ["GROUP", "MESSAGE", "make_app"]

GROUP = "everyone"
"""The group every connection joins."""

MESSAGE = "m" * 64
"""The 64-byte text message ``POST /trigger/`` sends to the group."""


class GcLog:
    """Times every garbage collection of this process through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.young_seconds = 0.0
        self.young_count = 0
        self.collections: list[tuple[float, float, int]] = []

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if phase == "start":
            self.started = now
        elif info["generation"] == 0:
            self.young_seconds += now - self.started
            self.young_count += 1
        else:
            self.collections.append((self.started, now - self.started, info["generation"]))

    def write(self, directory: str) -> None:
        """Write ``<directory>/<pid>.json``; an unwritable directory raises ``OSError``."""
        record: dict[str, Any] = {"young_seconds": self.young_seconds, "young_count": self.young_count}
        record["collections"] = self.collections
        with open(os.path.join(directory, f"{os.getpid()}.json"), "w") as file:
            json.dump(record, file)


async def make_app() -> web.Application:
    """Return the app gunicorn serves (an async factory, as ``aiohttp.GunicornWebWorker`` accepts).

    Raises :class:`~wsframe.exceptions.ConfigurationError` for a bad
    ``SCALE_BACKEND`` URL and ``ValueError`` for a ``SCALE_HEARTBEAT`` that is not a number.
    """
    from wsframe import GenericWebsocket, create_app, send_message_to_group
    from wsframe.registry import REGISTRY_KEY

    class Member(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.join_group(GROUP)

    async def trigger(request: web.Request) -> web.Response:
        started = time.monotonic()
        await send_message_to_group(GROUP, MESSAGE)
        seconds = time.monotonic() - started
        local = len(request.app[REGISTRY_KEY].groups.get(GROUP, ()))
        return web.json_response({"pid": os.getpid(), "local_members": local, "seconds": seconds})

    heartbeat = os.environ.get("SCALE_HEARTBEAT", "")
    app = create_app(
        {"ws/": Member, "trigger/": trigger},
        backend=os.environ.get("SCALE_BACKEND") or None,
        heartbeat=float(heartbeat) if heartbeat else None,
    )
    gc_directory = os.environ.get("SCALE_GC_LOG")
    if gc_directory:
        log = GcLog()
        gc.callbacks.append(log)

        async def write_gc_log(app: web.Application) -> None:
            gc.callbacks.remove(log)
            log.write(gc_directory)

        app.on_cleanup.append(write_gc_log)
    freeze_every = os.environ.get("SCALE_GC_FREEZE", "")
    if freeze_every:
        app.cleanup_ctx.append(_freezer(float(freeze_every)))
    return app


def _freezer(seconds: float) -> Any:
    async def freeze_periodically(app: web.Application) -> Any:
        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                gc.freeze()

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return freeze_periodically
