"""Slow and malformed requests under the real servers: gunicorn's aiohttp worker and ``wsframe run``.

Both build their own AppRunner from the application; the bound must hold there
as it does under pytest-aiohttp (tests/test_guard.py).
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gunicorn_harness import Gunicorn
from tests.support.rawclient import RawWebsocket
from tests.support.servers import free_port, run_process, wsframe_run

APP = "tests.apps.guard_app:app"
PARTIAL_REQUEST = b"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
SLOW_SOCKETS = 50


@pytest.fixture(params=["gunicorn", "wsframe run"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, Path | None]]:
    """The port of APP under one of the servers, and gunicorn's log file (None for wsframe run)."""
    if request.param == "gunicorn":
        with Gunicorn(APP, tmp_path, workers=1) as gunicorn:
            yield gunicorn.port, gunicorn.log_path
    else:
        port = free_port()
        with run_process(wsframe_run(APP, port), port):
            yield port, None


def first_lines_when_closed(sockets: list[socket.socket], timeout: float) -> list[bytes]:
    """Read every socket until the server closes it; each one's first line. Fails after *timeout*."""
    received = {sock: b"" for sock in sockets}
    open_ones = set(sockets)
    deadline = time.monotonic() + timeout
    while open_ones:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(open_ones)} of {len(sockets)} slow sockets still open after {timeout} s"
        readable, _, _ = select.select(list(open_ones), [], [], left)
        for sock in readable:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            received[sock] += chunk
            if not chunk:
                open_ones.discard(sock)
    return [received[sock].split(b"\r\n", 1)[0] for sock in sockets]


def test_slowloris_sockets_are_closed_with_408_under_the_real_servers(server: tuple[int, Path | None]) -> None:
    port, _ = server
    sockets = []
    try:
        for _ in range(SLOW_SOCKETS):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(PARTIAL_REQUEST)
            sockets.append(sock)
        with RawWebsocket.connect_blocking("127.0.0.1", port, "/ws/") as ws:
            ws.send_text("served meanwhile")
            assert ws.recv_frame().text == "served meanwhile"
        # handshake_timeout is 1 s in the app: generous bounds for a loaded machine.
        # These sockets send nothing more, so each gets its 408 before the close.
        assert set(first_lines_when_closed(sockets, 1.0 + 3.0)) == {b"HTTP/1.1 408 Request Timeout"}
    finally:
        for sock in sockets:
            sock.close()


def test_a_64_kib_header_line_leaves_no_traceback_in_the_gunicorn_log(tmp_path: Path) -> None:
    with Gunicorn(APP, tmp_path, workers=1) as gunicorn:
        with socket.create_connection(("127.0.0.1", gunicorn.port)) as sock:
            sock.sendall(b"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 65536 + b"\r\n\r\n")
            (status_line,) = first_lines_when_closed([sock], 10.0)
        assert status_line.endswith(b" 400 Bad Request")
        gunicorn.stop()
        log = gunicorn.log()
    assert "Traceback" not in log
    assert "LineTooLong" in log
