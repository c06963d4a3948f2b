"""The apps the benchmarks serve: wsframe and hand-written raw aiohttp (a ``/ws/`` echo, ``POST /fanout/`` and the
``/trigger/`` websocket, whose every message fans out),
the cross-worker and scale cases' gunicorn apps; ``python -m benchmarks.servers`` serves all but wsframe."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from .harness import percentile

__all__ = ["FANOUT_MESSAGE", "GROUP", "HEARTBEAT", "HISTORY_GROUP", "KINDS", "MAX_MESSAGE_SIZE", "command"]
__all__ += ["cross_worker_app"]
__all__ += ["label", "main", "paced_sends", "raw_app", "scale_app", "wsframe_app"]

FANOUT_MESSAGE = "f" * 64  # The 64-byte text message the fan-out case delivers to every connection.
HEARTBEAT = 25.0  # wsframe's default ping interval: given to the `raw-matched` server (and the peers).
MAX_MESSAGE_SIZE = 1024 * 1024
"""wsframe's default message size limit: given to the ``raw-matched`` server (and the peers)."""
GROUP = "everyone"  # The group every wsframe benchmark connection joins (and the scale case sends to).
HISTORY_GROUP = "history:everyone"  # The cross-worker case's group with history (1,000 messages kept for 60 s).
KINDS = ("raw", "wsframe")  # The two servers every run measures; `raw-matched` and the peers come after them.
LABELS = {"raw": "raw aiohttp", "wsframe": "wsframe", "raw-matched": "raw aiohttp, wsframe's heartbeat"}


def wsframe_app() -> web.Application:
    """wsframe: an echo ``GenericWebsocket`` in one group; ``POST /fanout/`` sends with ``send_message_to_group``,
    ``?via=id`` with ``send_message_to_websocket`` per member, the way an app without groups would."""
    from wsframe import GenericWebsocket, create_app, group_members, send_message_to_group, send_message_to_websocket

    class EchoWebsocket(GenericWebsocket):
        async def connect(self, **path_variables: Any) -> None:
            await self.accept()
            await self.join_group(GROUP)

        async def receive(self, data: str | bytes) -> None:
            await self.send(data)

    class Trigger(GenericWebsocket):
        """``/trigger/``: each message sends the fan-out message to the group; the answer is the send call's time."""

        async def receive(self, data: str | bytes) -> None:
            started = time.perf_counter()
            await send_message_to_group(GROUP, FANOUT_MESSAGE)
            await self.send(json.dumps({"seconds": time.perf_counter() - started}))

    async def fanout(request: web.Request) -> web.Response:
        started = time.perf_counter()
        if request.query.get("via") == "id":
            ids = await group_members(GROUP)
            for connection_id in ids:
                await send_message_to_websocket(connection_id, FANOUT_MESSAGE)
            sent = len(ids)
        else:
            sent = len(await group_members(GROUP))
            started = time.perf_counter()  # counting members is not part of the group send
            await send_message_to_group(GROUP, FANOUT_MESSAGE)
        return web.json_response({"sent": sent, "seconds": time.perf_counter() - started})

    return create_app({"ws/": EchoWebsocket, "fanout/": fanout, "trigger/": Trigger})


def raw_app(*, matched: bool = False) -> web.Application:
    """Raw aiohttp by hand: ``web.WebSocketResponse`` with aiohttp's defaults, or wsframe's when *matched*."""
    clients: set[web.WebSocketResponse] = set()
    settings: dict[str, Any] = {"heartbeat": HEARTBEAT, "max_msg_size": MAX_MESSAGE_SIZE} if matched else {}

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(**settings)
        await ws.prepare(request)
        clients.add(ws)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
        finally:
            clients.discard(ws)
        return ws

    async def trigger(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(**settings)  # not one of the clients: it does not receive the fan-out
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                started = time.perf_counter()
                for target in list(clients):
                    await target.send_str(FANOUT_MESSAGE)
                await ws.send_str(json.dumps({"seconds": time.perf_counter() - started}))
        return ws

    async def fanout(request: web.Request) -> web.Response:
        started = time.perf_counter()
        targets = list(clients)
        for ws in targets:
            await ws.send_str(FANOUT_MESSAGE)
        return web.json_response({"sent": len(targets), "seconds": time.perf_counter() - started})

    app = web.Application()
    app.router.add_get("/ws/", echo)
    app.router.add_post("/fanout/", fanout)
    app.router.add_get("/trigger/", trigger)
    return app


async def paced_sends(
    send: Callable[[str, str], Awaitable[object]], targets: list[str], count: int, rate: float
) -> dict[str, Any]:
    """Call ``send(target, text)`` *count* times at *rate* per second, cycling over *targets*; return the pacing. The
    i-th send is due at ``start + i / rate``, whatever the sends before it took (``achieved_rate`` says whether the
    rate held); each text is the ``CLOCK_MONOTONIC`` nanoseconds of its send call. A send that raises is counted in
    ``errors``. One send at a time: after a stall, a task per send would release a burst."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    errors: list[str] = []
    first_ns = last_ns = 0
    start = loop.time() + 0.005  # the first send is not already late
    for i in range(count):
        due, now = start + i / rate, loop.time()
        # Half a millisecond early is on time: uvloop's clock counts whole milliseconds and rounds a
        # sleep to them, so waiting out less would not sleep at all and the sender would spin.
        while due - now > 0.0005:
            await asyncio.sleep(due - now)
            now = loop.time()
        late.append(now - due)
        last_ns = time.monotonic_ns()
        first_ns = first_ns or last_ns
        try:
            await send(targets[i % len(targets)], str(last_ns))
        except Exception as exc:
            errors.append(repr(exc))
    late.sort()
    span = (last_ns - first_ns) / 1e9
    pacing: dict[str, Any] = {"late_p99_ms": percentile(late, 0.99) * 1000 if late else 0.0, "pid": os.getpid()}
    pacing |= {"achieved_rate": (count - 1) / span if span else 0.0, "first_error": errors[0] if errors else None}
    return {"sent": count - len(errors), "errors": len(errors), **pacing}


async def cross_worker_app() -> web.Application:
    """The cross-worker case's app; ``BENCH_BACKEND``: a ``redis://`` URL, ``fanout:redis://...``, or empty (IPC).
    ``/ws/`` sends ``{"id", "pid"}`` on accept; ``GET /pid/`` answers the worker's pid; ``POST /paced/``
    ``{"targets", "count", "rate"}`` runs :func:`paced_sends`; ``POST /blast/`` ``{"targets", "count",
    "concurrency"}`` sends as fast as *concurrency* senders go; both send to the group ``"group"`` instead when the body
    names one. A client that sends ``join`` joins :data:`GROUP` and the history group :data:`HISTORY_GROUP` (not on
    IPC, which refuses history), then gets ``joined``. Raises ConfigurationError for a bad URL."""
    from wsframe import GenericWebsocket, History, create_app, send_message_to_group, send_message_to_websocket
    from wsframe.backends import RedisBackend

    class FanoutRedisBackend(RedisBackend):
        """Every node listens on one channel; every send goes to all of them (the design wsframe avoids)."""

        def channel_for(self, node_id: str) -> str:
            return f"{self.prefix}all"

    spec = os.environ.get("BENCH_BACKEND", "")

    class Hello(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.send({"id": self.connection_id, "pid": os.getpid()})

        async def receive(self, data: str | bytes) -> None:
            if data == "join":
                await self.join_group(GROUP)
                if spec:
                    await self.join_group(HISTORY_GROUP)
                await self.send("joined")

    def sender(body: dict[str, Any]) -> Callable[[str, str], Awaitable[object]]:
        group = body.get("group")
        if group is None:
            return send_message_to_websocket
        return lambda _target, text: send_message_to_group(group, text)

    async def paced(request: web.Request) -> web.Response:
        spec = await request.json()
        sent = await paced_sends(sender(spec), spec["targets"], spec["count"], spec["rate"])
        return web.json_response(sent)

    async def blast(request: web.Request) -> web.Response:
        spec = await request.json()
        targets: list[str] = spec["targets"]
        cursor, send = iter(range(spec["count"])), sender(spec)

        async def one_sender() -> None:
            for n in cursor:
                await send(targets[n % len(targets)], str(time.monotonic_ns()))

        await asyncio.gather(*(one_sender() for _ in range(spec["concurrency"])))
        return web.json_response({"pid": os.getpid()})

    async def pid(request: web.Request) -> web.Response:
        return web.json_response({"pid": os.getpid()})

    urls = {"ws/": Hello, "paced/": paced, "blast/": blast, "pid/": pid}
    backend = FanoutRedisBackend(spec.removeprefix("fanout:")) if spec.startswith("fanout:") else spec or None
    history = {HISTORY_GROUP: History(size=1000, ttl=60)} if spec else None
    return create_app(urls, backend=backend, heartbeat=0, history=history)


async def scale_app() -> web.Application:
    """The scale case's app: ``/ws/`` joins :data:`GROUP`, ``POST /trigger/`` sends 64 bytes to it. ``SCALE_BACKEND``: a
    URL, or empty (IPC); ``SCALE_HEARTBEAT``: seconds, or empty (wsframe's default); ``SCALE_GC_LOG``: where each
    worker writes its generation 1 and 2 collections (``[start, seconds, generation]``) at shutdown;
    ``SCALE_GC_FREEZE``: call ``gc.freeze()`` every so many seconds."""
    from wsframe import GenericWebsocket, create_app, send_message_to_group

    class Member(GenericWebsocket):
        local = 0  # this worker's members

        async def connect(self) -> None:
            await self.accept()
            await self.join_group(GROUP)
            Member.local += 1

        async def disconnect(self, code: int) -> None:
            Member.local -= 1

    async def trigger(request: web.Request) -> web.Response:
        started = time.monotonic()
        await send_message_to_group(GROUP, "m" * 64)
        return web.json_response({"local_members": Member.local, "seconds": time.monotonic() - started})

    heartbeat, backend = os.environ.get("SCALE_HEARTBEAT", ""), os.environ.get("SCALE_BACKEND") or None
    app = create_app({"ws/": Member, "trigger/": trigger}, backend=backend, heartbeat=float(heartbeat or 0) or None)
    collections: list[tuple[float, float, int]] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.monotonic()
        elif info["generation"] > 0:
            collections.append((started[0], time.monotonic() - started[0], info["generation"]))

    async def freezer(seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            gc.freeze()

    async def gc_log(app: web.Application) -> AsyncIterator[None]:
        directory, freeze = os.environ.get("SCALE_GC_LOG"), os.environ.get("SCALE_GC_FREEZE")
        gc.callbacks.append(on_gc)
        task = asyncio.create_task(freezer(float(freeze))) if freeze else None
        yield
        if task is not None:
            task.cancel()
        gc.callbacks.remove(on_gc)
        if directory:
            with open(os.path.join(directory, f"{os.getpid()}.json"), "w") as file:  # noqa: ASYNC230 - at shutdown
                json.dump({"collections": collections}, file)

    app.cleanup_ctx.append(gc_log)
    return app


def label(kind: str) -> str:
    """How a server is named in tables and charts."""
    from . import peers

    return LABELS.get(kind) or peers.label(kind)


def command(kind: str, port: int, use_uvloop: bool) -> list[str]:
    """The command line serving *kind* (``raw``, ``wsframe``, ``raw-matched`` or a peer) on 127.0.0.1:*port*."""
    if kind == "wsframe":
        line = [sys.executable, "-m", "wsframe", "run", "benchmarks.servers:wsframe_app", "--host", "127.0.0.1"]
        return [*line, "--port", str(port), "--log-level", "warning", "--loop", "uvloop" if use_uvloop else "asyncio"]
    line = [sys.executable, "-m", "benchmarks.servers", "--port", str(port), *(["--uvloop"] if use_uvloop else [])]
    return line + (["--matched"] if kind == "raw-matched" else [] if kind == "raw" else ["--peer", kind])


def main(argv: list[str] | None = None) -> None:
    """Serve raw aiohttp (or with ``--peer``, a peer on uvicorn) until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="A benchmark server other than wsframe.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--matched", action="store_true", help="raw aiohttp with wsframe's heartbeat and limit")
    parser.add_argument("--peer", help="serve this peer (benchmarks.peers) instead of raw aiohttp")
    parser.add_argument("--uvloop", action="store_true", help="use uvloop's event loop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.peer:
        from .peers import serve

        return serve(args.peer, args.port, args.uvloop)
    if args.uvloop:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        uvloop.install()
    web.run_app(raw_app(matched=args.matched), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
