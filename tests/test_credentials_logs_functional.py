"""No token in the access log of ``wsframe run`` or of gunicorn: real servers, their real logs."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.gunicorn_harness import RECEIVE, Gunicorn
from tests.support.servers import free_port, run_process, wsframe_run

pytestmark = pytest.mark.functional

APP = "tests.apps.credentials_app:app"
SECRET = "s3cret"
REFERER = f"http://127.0.0.1/page?token={SECRET}"
"""A page URL with the token in it: access logs print the Referer too."""
GUNICORN_ACCESS_LOG = ["--access-logfile", "-"]
"""The recipe of docs/deployment.md: gunicorn's access log to its stdout."""


async def handshake_with_token(port: int) -> None:
    """Open ``/ws/token/?token=s3cret`` (sent with that Referer), read the greeting, close."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{port}/ws/token/?token={SECRET}", headers={"Referer": REFERER}) as ws,
    ):
        greeting = await ws.receive(timeout=RECEIVE)
        assert json.loads(greeting.data) == {"user": "alice"}


def wait_for_access_line(server: Gunicorn) -> None:
    """Until the worker has written the handshake's access line (it does once the handler returns)."""
    deadline = time.monotonic() + 10 * RECEIVE
    while "GET /ws/token/" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)


def access_line(log: str) -> str:
    lines = [line for line in log.splitlines() if "GET /ws/token/" in line]
    assert len(lines) == 1, log
    return lines[0]


async def test_wsframe_run_access_log_shows_the_handshake_with_the_token_redacted() -> None:
    port = free_port()
    with run_process(wsframe_run(APP, port), port) as process:
        await handshake_with_token(port)
        await asyncio.sleep(0.5)  # aiohttp writes the access line once the handler returns
        process.send_signal(signal.SIGINT)
        assert process.stdout is not None
        log = process.stdout.read().decode()
    assert SECRET not in log
    line = access_line(log)
    assert '"GET /ws/token/?token=*** HTTP/1.1" 101' in line
    assert '"http://127.0.0.1/page?token=***"' in line


async def test_gunicorn_access_log_shows_the_handshake_with_the_token_redacted(tmp_path: Path) -> None:
    with Gunicorn(APP, tmp_path, workers=1, extra_args=GUNICORN_ACCESS_LOG) as server:
        await handshake_with_token(server.port)
        wait_for_access_line(server)
    log = server.log()
    assert SECRET not in log
    line = access_line(log)
    assert '"GET /ws/token/?token=*** HTTP/1.1" 101' in line
    assert '"http://127.0.0.1/page?token=***"' in line
