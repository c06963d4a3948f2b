"""`python -m wsframe run` serving a real app to the websockets library's client."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "wsframe: expected module:attribute (e.g. samples.book.main:app), got 'tests.apps.core_app'"
    ]


# ------------------------------------------------- one-line errors, exit 2

BROKEN_TABLE = "from wsframe import create_app\napp = create_app({'ws/': 42})\n"
BAD_BACKEND = "from wsframe import create_app\napp = create_app({}, redis='nosuch://x')\n"
TABLE_ERROR = (
    "urls['ws/']: 42 is neither a GenericWebsocket subclass, an aiohttp web.View, an async handler function "
    "nor a nested dict"
)


def wsframe(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run `python -m wsframe ARGS` to completion (a bad argument must end it, not serve)."""
    return subprocess.run(
        [sys.executable, "-m", "wsframe", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a command that failed with status 2 and no traceback."""
    lines = [line for line in result.stderr.splitlines() if " INFO " not in line]
    assert (result.returncode, len(lines)) == (2, 1), result.stderr
    return lines[0]


def test_run_help_shows_every_default() -> None:
    result = wsframe("run", "--help")
    text = " ".join(result.stdout.split())
    assert result.returncode == 0
    for shown in ("(default: 127.0.0.1)", "(default: 8000)", "(default: info)", "(default: auto)"):
        assert shown in text


def test_port_out_of_range_is_one_line() -> None:
    assert one_line_error(wsframe("run", "samples.book.main:app", "--port", "99999")) == (
        "wsframe run: error: argument --port: 99999 is not a port number (1-65535) (see wsframe run --help)"
    )


def test_port_that_is_not_a_number_is_one_line() -> None:
    assert one_line_error(wsframe("run", "samples.book.main:app", "--port", "http")) == (
        "wsframe run: error: argument --port: 'http' is not a port number (see wsframe run --help)"
    )


def test_host_given_as_a_url_is_one_line() -> None:
    assert one_line_error(wsframe("run", "samples.book.main:app", "--host", "http://127.0.0.1")) == (
        "wsframe run: error: argument --host: 'http://127.0.0.1' is a URL; give the host name or address only, "
        "e.g. 127.0.0.1 (see wsframe run --help)"
    )


def test_host_with_a_port_is_one_line() -> None:
    assert one_line_error(wsframe("run", "samples.book.main:app", "--host", "localhost:8000")) == (
        "wsframe run: error: argument --host: 'localhost:8000' has a port in it; give the port with --port "
        "(see wsframe run --help)"
    )


def test_host_that_is_not_a_name_is_one_line() -> None:
    assert one_line_error(wsframe("run", "samples.book.main:app", "--host", "local..host")) == (
        "wsframe run: error: argument --host: 'local..host' is not a host name or IP address (see wsframe run --help)"
    )


def test_host_that_does_not_resolve_is_one_line() -> None:
    line = one_line_error(wsframe("run", "samples.book.main:app", "--host", "no-such-host.invalid"))
    assert line.startswith("wsframe: cannot listen on --host no-such-host.invalid: ")


def test_port_in_use_is_one_line() -> None:
    port = free_port()
    with run_process(wsframe_run("samples.book.main:app", port), port):
        line = one_line_error(wsframe("run", "samples.book.main:app", "--port", str(port)))
    assert line.startswith(f"wsframe: cannot listen on 127.0.0.1:{port}: ")
    assert line.endswith("Pick another --port or --host.")


def test_configuration_error_in_routes_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(BROKEN_TABLE)
    assert (
        one_line_error(wsframe("routes", "broken:app", cwd=tmp_path))
        == f"wsframe: broken is misconfigured: {TABLE_ERROR}"
    )


def test_configuration_error_in_run_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(BROKEN_TABLE)
    assert (
        one_line_error(wsframe("run", "broken:app", cwd=tmp_path)) == f"wsframe: broken is misconfigured: {TABLE_ERROR}"
    )


def test_configuration_error_at_startup_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "late.py").write_text(BAD_BACKEND)
    line = one_line_error(wsframe("run", "late:app", "--port", str(free_port()), cwd=tmp_path))
    assert line.startswith("wsframe: late is misconfigured: not a Redis URL: 'nosuch://x'")


def test_attribute_typo_names_the_attribute_and_the_app_it_meant() -> None:
    assert one_line_error(wsframe("routes", "samples.book.main:ap")) == (
        "wsframe: module 'samples.book.main' has no attribute 'ap'; did you mean 'app'?"
    )


def test_submodule_typo_names_the_package_and_its_modules() -> None:
    assert one_line_error(wsframe("routes", "samples.book.mian:app")) == (
        "wsframe: cannot import 'samples.book.mian': package 'samples.book' has no module 'mian'; did you mean "
        "'main'? (it has: main, urls, websockets)"
    )


def test_missing_top_package_says_to_run_from_its_folder(tmp_path: Path) -> None:
    assert one_line_error(wsframe("routes", "samples.book.main:app", cwd=tmp_path)) == (
        f"wsframe: cannot import 'samples.book.main': there is no 'samples' in the current folder ({tmp_path}) "
        "or on sys.path. Run from the folder that holds it, or fix the name."
    )


def test_file_path_target_gives_the_dotted_name() -> None:
    assert one_line_error(wsframe("routes", "samples/book/main.py:app")) == (
        "wsframe: 'samples/book/main.py' is a file path; write the module's dotted name: samples.book.main:app"
    )


def test_target_that_is_not_an_application_is_one_line() -> None:
    assert one_line_error(wsframe("routes", "samples.book.urls:urls")) == (
        "wsframe: samples.book.urls:urls is a dict, not an aiohttp Application"
    )
