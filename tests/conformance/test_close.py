"""Close codes and reasons (Autobahn 7.x), and the code ``disconnect()`` receives.

aiohttp answers every valid close with ``1000`` and an empty reason. RFC 6455
5.5.1 says the answer "typically" echoes the code, without requiring it, and
Autobahn accepts either; the tests pin what is sent so a change is noticed.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.support.checks import assert_fails_with
from tests.support.liveserver import LiveServer
from tests.support.rawclient import TIMEOUT, Ended, Opcode, RawWebsocket, close_frame

pytestmark = pytest.mark.functional

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1015, 1016, 1100, 2000, 2999]
# aiohttp's reader lets these through (1006 is in its enum; it only checks codes below 3000);
# wsframe answers the close itself and fails them with 1002.
NEVER_SENT_BUT_PASSED_BY_AIOHTTP = (1006, 5000, 65535)


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_code_is_answered_with_1000(server: LiveServer, code: int) -> None:
    with server.connect() as ws:
        ws.send_close(code)
        assert ws.read_until_closed() == ([close_frame(1000)], Ended.EOF)


def test_close_without_payload_is_answered_with_1000(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_close(None)
        assert ws.read_until_closed() == ([close_frame(1000)], Ended.EOF)


@pytest.mark.parametrize(
    "reason",
    ["bye", "", "ünïcödé 😀", "r" * 123],
    ids=["ascii", "empty", "multibyte", "123-bytes"],
)
def test_close_with_a_valid_reason_is_answered_with_1000(server: LiveServer, reason: str) -> None:
    with server.connect() as ws:
        ws.send_close(1000, reason)
        assert ws.read_until_closed() == ([close_frame(1000)], Ended.EOF)


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_code_closes_with_1002(server: LiveServer, code: int) -> None:
    with server.connect() as ws:
        ws.send_close(code)
        assert_fails_with(ws, 1002)


@pytest.mark.parametrize("code", NEVER_SENT_BUT_PASSED_BY_AIOHTTP)
def test_close_code_that_may_never_be_sent_closes_with_1002(server: LiveServer, code: int) -> None:
    with server.connect() as ws:
        ws.send_close(code)
        assert_fails_with(ws, 1002)


def test_close_payload_of_one_byte_closes_with_1002(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.CLOSE, b"\x03")
        assert_fails_with(ws, 1002)


def test_close_reason_of_124_bytes_closes_with_1002(server: LiveServer) -> None:
    # 2 bytes of code + 124 of reason = 126: over the 125-byte control frame limit.
    with server.connect() as ws:
        ws.send_close(1000, "r" * 124)
        assert_fails_with(ws, 1002)


@pytest.mark.parametrize("reason", [b"\xff", b"ok \xed\xa0\x80", b"\xf0\x9f"], ids=["ff", "surrogate", "truncated"])
def test_close_reason_with_invalid_utf8_closes_with_1007(server: LiveServer, reason: bytes) -> None:
    with server.connect() as ws:
        ws.send_close(1000, reason)
        assert_fails_with(ws, 1007)


def test_fragmented_close_closes_with_1002(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_frame(Opcode.CLOSE, b"\x03\xe8", fin=False)
        assert_fails_with(ws, 1002)


def test_data_after_close_is_not_echoed(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_close(1000)
        ws.send_text("too late")
        frames, ended = ws.read_until_closed()
    assert frames == [close_frame(1000)]
    # The server never reads what came after the close, so the kernel may reset.
    assert ended in (Ended.EOF, Ended.RESET)


def test_second_close_is_not_answered_twice(server: LiveServer) -> None:
    with server.connect() as ws:
        ws.send_close(1000)
        ws.send_close(1001)
        frames, ended = ws.read_until_closed()
    assert frames == [close_frame(1000)]
    assert ended in (Ended.EOF, Ended.RESET)


# ------------------------------------------------------------- disconnect(code)


def _tracked(server: LiveServer) -> tuple[RawWebsocket, str]:
    ws = server.connect("/ws/tracked/")
    hello = ws.recv_message()
    assert hello.opcode == Opcode.TEXT
    assert len(hello.payload) == 32
    return ws, hello.payload.decode()


def _disconnect_code(server: LiveServer, connection_id: str) -> int | None:
    """The code the handler's disconnect() got, or None when it did not run in time."""
    # disconnect() runs a moment after the TCP connection ended: poll briefly.
    deadline = time.monotonic() + TIMEOUT
    while True:
        status, body = server.get(f"/disconnects/{connection_id}/")
        if status == 200 and isinstance(body, dict):
            return int(body["code"])
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4001])
def test_disconnect_receives_the_code_the_client_closed_with(server: LiveServer, code: int) -> None:
    ws, connection_id = _tracked(server)
    with ws:
        ws.send_close(code, "client reason")
        assert ws.read_until_closed() == ([close_frame(1000)], Ended.EOF)
    assert _disconnect_code(server, connection_id) == code


def test_disconnect_receives_1005_for_a_close_without_code(server: LiveServer) -> None:
    ws, connection_id = _tracked(server)
    with ws:
        ws.send_close(None)
        assert ws.read_until_closed() == ([close_frame(1000)], Ended.EOF)
    assert _disconnect_code(server, connection_id) == 1005


def test_disconnect_receives_1006_when_the_client_drops_the_tcp_connection(server: LiveServer) -> None:
    ws, connection_id = _tracked(server)
    ws.sock.shutdown(socket.SHUT_RDWR)
    ws.sock.close()
    assert _disconnect_code(server, connection_id) == 1006


def test_disconnect_receives_the_code_the_server_failed_the_connection_with(server: LiveServer) -> None:
    ws, connection_id = _tracked(server)
    with ws:
        ws.send_frame(3, b"reserved opcode")
        assert_fails_with(ws, 1002)
    assert _disconnect_code(server, connection_id) == 1002
