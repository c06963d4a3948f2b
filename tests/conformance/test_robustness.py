"""Clients that misbehave at the TCP level: ping floods, vanishing with work queued.

These run against their own server process, so a failure here (a leaked
registry entry, a grown heap) cannot spill into the rest of the suite.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.checks import assert_closes_cleanly, assert_echoes
from tests.support.liveserver import LiveServer
from tests.support.rawclient import Opcode, encode_frame
from wsframe.config import MIB

pytestmark = pytest.mark.functional

PING = encode_frame(Opcode.PING, b"p" * 125)


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(Path(tmp_path_factory.mktemp("robustness")) / "server.log")
    live.wait_ready()
    yield live
    live.stop()


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def test_client_vanishing_with_pings_queued_is_unregistered(own_server: LiveServer) -> None:
    own_server.new_log()
    with own_server.connect("/ws/echo/") as ws:
        ws.send_raw(PING * 5000)
    assert own_server.wait_registry_size(0) == 0
    assert "Traceback" not in own_server.new_log()


def test_ping_flood_from_a_client_that_never_reads_is_bounded(own_server: LiveServer) -> None:
    peak_before = _peak_rss_mib(own_server.process.pid)
    chunk = PING * 512
    ws = own_server.connect("/ws/echo/")
    with ws:
        ws.sock.settimeout(2)
        try:
            for _ in range(48 * MIB // len(chunk)):
                ws.send_raw(chunk)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading or closed: both are bounded answers
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    time.sleep(0.2)
    with own_server.connect("/ws/echo/") as other:
        assert_echoes(other, "still served")
        assert_closes_cleanly(other)
    # 48 MiB of pings: a bounded server holds at most its 1 MiB outbound buffer of pongs.
    assert _peak_rss_mib(own_server.process.pid) - peak_before < 16
