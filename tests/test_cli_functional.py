"""`python -m wsframe run` serving a real app to the websockets library's client."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.rawclient import TIMEOUT
from tests.support.servers import ROOT, free_port, run_process, wsframe_run

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port()
    with run_process(wsframe_run("tests.apps.core_app:app", port), port):
        yield f"127.0.0.1:{port}"


async def test_echo_text_and_binary(base_url: str) -> None:
    async with websockets.connect(f"ws://{base_url}/ws/echo/") as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello"
        await ws.send(b"\x01\x02")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"\x01\x02"
    assert ws.close_code == 1000


async def test_typed_path_variables(base_url: str) -> None:
    async with websockets.connect(f"ws://{base_url}/ws/7/lobby/") as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert (message["user_id"], message["room_id"]) == (7, "lobby")


async def test_path_variable_that_does_not_convert_is_404(base_url: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(f"ws://{base_url}/ws/seven/lobby/")
    assert info.value.response.status_code == 404


async def test_connect_without_accept_is_403(base_url: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(f"ws://{base_url}/ws/refuse/?token=bad")
    assert info.value.response.status_code == 403


async def test_close_in_connect_reaches_client_with_code_and_reason(base_url: str) -> None:
    async with websockets.connect(f"ws://{base_url}/ws/close-in-connect/") as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert (ws.close_code, ws.close_reason) == (1008, "Closing connection")


async def test_close_later_reaches_client_with_code_and_reason(base_url: str) -> None:
    async with websockets.connect(f"ws://{base_url}/ws/echo/") as ws:
        await ws.send("close-me")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert (ws.close_code, ws.close_reason) == (4004, "you asked")


async def test_crash_closes_1011_while_other_connections_keep_working(base_url: str) -> None:
    async with (
        websockets.connect(f"ws://{base_url}/ws/echo/") as bystander,
        websockets.connect(f"ws://{base_url}/ws/echo/") as victim,
    ):
        await victim.send("crash")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(victim.recv(), TIMEOUT)
        assert (victim.close_code, victim.close_reason) == (1011, "Internal server error")
        await bystander.send("still alive")
        assert await asyncio.wait_for(bystander.recv(), TIMEOUT) == "still alive"


async def test_two_mib_message_closes_1009(base_url: str) -> None:
    async def send_then_receive(ws: websockets.ClientConnection) -> None:
        # The server may close before the client has finished writing 2 MiB:
        # then send() itself raises; either way the close code is 1009.
        await ws.send(b"x" * (2 * 1024 * 1024))
        await asyncio.wait_for(ws.recv(), TIMEOUT)

    async with websockets.connect(f"ws://{base_url}/ws/echo/", max_size=None) as ws:
        with pytest.raises(ConnectionClosed):
            await send_then_receive(ws)
    assert ws.close_code == 1009


async def test_plain_get_is_426(base_url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"http://{base_url}/ws/echo/") as response:
        assert response.status == 426
        assert "detail" in await response.json()


async def test_send_from_http_endpoint_reaches_the_right_connection(base_url: str) -> None:
    sockets = [await websockets.connect(f"ws://{base_url}/ws/1/r/") for _ in range(10)]
    try:
        ids = [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["id"] for ws in sockets]
        async with aiohttp.ClientSession() as session:
            for index in (3, 7):
                async with session.post(f"http://{base_url}/notify/{ids[index]}/", data=f"for {index}") as response:
                    assert response.status == 200
        for index, ws in enumerate(sockets):
            if index in (3, 7):
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == f"for {index}"
            else:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.05)
    finally:
        for ws in sockets:
            await ws.close()


async def test_ctrl_c_closes_open_connections_with_1001() -> None:
    port = free_port()
    with run_process(wsframe_run("tests.apps.core_app:app", port), port) as process:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/echo/") as ws:
            process.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT * 5)
        assert ws.close_code == 1001
        assert process.wait(10) == 0


def test_routes_command_prints_the_compiled_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsframe", "routes", "tests.apps.core_app:app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines == [
        ["websocket", "/ws/echo/", "tests.apps.core_app.Echo"],
        ["websocket", "/ws/refuse/", "tests.apps.core_app.Refuse"],
        ["websocket", "/ws/close-in-connect/", "tests.apps.core_app.CloseInConnect"],
        ["http", "/notify/<connection_id>/", "tests.apps.core_app.notify"],
        ["websocket", "/ws/<user_id>/<room_id>/", "tests.apps.core_app.UserRoom"],
    ]


def test_run_with_a_bad_target_says_what_to_write() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsframe", "run", "tests.apps.core_app"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "expected module:attribute" in result.stderr
