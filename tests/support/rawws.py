"""A minimal raw-socket websocket client for tests that must see every frame.

aiohttp's and websockets' clients hide protocol details (they answer pings,
stop reading after a close frame). This one reports each frame the server
sends, in order, until the TCP connection ends, so a test can assert the whole
sequence: a stray second close frame or a missing one fails it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import struct
from typing import ClassVar

__all__ = ["Frame", "RawWebsocket", "TEXT", "BINARY", "CLOSE", "PING", "PONG", "CONT"]

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame as received: opcode, payload and the FIN/RSV bits."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0

    @property
    def close_code(self) -> int | None:
        """The code of a close frame (None for an empty one)."""
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode()

    @property
    def text(self) -> str:
        return self.payload.decode()


class HandshakeRejected(Exception):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(status)
        self.status, self.headers, self.body = status, headers, body


class RawWebsocket:
    """A websocket client speaking frames over a plain asyncio stream."""

    opened: ClassVar[list[RawWebsocket]] = []
    """Every client opened, so a fixture can close what a test left open."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]) -> None:
        self.reader, self.writer, self.headers = reader, writer, headers
        RawWebsocket.opened.append(self)

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 2.0
    ) -> RawWebsocket:
        """Open a connection and complete the handshake; raise HandshakeRejected on a non-101 answer."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        request_headers = {
            "Host": f"{host}:{port}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
            **(headers or {}),
        }
        lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in request_headers.items()), "", ""]
        writer.write("\r\n".join(lines).encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *header_lines = head.decode().split("\r\n")
        status = int(status_line.split()[1])
        response_headers = {}
        for line in header_lines:
            if ":" in line:
                key, value = line.split(":", 1)
                response_headers[key.strip().lower()] = value.strip()
        if status != 101:
            length = int(response_headers.get("content-length", "0"))
            try:
                body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
            finally:
                writer.close()
                await writer.wait_closed()
            raise HandshakeRejected(status, response_headers, body)
        return cls(reader, writer, response_headers)

    def send_frame(
        self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True
    ) -> None:
        """Write one frame (masked, as a client must, unless mask=False)."""
        first = (0x80 if fin else 0) | (rsv << 4) | opcode
        length = len(payload)
        mask_bit = 0x80 if mask else 0
        if length < 126:
            header = struct.pack("!BB", first, mask_bit | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", first, mask_bit | 126, length)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, length)
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if length < 4096 else _xor(payload, key)
            header += key
        self.writer.write(header + payload)

    def send_text(self, text: str) -> None:
        self.send_frame(TEXT, text.encode())

    def send_binary(self, data: bytes) -> None:
        self.send_frame(BINARY, data)

    def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        payload = b"" if code is None else struct.pack("!H", code) + reason.encode()
        self.send_frame(CLOSE, payload)

    async def read_frame(self, timeout: float = 2.0) -> Frame | None:
        """Return the next frame, or None when the server closed the TCP connection."""
        try:
            first, second = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        except TimeoutError:
            raise AssertionError(f"no frame from the server within {timeout} s") from None
        return Frame(first & 0x0F, payload, bool(first & 0x80), (first >> 4) & 0x7)

    async def frames_until_eof(self, timeout: float = 2.0, *, answer_close: bool = True) -> list[Frame]:
        """Read every frame until TCP EOF, answering the server's close frame once (as a client should)."""
        frames: list[Frame] = []
        while True:
            frame = await self.read_frame(timeout)
            if frame is None:
                await self.aclose()
                return frames
            frames.append(frame)
            if frame.opcode == CLOSE and answer_close:
                answer_close = False
                code = frame.close_code
                self.send_close(code if code not in (None, 1005, 1006) else 1000)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        transport = self.writer.transport
        transport.abort()  # type: ignore[attr-defined]
        self.writer.close()

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def _xor(payload: bytes, key: bytes) -> bytes:
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")
