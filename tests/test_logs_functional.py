"""wsframe's log lines under real gunicorn (its error log, unless the app set up logging) and `wsframe run`."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gunicorn_harness import RECEIVE, SCALE, Gunicorn
from tests.support.rawclient import HandshakeRejected, RawWebsocket
from tests.support.servers import free_port, run_process, wsframe_run

pytestmark = pytest.mark.functional

APP = "tests.apps.logging_app:app"
GUNICORN_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[(\d+)\] \[(\w+)\] (.*)$", re.MULTILINE)
"""gunicorn's error-log format: ``[time] [pid] [level] message``."""


async def lines_of(server: Gunicorn, start: str, count: int = 1) -> list[tuple[int, str, str]]:
    """The (pid, level, message) of gunicorn-format lines whose message starts with *start*, once *count* are there."""
    for _ in range(int(200 * SCALE)):
        found = [(int(p), level, msg) for p, level, msg in GUNICORN_LINE.findall(server.log()) if msg.startswith(start)]
        if len(found) >= count:
            break
        await asyncio.sleep(0.05)
    return found


async def log_once_it_has(server: Gunicorn, text: str) -> str:
    """What gunicorn logged, once it has *text* (or after 10 s)."""
    for _ in range(int(200 * SCALE)):
        if text in server.log():
            break
        await asyncio.sleep(0.05)
    return server.log()


async def refused(server: Gunicorn | int, headers: dict[str, str] | None = None) -> int:
    """The status a handshake to ``/ws/`` of *server* (or of the server on that port) is refused with."""
    port = server if isinstance(server, int) else server.port
    with pytest.raises(HandshakeRejected) as info:
        await RawWebsocket.connect("127.0.0.1", port, "/ws/", headers, timeout=RECEIVE)
    return info.value.status


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Gunicorn]:
    with Gunicorn(APP, tmp_path, workers=1) as started:
        started.wait_for_workers("/pid/")
        yield started


async def test_a_refused_origin_is_an_info_line_in_gunicorns_error_log(server: Gunicorn) -> None:
    assert await refused(server, {"Origin": "https://evil.example"}) == 403
    (worker,) = server.worker_pids()
    ((pid, level, message),) = await lines_of(server, "refused handshake")
    assert (pid, level) == (worker, "INFO")
    assert message.startswith("refused handshake to /ws/ with 403: Origin 'https://evil.example' not allowed")


async def test_a_connection_over_the_per_address_limit_is_an_info_line_in_gunicorns_error_log(
    server: Gunicorn,
) -> None:
    held = await RawWebsocket.connect("127.0.0.1", server.port, "/ws/", timeout=RECEIVE)
    assert await refused(server) == 429
    (worker,) = server.worker_pids()
    assert await lines_of(server, "refused handshake") == [
        (
            worker,
            "INFO",
            "refused handshake to /ws/ with 429: 1 connection(s) from 127.0.0.1 already open (max_connections_per_ip)",
        )
    ]
    await held.aclose()


async def test_shutdown_closing_connections_with_1001_is_an_info_line_in_gunicorns_error_log(
    server: Gunicorn,
) -> None:
    held = await RawWebsocket.connect("127.0.0.1", server.port, "/ws/", timeout=RECEIVE)
    (worker,) = server.worker_pids()
    assert server.stop() == 0
    assert await lines_of(server, "closing") == [(worker, "INFO", "closing 1 websocket connection(s) with 1001")]
    held.abort()


async def test_an_app_that_configured_logging_itself_keeps_its_format(tmp_path: Path) -> None:
    env = {"LOGGING_APP_OWN_FORMAT": "APP %(levelname)s %(name)s: %(message)s"}
    with Gunicorn(APP, tmp_path, workers=1, env=env) as server:
        server.wait_for_workers("/pid/")
        assert await refused(server, {"Origin": "https://evil.example"}) == 403
        log = await log_once_it_has(server, "APP INFO wsframe.websocket: refused handshake")
    assert "APP INFO wsframe.websocket: refused handshake to /ws/ with 403: Origin 'https://evil.example'" in log
    assert await lines_of(server, "refused handshake", count=0) == []


async def test_wsframe_run_logs_a_refused_origin_at_info_with_time_and_level() -> None:
    port = free_port()
    with run_process(wsframe_run(APP, port), port) as process:
        assert await refused(port, {"Origin": "https://evil.example"}) == 403
        process.send_signal(signal.SIGTERM)
        process.wait(10 * SCALE)
        assert process.stdout is not None
        output = process.stdout.read().decode()
    assert re.search(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO wsframe.websocket: "
        r"refused handshake to /ws/ with 403: Origin 'https://evil.example' not allowed",
        output,
        re.MULTILINE,
    ), output
