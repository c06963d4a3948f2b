"""Assertions shared by the conformance tests and the fuzz tests."""

from __future__ import annotations

import contextlib

from tests.support.rawclient import Ended, Frame, Opcode, RawWebsocket, close_frame

__all__ = ["TOO_BIG", "assert_echoes", "assert_closes_cleanly", "assert_fails_with", "assert_closes_with"]

TOO_BIG = "message too big: limit 1048576 bytes"
"""The reason of the 1009 close for a message over the 1 MiB default limit."""


def assert_echoes(ws: RawWebsocket, text: str) -> None:
    """Send *text* on *ws* and check that exactly the same text frame comes back."""
    ws.send_text(text)
    assert ws.recv_message() == Frame(Opcode.TEXT, text.encode())


def assert_closes_cleanly(ws: RawWebsocket) -> None:
    """Close *ws* with 1000 and check the server answers 1000 and ends the TCP connection."""
    ws.send_close(1000)
    assert ws.read_until_closed() == ([close_frame(1000)], Ended.EOF)


def assert_fails_with(
    ws: RawWebsocket,
    code: int,
    before: tuple[Frame, ...] = (),
    ended: frozenset[Ended] = frozenset({Ended.EOF}),
    reason: str = "",
) -> None:
    """Check the server sends *before*, then exactly one close frame with *code* and *reason*, then ends TCP.

    The server fails the connection itself (RFC 6455 7.1.7), so it does not
    wait for our close frame: the stream must end right after its own. Pass
    *ended* with ``Ended.RESET`` when the server stops reading before all we
    sent arrived (closing a socket with unread data resets it).
    """
    frames, how = ws.read_until_closed()
    assert frames == [*before, close_frame(code, reason)]
    assert how in ended


def assert_closes_with(ws: RawWebsocket, code: int, before: tuple[Frame, ...] = (), reason: str = "") -> None:
    """Check the server sends *before* then a close frame with *code* and *reason*, and ends TCP once we answer.

    For closes the server may start as a closing handshake (waiting for our
    close frame) or as a failure (ending TCP at once): both are accepted.
    """
    frames: list[Frame] = []
    while len(frames) <= len(before) and (not frames or frames[-1].opcode != Opcode.CLOSE):
        frames.append(ws.recv_frame())
    assert frames == [*before, close_frame(code, reason)]
    with contextlib.suppress(OSError):  # it may not have waited for our answer
        ws.send_close(code)
    assert ws.read_until_closed()[0] == []
