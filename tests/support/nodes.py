"""Several nodes in one test process, each a real app on a real port, on a real backend.

The backend tests (``test_backends_*``, ``test_groups_redis``, ``test_groups_ipc``) build
their nodes from :func:`node_app` and talk to them with raw websocket clients:

- ``ws/``: accepts and sends the client its connection id;
- ``ws/<group>/``: accepts, joins the group, sends the id; the text ``leave`` leaves every
  group and answers ``left``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.rawclient import CLOSE, TIMEOUT, RawWebsocket, raw_connect
from tests.support.redis_server import require_shared_redis
from wsframe import BackendUnavailableError, GenericWebsocket, create_app
from wsframe.backends import Backend, RedisBackend
from wsframe.backends.base import Envelope
from wsframe.registry import REGISTRY_KEY

__all__ = [
    "WsClient",
    "Announce",
    "Member",
    "node_app",
    "connect",
    "member",
    "silent",
    "socket_directory",
    "redis_prefix",
    "block_delivery",
    "wait_until_down",
]

WsClient = TestClient[web.Request, web.Application]


class Announce(GenericWebsocket):
    """Sends the client its connection id."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(self.connection_id)


class Member(GenericWebsocket):
    """Joins the group in its path and sends the client its connection id; ``leave`` leaves."""

    async def connect(self, group: str) -> None:
        await self.accept()
        await self.join_group(group)
        await self.send(self.connection_id)

    async def receive(self, data: str | bytes) -> None:
        if data == "leave":
            for group in self.groups:
                await self.leave_group(group)
            await self.send("left")


def node_app(backend: Backend) -> web.Application:
    """One node: an app with ``ws/`` and ``ws/<group>/`` on *backend*."""
    return create_app({"ws/": Announce, "ws/<group>/": Member}, backend=backend)


async def connect(client: WsClient, path: str = "/ws/") -> tuple[RawWebsocket, str]:
    """Open a websocket to *client*'s node; return it and the connection id the node announced."""
    ws = await raw_connect(client, path)
    frame = await ws.read_frame(TIMEOUT)
    assert frame is not None
    return ws, frame.text


async def member(client: WsClient, group: str) -> tuple[RawWebsocket, str]:
    """Open a websocket that joins *group* on *client*'s node; return it and its connection id."""
    return await connect(client, f"/ws/{group}/")


async def silent(ws: RawWebsocket) -> bool:
    """True when nothing more arrives before our own close is answered."""
    ws.send_close(1000)
    return [f.opcode for f in await ws.frames_until_eof(TIMEOUT, answer_close=False)] == [CLOSE]


@contextlib.contextmanager
def socket_directory() -> Iterator[Path]:
    """A fresh directory for IPC nodes to meet in, removed afterwards."""
    # Short on purpose: a Unix socket path must fit in 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="wsf-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def redis_prefix() -> str:
    """A prefix of our own on the shared Redis, so tests never hear each other; fails (never skips) without Redis."""
    require_shared_redis()
    return f"wsframe-test-{secrets.token_hex(4)}:"


async def block_delivery(sender: WsClient, owner: WsClient) -> asyncio.Event:
    """Make IPC node *owner* stop taking envelopes, as a blocked event loop would; set the event to let it go.

    *owner*'s backend must have an inbox of 1: one envelope is stuck in delivery,
    one fills the inbox, and *sender*'s next send to it raises BackendUnavailableError.
    """
    registry = owner.app[REGISTRY_KEY]
    release = asyncio.Event()

    async def never_finishes(envelope: Envelope) -> None:
        await release.wait()

    registry.deliver_envelope = never_finishes  # type: ignore[method-assign]
    target = registry.node_id + "0" * 24
    await sender.app[REGISTRY_KEY].send(target, "taken by the delivery task")
    await sender.app[REGISTRY_KEY].send(target, "fills the inbox")
    with pytest.raises(BackendUnavailableError):
        await sender.app[REGISTRY_KEY].send(target, "no room: the stream is stuck behind it")
    return release


async def wait_until_down(node: WsClient) -> None:
    """Return once the Redis listener of *node* has noticed that Redis is gone (fail after 10 s)."""
    backend = node.app[REGISTRY_KEY].backend
    assert isinstance(backend, RedisBackend)
    for _ in range(int(10 / 0.02)):
        if backend._down_since is not None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the Redis listener did not notice the outage within 10 s")


def redis_backend_of(node: WsClient) -> RedisBackend:
    """The Redis backend of *node*'s app."""
    backend = node.app[REGISTRY_KEY].backend
    assert isinstance(backend, RedisBackend)
    return backend


async def wait_until_up(backend: RedisBackend) -> None:
    """Return once *backend*'s listener is back after an outage (fail after 10 s)."""
    for _ in range(int(10 / 0.02)):
        if backend._down_since is None and backend.stats.outages:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the Redis listener did not reconnect within 10 s")
