"""The process registry: which connections live here, and how to reach any id.

A connection id is 32 hex characters: the first 8 are the id of the node
(process) that owns it, the other 24 come from :mod:`secrets`. A send to an id
therefore goes to exactly one process: directly when it is this one, through
the backend otherwise. Ids are unguessable; treat them as capabilities.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import weakref
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .backends.base import Backend, Envelope
from .codec import encode_frame
from .exceptions import ApplicationNotFoundError, ConnectionClosed

if TYPE_CHECKING:
    from .websocket import GenericWebsocket

__all__ = ["Registry", "REGISTRY_KEY", "NODE_ID_LENGTH", "CONNECTION_ID_LENGTH", "get_registry"]

logger = logging.getLogger("wsframe.registry")

NODE_ID_LENGTH = 8
CONNECTION_ID_LENGTH = 32


class Registry:
    """Connections owned by this process, keyed by connection id.

    ``node_id`` is drawn again at every app startup, so each forked worker has
    its own even when the app object was created before the fork.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.node_id = secrets.token_hex(NODE_ID_LENGTH // 2)
        self.connections: dict[str, GenericWebsocket] = {}

    def new_connection_id(self) -> str:
        """Return a fresh id owned by this node."""
        return self.node_id + secrets.token_hex((CONNECTION_ID_LENGTH - NODE_ID_LENGTH) // 2)

    def add(self, connection: GenericWebsocket) -> None:
        """Make *connection* reachable by id (called on accept)."""
        self.connections[connection.connection_id] = connection

    def discard(self, connection_id: str) -> None:
        """Forget *connection_id*; unknown ids are ignored."""
        self.connections.pop(connection_id, None)

    async def on_startup(self) -> None:
        """Draw this process's node id and start the backend."""
        self.node_id = secrets.token_hex(NODE_ID_LENGTH // 2)
        await self.backend.on_startup(self)

    async def on_shutdown(self, code: int, reason: str, drain_seconds: float) -> None:
        """Close every connection with *code* within *drain_seconds*, then stop the backend.

        Connections that have not finished their closing handshake by then are
        dropped at the TCP level, so shutdown never waits longer than *timeout*.
        """
        connections = list(self.connections.values())
        if connections:
            logger.info("closing %d websocket connection(s) with %d", len(connections), code)
            tasks = [asyncio.ensure_future(c.close(code, reason)) for c in connections]
            _, pending = await asyncio.wait(tasks, timeout=drain_seconds)
            for task in pending:
                task.cancel()
            for connection in connections:
                connection._abort()
        await self.backend.on_shutdown()

    async def send(self, connection_id: str, data: Any) -> None:
        """Deliver *data* to *connection_id* wherever it lives (see :func:`send_message_to_websocket`)."""
        payload, opcode = encode_frame(data)
        connection = self.connections.get(connection_id)
        if connection is not None:
            await self._send_local(connection, payload, opcode)
            return
        node_id = self._remote_node(connection_id)
        if node_id is not None:
            await self.backend.publish_to_node(
                node_id, Envelope("send", connection_id, payload=payload, opcode=int(opcode))
            )

    async def close(self, connection_id: str, code: int, reason: str) -> None:
        """Close *connection_id* wherever it lives (see :func:`close_websocket_connection`)."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            await connection.close(code, reason)
            return
        node_id = self._remote_node(connection_id)
        if node_id is not None:
            await self.backend.publish_to_node(node_id, Envelope("close", connection_id, code=code, reason=reason))

    async def deliver_envelope(self, envelope: Envelope) -> None:
        """Carry out an envelope that a backend received for this node."""
        connection = self.connections.get(envelope.connection_id)
        if connection is None:
            logger.debug("no connection %s here for %s; dropped", envelope.connection_id, envelope.kind)
            return
        if envelope.kind == "send":
            await self._send_local(connection, envelope.payload, WSMsgType(envelope.opcode))
        else:
            await connection.close(envelope.code, envelope.reason)

    async def _send_local(self, connection: GenericWebsocket, payload: bytes, opcode: WSMsgType) -> None:
        try:
            await connection._send_frame(payload, opcode)
        except ConnectionClosed as exc:
            # Closing races with sending all the time; the caller asked for
            # best effort, so a connection that just went away is not an error.
            logger.debug("connection %s closed before delivery: %s", connection.connection_id, exc)

    def _remote_node(self, connection_id: str) -> str | None:
        """Return the owning node of an id not in this process, or None when there is nothing to do."""
        if len(connection_id) != CONNECTION_ID_LENGTH:
            logger.debug("ignoring malformed connection id %r", connection_id)
            return None
        node_id = connection_id[:NODE_ID_LENGTH]
        if node_id == self.node_id:
            logger.debug("connection %s is already closed; nothing sent", connection_id)
            return None
        return node_id


REGISTRY_KEY = web.AppKey("wsframe_registry", Registry)

current_app: contextvars.ContextVar[web.Application] = contextvars.ContextVar("wsframe_current_app")
"""The wsframe app handling the current request (set by wsframe's middleware)."""

started_apps: weakref.WeakSet[web.Application] = weakref.WeakSet()
"""wsframe apps started in this process, the fallback when no request is being handled."""


def get_registry(app: web.Application | None = None) -> Registry:
    """Return the registry of *app*, or of the app handling the current request.

    Raises :class:`ApplicationNotFoundError` when *app* is None and no app, or
    more than one, is running in this process.
    """
    if app is None:
        app = current_app.get(None)
    if app is None:
        running = list(started_apps)
        if len(running) == 1:
            app = running[0]
        elif not running:
            raise ApplicationNotFoundError(
                "No wsframe application is running in this process. Start the app created by "
                "wsframe.create_app(), or pass app= explicitly."
            )
        else:
            raise ApplicationNotFoundError(
                f"{len(running)} wsframe applications are running in this process; pass app= to say which one."
            )
    try:
        return app[REGISTRY_KEY]
    except KeyError:
        raise ApplicationNotFoundError(
            "This aiohttp application was not made by wsframe.create_app(); pass the app it returned."
        ) from None
