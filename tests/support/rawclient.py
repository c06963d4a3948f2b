"""A raw websocket client for tests that must send, or see, every frame.

Client libraries hide protocol details: they answer pings, stop reading after a
close frame, refuse to send reserved bits. This client sends whatever it is told
(reserved bits and opcodes, unmasked frames, lying length fields, invalid UTF-8,
broken close payloads) and reports each frame the server sends, in order, until
the TCP connection ends, so a test can assert the whole sequence: a stray second
close frame or a missing one fails it.

One :class:`RawWebsocket`, two ways to drive it, sharing the frame encoder and parser:

- from the event loop that also runs the server (aiohttp's test server):
  ``await RawWebsocket.connect(...)`` or :func:`raw_connect`, then ``await read_frame()``
  and ``await frames_until_eof()``;
- blocking, against a server in another process: :meth:`RawWebsocket.connect_blocking`
  or :func:`open_handshake`, then :meth:`~RawWebsocket.recv_frame`,
  :meth:`~RawWebsocket.recv_message` and :meth:`~RawWebsocket.read_until_closed`.

Every read has a short timeout (:data:`TIMEOUT`, scaled by the
``WSFRAME_TEST_TIMEOUT_SCALE`` environment variable on slow machines), so a
server that hangs fails the test fast instead of blocking it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import hashlib
import os
import secrets
import socket
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import ClassVar, NamedTuple

from aiohttp import web
from aiohttp.test_utils import TestClient

__all__ = [
    "UPGRADE_HEADERS",
    "TIMEOUT",
    "Opcode",
    "CONT",
    "TEXT",
    "BINARY",
    "CLOSE",
    "PING",
    "PONG",
    "Frame",
    "Ended",
    "NotClosed",
    "HttpResponse",
    "HandshakeRejected",
    "RawWebsocket",
    "raw_connect",
    "encode_frame",
    "parse_frame",
    "close_payload",
    "close_frame",
    "parse_close",
    "deflate_message",
    "http_request",
    "handshake_request",
    "open_handshake",
]

UPGRADE_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}
"""The headers of a valid websocket upgrade request, for a plain HTTP client."""

TIMEOUT = 2.0 * float(os.environ.get("WSFRAME_TEST_TIMEOUT_SCALE", "1"))
"""Seconds a test waits for any single read from the server before it fails instead of hanging."""

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD = 64 * 1024


class Opcode(enum.IntEnum):
    """RFC 6455 opcodes (3-7 and 11-15 are reserved)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


CONT, TEXT, BINARY, CLOSE, PING, PONG = (
    Opcode.CONTINUATION,
    Opcode.TEXT,
    Opcode.BINARY,
    Opcode.CLOSE,
    Opcode.PING,
    Opcode.PONG,
)


class Frame(NamedTuple):
    """One frame as it travelled on the wire (payload unmasked, not inflated)."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    """The three reserved bits as a number 0-7 (RSV1 = 4)."""
    masked: bool = False

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode()

    @property
    def close_code(self) -> int | None:
        """The code of a close frame (None for an empty payload)."""
        return int(struct.unpack("!H", self.payload[:2])[0]) if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        """The reason of a close frame, decoded as UTF-8."""
        return self.payload[2:].decode()

    def __repr__(self) -> str:
        payload = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        flags = "" if self.fin else " fin=False"
        flags += f" rsv={self.rsv}" if self.rsv else ""
        flags += " masked" if self.masked else ""
        return f"Frame({_opcode_name(self.opcode)}, {payload!r} ({len(self.payload)} bytes){flags})"


def _opcode_name(opcode: int) -> str:
    try:
        return Opcode(opcode).name
    except ValueError:
        return f"opcode {opcode}"


class Ended(enum.Enum):
    """How the server ended the TCP connection."""

    EOF = "eof"
    RESET = "reset"


class NotClosed(TimeoutError):
    """The server neither sent a frame nor closed the connection in time."""

    def __init__(self, frames: list[Frame]) -> None:
        super().__init__(f"server did not close the connection; frames so far: {frames!r}")
        self.frames = frames


class HttpResponse(NamedTuple):
    """A parsed HTTP response (headers lower-cased)."""

    status: int
    headers: dict[str, str]
    body: bytes


class HandshakeRejected(Exception):
    """The server answered the upgrade request with something other than 101."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(f"handshake rejected with HTTP {response.status}: {response.body[:200]!r}")
        self.response = response

    @property
    def status(self) -> int:
        """The HTTP status the server answered."""
        return self.response.status

    @property
    def headers(self) -> dict[str, str]:
        """The response headers, names lower-cased."""
        return self.response.headers

    @property
    def body(self) -> bytes:
        """The response body."""
        return self.response.body


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    mask_key: bytes | None = None,
    length: int | None = None,
    length_form: int | None = None,
) -> bytes:
    """Return the wire bytes of one frame, valid or not.

    *length* overrides the declared payload length (the payload is sent as
    given); *length_form* forces the 7-bit (125), 16-bit (126) or 64-bit (127)
    encoding of the length instead of the shortest one.
    """
    declared = len(payload) if length is None else length
    first = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)
    if length_form is None:
        length_form = 125 if declared <= 125 else 126 if declared <= 0xFFFF else 127
    mask_bit = 0x80 if mask else 0
    if length_form == 125:
        header = struct.pack("!BB", first, mask_bit | declared)
    elif length_form == 126:
        header = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, declared)
    if not mask:
        return header + payload
    key = mask_key if mask_key is not None else secrets.token_bytes(4)
    return header + key + _apply_mask(key, payload)


def _apply_mask(key: bytes, payload: bytes) -> bytes:
    if not payload:
        return b""
    # XOR with the repeated key in one big-integer operation: fast enough for MiB payloads.
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(payload), "big")


def close_payload(code: int | None = None, reason: bytes | str = b"") -> bytes:
    """The payload of a close frame: a 2-byte code then the reason (nothing when *code* is None)."""
    if code is None:
        return b""
    raw = reason.encode() if isinstance(reason, str) else reason
    return struct.pack("!H", code) + raw


def close_frame(code: int | None = 1000, reason: bytes | str = b"") -> Frame:
    """The close frame a server is expected to send (unmasked, FIN set)."""
    return Frame(Opcode.CLOSE, close_payload(code, reason))


def parse_close(frame: Frame) -> tuple[int | None, bytes]:
    """Return (code, reason bytes) of a close frame; code is None for an empty payload."""
    if frame.opcode != Opcode.CLOSE:
        raise AssertionError(f"not a close frame: {frame!r}")
    if not frame.payload:
        return None, b""
    if len(frame.payload) == 1:
        raise AssertionError(f"server sent a 1-byte close payload: {frame!r}")
    return struct.unpack("!H", frame.payload[:2])[0], frame.payload[2:]


def deflate_message(data: bytes, compressor: zlib._Compress | None = None) -> bytes:
    """Compress one message for permessage-deflate (RFC 7692 7.2.1): sync flush, tail removed."""
    comp = compressor or zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    out = comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)
    if not out.endswith(b"\x00\x00\xff\xff"):
        raise AssertionError("zlib sync flush did not end with the empty stored block")
    return out[:-4]


def _read_http_head(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytearray]:
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            raise AssertionError("HTTP response head larger than 64 KiB")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"server closed the connection before a full HTTP response head: {bytes(buffer)!r}")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status, headers = _parse_http_head(head)
    return status, headers, bytearray(rest)


def _parse_http_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and the headers (names lower-cased) of an HTTP response head."""
    lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise AssertionError(f"not an HTTP status line: {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _check_accept(key: str, headers: Mapping[str, str]) -> None:
    """Fail unless *headers* hold the Sec-WebSocket-Accept that RFC 6455 derives from *key*."""
    expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
    if headers.get("sec-websocket-accept") != expected:
        raise AssertionError(f"bad Sec-WebSocket-Accept in {headers!r}")


def parse_frame(data: bytes) -> Frame:
    """The one frame that *data* holds, unmasked; ``AssertionError`` when it holds less or more."""
    buffer = bytearray(data)
    frame = _split_frame(buffer)
    if not isinstance(frame, Frame):
        raise AssertionError(f"{frame} bytes short of a whole frame: {data[:40]!r}")
    if buffer:
        raise AssertionError(f"{len(buffer)} bytes after the frame: {bytes(buffer[:40])!r}")
    return frame


def _split_frame(buffer: bytearray) -> Frame | int:
    """Take the frame at the front of *buffer* off it; while it is incomplete, how many bytes it still lacks."""
    if len(buffer) < 2:
        return 2 - len(buffer)
    first, second = buffer[0], buffer[1]
    length = second & 0x7F
    offset = 2
    if length >= 126:
        size = 2 if length == 126 else 8
        if len(buffer) < offset + size:
            return offset + size - len(buffer)
        length = int.from_bytes(buffer[offset : offset + size], "big")
        offset += size
    masked = bool(second & 0x80)
    key = b""
    if masked:
        if len(buffer) < offset + 4:
            return offset + 4 - len(buffer)
        key = bytes(buffer[offset : offset + 4])
        offset += 4
    if len(buffer) < offset + length:
        return offset + length - len(buffer)
    payload = bytes(buffer[offset : offset + length])
    del buffer[: offset + length]
    if masked:
        payload = _apply_mask(key, payload)
    return Frame(first & 0xF, payload, bool(first & 0x80), (first >> 4) & 0x7, masked)


def _read_body(sock: socket.socket, status: int, headers: Mapping[str, str], rest: bytearray) -> bytes:
    if status == 101 or status == 204 or status == 304:
        return b""
    if "content-length" in headers:
        size = int(headers["content-length"])
        while len(rest) < size:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return bytes(rest[:size])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            while b"\r\n" not in rest:
                chunk = sock.recv(65536)
                if not chunk:
                    return bytes(body)
                rest += chunk
            line, _, remainder = bytes(rest).partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            rest = bytearray(remainder)
            while len(rest) < size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    return bytes(body + rest)
                rest += chunk
            if size == 0:
                return bytes(body)
            body += rest[:size]
            rest = rest[size + 2 :]
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(rest)
        rest += chunk


def http_request(host: str, port: int, raw: bytes, *, timeout: float = TIMEOUT) -> HttpResponse:
    """Send *raw* (a whole HTTP request) on a new connection and return the response."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(raw)
        status, headers, rest = _read_http_head(sock, bytearray())
        return HttpResponse(status, headers, _read_body(sock, status, headers, rest))


def handshake_request(
    path: str,
    host: str,
    *,
    key: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    replace: Mapping[str, str | None] | None = None,
    method: str = "GET",
) -> bytes:
    """Return the bytes of an upgrade request.

    The standard headers (Host, Upgrade, Connection, Sec-WebSocket-Key,
    Sec-WebSocket-Version) come first; *replace* maps a standard header's
    name to a new value, or to None to leave it out. *headers* are appended
    as they are, duplicates included. Non-ASCII text is sent as UTF-8.
    """
    standard: dict[str, str | None] = {
        "Host": host,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key or base64.b64encode(secrets.token_bytes(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    standard.update(replace or {})
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in standard.items() if value is not None]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def open_handshake(host: str, port: int, raw: bytes, *, timeout: float = TIMEOUT) -> HttpResponse | RawWebsocket:
    """Send the upgrade request *raw* (whatever it holds) and return the websocket on 101, else the response.

    Unlike :meth:`RawWebsocket.connect_blocking` it does not check the 101
    answer, so any request bytes can be sent.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(raw)
        status, headers, rest = _read_http_head(sock, bytearray())
        if status != 101:
            with sock:
                return HttpResponse(status, headers, _read_body(sock, status, headers, rest))
    except BaseException:
        sock.close()
        raise
    return RawWebsocket(sock, HttpResponse(status, headers, b""), rest)


class RawWebsocket:
    """One client connection speaking raw frames, on a blocking socket or on asyncio streams.

    The send methods work either way. Read with :meth:`recv_frame` and the
    other blocking methods on a client from :meth:`connect_blocking` (a
    context manager), with ``await`` :meth:`read_frame` on one from
    :meth:`connect`; the other kind of read raises ``TypeError``.
    """

    opened: ClassVar[list[RawWebsocket]] = []
    """Every client on asyncio streams, so a fixture can close what a test left open."""

    def __init__(
        self,
        wire: socket.socket | tuple[asyncio.StreamReader, asyncio.StreamWriter],
        response: HttpResponse,
        leftover: bytes | bytearray = b"",
    ) -> None:
        self._wire = wire
        self.response = response
        self._buffer = bytearray(leftover)
        extensions = response.headers.get("sec-websocket-extensions", "")
        self.deflate = "permessage-deflate" in extensions
        self._server_no_context_takeover = "server_no_context_takeover" in extensions
        self._inflater = zlib.decompressobj(-15)
        self._compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        if not isinstance(wire, socket.socket):
            RawWebsocket.opened.append(self)

    # ------------------------------------------------------------- open

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        path: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = TIMEOUT,
        *,
        local_addr: tuple[str, int] | None = None,
    ) -> RawWebsocket:
        """Open a connection from the running event loop and complete the handshake.

        *local_addr* binds the client's end (``("127.0.0.2", 0)``: another address of this machine).

        *headers* are sent with the standard ones, replacing a standard header of the same name.
        Raises :class:`HandshakeRejected` when the server does not answer 101 (with the body when
        Content-Length gives its size), ``AssertionError`` when its 101 has a wrong
        Sec-WebSocket-Accept, ``TimeoutError`` when it does not answer within *timeout*.
        """
        extra = dict(headers or {})
        key = extra.get("Sec-WebSocket-Key") or base64.b64encode(secrets.token_bytes(16)).decode()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=local_addr), timeout)
        try:
            writer.write(handshake_request(path, f"{host}:{port}", key=key, replace=dict(extra)))
            status, response_headers = _parse_http_head(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout))
            if status != 101:
                length = int(response_headers.get("content-length", "0"))
                body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
                raise HandshakeRejected(HttpResponse(status, response_headers, body))
            _check_accept(key, response_headers)
        except BaseException:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            raise
        return cls((reader, writer), HttpResponse(status, response_headers, b""))

    @classmethod
    def connect_blocking(
        cls,
        host: str,
        port: int,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        deflate: bool = False,
        timeout: float = TIMEOUT,
    ) -> RawWebsocket:
        """Open a blocking connection and complete the handshake.

        *headers* are appended to the standard ones, duplicates included; *deflate* offers
        permessage-deflate. Raises :class:`HandshakeRejected` when the server does not answer
        101, and ``AssertionError`` when its 101 is not a valid RFC 6455 answer.
        """
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        extra = list(headers)
        if deflate:
            extra.append(("Sec-WebSocket-Extensions", "permessage-deflate"))
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.sendall(handshake_request(path, f"{host}:{port}", key=key, headers=extra))
            status, response_headers, rest = _read_http_head(sock, bytearray())
            if status != 101:
                raise HandshakeRejected(
                    HttpResponse(status, response_headers, _read_body(sock, status, response_headers, rest))
                )
            _check_accept(key, response_headers)
        except BaseException:
            sock.close()
            raise
        return cls(sock, HttpResponse(status, response_headers, b""), rest)

    @property
    def headers(self) -> dict[str, str]:
        """The headers of the server's 101 answer, names lower-cased."""
        return self.response.headers

    @property
    def sock(self) -> socket.socket:
        """The socket of a client from :meth:`connect_blocking`."""
        if not isinstance(self._wire, socket.socket):
            raise TypeError("this client runs on asyncio streams: use its writer, or read_frame()")
        return self._wire

    @property
    def writer(self) -> asyncio.StreamWriter:
        """The stream writer of a client from :meth:`connect`, to write bytes that are no frame."""
        if isinstance(self._wire, socket.socket):
            raise TypeError("this client runs on a blocking socket: use sock, or recv_frame()")
        return self._wire[1]

    def __enter__(self) -> RawWebsocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------- send

    def send_raw(self, data: bytes) -> None:
        """Write *data* as it is (buffered, without waiting, on asyncio streams)."""
        if isinstance(self._wire, socket.socket):
            self._wire.sendall(data)
        else:
            self._wire[1].write(data)

    def send_frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        mask: bool = True,
        mask_key: bytes | None = None,
        length: int | None = None,
        length_form: int | None = None,
    ) -> None:
        """Send one frame, masked as a client must unless *mask* is false; the options as :func:`encode_frame`."""
        self.send_raw(
            encode_frame(
                opcode, payload, fin=fin, rsv=rsv, mask=mask, mask_key=mask_key, length=length, length_form=length_form
            )
        )

    def send_text(self, text: str) -> None:
        """Send a complete, valid text message."""
        self.send_frame(Opcode.TEXT, text.encode())

    def send_binary(self, data: bytes) -> None:
        """Send a complete binary message."""
        self.send_frame(Opcode.BINARY, data)

    def send_close(self, code: int | None = 1000, reason: bytes | str = b"") -> None:
        """Send a close frame (empty payload when *code* is None)."""
        self.send_frame(Opcode.CLOSE, close_payload(code, reason))

    def send_deflated(self, opcode: int, data: bytes) -> None:
        """Send one permessage-deflate compressed message (RSV1 set), keeping our context."""
        self.send_frame(opcode, deflate_message(data, self._compressor), rsv=4)

    # ------------------------------------------------ receive, blocking

    def recv_frame(self, timeout: float = TIMEOUT) -> Frame:
        """Read the next frame. Raises ``EOFError`` at a clean end of the stream,
        ``ConnectionResetError`` on a reset, ``TimeoutError`` when nothing comes,
        ``AssertionError`` when the stream ends inside a frame."""
        sock = self.sock
        deadline = time.monotonic() + timeout
        while not isinstance(frame := _split_frame(self._buffer), Frame):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"server sent {len(self._buffer)} bytes, {frame} short of a frame, in time")
            sock.settimeout(remaining)
            chunk = sock.recv(max(65536, frame))
            if not chunk:
                if self._buffer:
                    raise AssertionError(f"stream ended inside a frame: {bytes(self._buffer[:40])!r}")
                raise EOFError
            self._buffer += chunk
        return frame

    def recv_message(self, timeout: float = TIMEOUT) -> Frame:
        """Read one complete data frame and inflate it when it is compressed.

        Fails (``AssertionError``) on any other frame, so unexpected pings or
        closes are not silently skipped.
        """
        frame = self.recv_frame(timeout)
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY) or not frame.fin:
            raise AssertionError(f"expected one complete data frame, got {frame!r}")
        return Frame(frame.opcode, self.inflate(frame), frame.fin, frame.rsv & 0x3, frame.masked)

    def inflate(self, frame: Frame) -> bytes:
        """Return *frame*'s payload, decompressed when RSV1 says it is."""
        if not frame.rsv & 0x4:
            return frame.payload
        if not self.deflate:
            raise AssertionError(f"server set RSV1 without negotiating permessage-deflate: {frame!r}")
        if self._server_no_context_takeover:
            self._inflater = zlib.decompressobj(-15)
        return self._inflater.decompress(frame.payload + b"\x00\x00\xff\xff")

    def read_until_closed(self, timeout: float = TIMEOUT) -> tuple[list[Frame], Ended]:
        """Read every frame until the server ends the TCP connection.

        Raises :class:`NotClosed` (with the frames read so far) when the
        server neither sends nor closes within *timeout* of the last frame, and
        ``AssertionError`` when the stream ends in the middle of a frame.
        """
        frames: list[Frame] = []
        while True:
            try:
                frames.append(self.recv_frame(timeout))
            except EOFError:
                return frames, Ended.EOF
            except ConnectionResetError:
                return frames, Ended.RESET
            except TimeoutError:
                raise NotClosed(frames) from None

    # --------------------------------------------- receive, event loop

    async def read_frame(self, timeout: float = TIMEOUT) -> Frame | None:
        """Return the next frame, or None once the server ended the TCP connection (EOF or reset).

        A frame cut short by the end of the connection is dropped, as a server that aborts
        may cut one. Raises ``AssertionError`` when nothing arrives within *timeout*.
        """
        if isinstance(self._wire, socket.socket):
            raise TypeError("this client runs on a blocking socket: use recv_frame()")
        reader = self._wire[0]
        try:
            async with asyncio.timeout(timeout):
                while not isinstance(frame := _split_frame(self._buffer), Frame):
                    chunk = await reader.read(max(65536, frame))
                    if not chunk:
                        return None
                    self._buffer += chunk
        except ConnectionResetError:
            return None
        except TimeoutError:
            raise AssertionError(f"no frame from the server within {timeout} s") from None
        return frame

    async def frames_until_eof(self, timeout: float = TIMEOUT, *, answer_close: bool = True) -> list[Frame]:
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

    # ------------------------------------------------------------ close

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        if isinstance(self._wire, socket.socket):
            self._wire.close()
        else:
            self._wire[1].transport.abort()
            self._wire[1].close()

    def close(self) -> None:
        """Close the TCP connection without a close frame and without waiting."""
        if isinstance(self._wire, socket.socket):
            self._wire.close()
        else:
            self._wire[1].close()

    async def aclose(self) -> None:
        """Close the TCP connection without a close frame, and wait until it is closed."""
        self.close()
        if not isinstance(self._wire, socket.socket):
            with contextlib.suppress(ConnectionError, OSError):
                await self._wire[1].wait_closed()


async def raw_connect(
    client: TestClient[web.Request, web.Application], path: str, headers: Mapping[str, str] | None = None
) -> RawWebsocket:
    """Open a raw websocket to the server of *client* (pytest-aiohttp's test client)."""
    server = client.server
    return await RawWebsocket.connect(str(server.host), int(server.port or 0), path, headers, timeout=TIMEOUT)
