"""A minimal websocket client for load generation: prebuilt frames, a few byte reads per reply, protocol callbacks,
no task per connection or message. It reads what the benchmark servers send: whole frames, pings and closes."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeAlias, cast

__all__ = ["CLOSE_FRAME", "OP_TEXT", "SOURCES", "HandshakeError", "OnMessage", "WsClient", "client_frame"]
__all__ += ["connect", "connect_many"]

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = base64.b64encode(os.urandom(16))
_ACCEPT = base64.b64encode(hashlib.sha1(_KEY + _GUID).digest())
_MASK = os.urandom(4)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
"""Lets the kernel pick the source port at connect(), so one source address serves many destinations."""
SOURCES = tuple(f"127.0.0.{i}" for i in range(2, 10))
"""Loopback source addresses, used in turn, so 10,000+ connections never run out of ephemeral ports."""
HANDSHAKE_TIMEOUT = CONNECT_TIMEOUT = 10.0
"""Seconds to wait for the server's 101; for a TCP connect when :func:`connect_many` counts errors."""


OnMessage: TypeAlias = "Callable[[WsClient, int, bytes], None]"
"""Called with the client, the opcode and the payload of every text or binary frame."""


class HandshakeError(Exception):
    """The server did not answer the upgrade with ``101 Switching Protocols``."""


def _next_frame(data: bytes, pos: int, size: int) -> tuple[int, int, int] | None:
    """The server frame at *pos*: (opcode, payload start, payload end), or None when it is not all in *data* yet. The
    benchmark servers send less than 64 KiB per frame, so no 64-bit lengths."""
    length, start = (data[pos + 1] & 0x7F, pos + 2) if size - pos >= 2 else (0, size + 1)
    if length == 126:
        length, start = (int.from_bytes(data[pos + 2 : pos + 4]), pos + 4) if size - pos >= 4 else (0, size + 1)
    return None if start + length > size else (data[pos] & 0x0F, start, start + length)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """Return one final, masked client frame carrying *payload*."""
    length, first = len(payload), 0x80 | opcode  # the benchmarks send less than 64 KiB
    header = struct.pack("!BB", first, 0x80 | length) if length < 126 else struct.pack("!BBH", first, 0xFE, length)
    masked = bytes(b ^ _MASK[i % 4] for i, b in enumerate(payload))
    return header + _MASK + masked


CLOSE_FRAME = client_frame(OP_CLOSE, struct.pack("!H", 1000))


def _handshake_request(port: int) -> bytes:
    key = f"Sec-WebSocket-Key: {_KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    return f"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}".encode()


class WsClient(asyncio.Protocol):
    """One websocket connection driven by callbacks: ``opened`` resolves after the handshake, ``closed`` when
    the TCP connection is gone, ``close_received`` when the server's close frame arrived."""

    def __init__(self, request: bytes, on_message: OnMessage | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.on_message = on_message
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.close_received: asyncio.Future[None] = loop.create_future()
        self._buffer = b""
        self._handshaking = True
        self._request = request
        self.sent_at = 0  # free slot for the load generator: when the message in flight was sent (ns)
        self.pings = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance() check here.
        self.transport = stream = cast(asyncio.Transport, transport)
        stream.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for future in (self.opened, self.close_received):
            if not future.done():
                future.set_exception(ConnectionResetError("connection lost"))
                future.exception()  # mark as retrieved: a lost connection is reported through `closed`
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, frame: bytes) -> None:
        if self.transport is not None:
            self.transport.write(frame)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        if self._handshaking:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = data
                return
            head = data[:end]
            data = data[end + 4 :]
            self._handshaking = False
            if not head.startswith(b"HTTP/1.1 101") or _ACCEPT not in head:
                self.opened.set_exception(HandshakeError(head.split(b"\r\n", 1)[0].decode(errors="replace")))
                self.close()
                return
            self.opened.set_result(None)
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        pos, size = 0, len(data)
        while (frame := _next_frame(data, pos, size)) is not None:
            opcode, start, end = frame
            payload = data[start:end]
            pos = end
            if opcode in (OP_TEXT, OP_BINARY):
                if self.on_message is not None:
                    self.on_message(self, opcode, payload)
            elif opcode == OP_PING:
                self.pings += 1
                self.send(client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE and not self.close_received.done():
                self.close_received.set_result(None)
        if pos < size:
            self._buffer = data[pos:]


async def connect(port: int, *, source: str | None = None, on_message: OnMessage | None = None) -> WsClient:
    """Open one websocket to 127.0.0.1:*port*/ws/, from loopback address *source* when given. Raises OSError when the
    TCP connect fails, TimeoutError when it takes over *connect_timeout* seconds (no limit when None), and
    :class:`HandshakeError` when the server does not answer 101."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source is not None:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), CONNECT_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    _, client = await loop.create_connection(lambda: WsClient(_handshake_request(port), on_message), sock=sock)
    try:
        await asyncio.wait_for(asyncio.shield(client.opened), HANDSHAKE_TIMEOUT)
    except TimeoutError:
        client.close()
        raise HandshakeError(f"no handshake answer from port {port} within {HANDSHAKE_TIMEOUT} s") from None
    return client


async def connect_many(
    port: int,
    count: int,
    *,
    sources: Sequence[str] = SOURCES,
    concurrency: int = 100,
    on_message: OnMessage | None = None,
    errors: Counter[str] | None = None,
) -> list[WsClient]:
    """Open *count* websockets, at most *concurrency* handshakes at a time, spread over *sources*. Without *errors*,
    the first failure closes every client and raises; with it, each failed try is counted there (by class and errno)
    and retried after a growing pause, up to 6 tries, and a connection that fails them all is left out."""
    clients: list[WsClient] = []
    cursor = iter(range(count))

    async def worker() -> None:
        for index in cursor:
            for attempt in range(1 if errors is None else 6):
                source = sources[index % len(sources)]
                try:
                    clients.append(await connect(port, source=source, on_message=on_message))
                    break
                except (OSError, TimeoutError, HandshakeError) as exc:
                    if errors is None:
                        raise
                    code = getattr(exc, "errno", None)  # ConnectionRefusedError[ECONNREFUSED]
                    name = type(exc).__name__
                    errors[f"{name}[{errno.errorcode.get(code, code)}]" if code else name] += 1
                    await asyncio.sleep(min(2.0, 0.05 * 2**attempt))

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, count)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        for client in clients:
            client.close()
        raise
    return clients
