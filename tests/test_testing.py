"""wsframe.testing: the ws_client fixture and WebsocketTestClient against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

from wsframe import ConnectionClosed, GenericWebsocket, WsframeError, create_app, status
from wsframe.testing import (
    TIMEOUT_SCALE_ENV,
    HandlerError,
    HandshakeRejectedError,
    WebsocketTestClient,
    WebsocketTestCluster,
    WebsocketTestConnection,
    WsClientFactory,
    WsClusterFactory,
    default_timeout,
)

SHORT = 0.05
"""A receive timeout for tests that expect nothing to arrive."""


class Echo(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        await self.send(data)


class JsonDoubler(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        value = msgspec.json.decode(data)
        await self.send({"double": value["n"] * 2})


class Silent(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        if data == "ping":
            await self.send("pong")


class ClosesWithReason(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        await self.send("last words")
        await self.close(4001, "bye now")


class CrashesInReceive(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        raise ValueError(f"cannot handle {data!r}")


class CrashesInConnect(GenericWebsocket):
    async def connect(self) -> None:
        raise LookupError("no such book")


class CrashesInDisconnect(GenericWebsocket):
    async def disconnect(self, code: int) -> None:
        raise RuntimeError(f"cleanup failed after {code}")


class Refuses(GenericWebsocket):
    async def connect(self) -> None:
        pass


class Recorder(GenericWebsocket):
    """Records the code its disconnect() got, in the app's list."""

    async def disconnect(self, code: int) -> None:
        self.app[CODES].put_nowait(code)


CODES = web.AppKey("codes", asyncio.Queue[int])


def recorder_app() -> web.Application:
    app = create_app({"ws/rec/": Recorder})
    app[CODES] = asyncio.Queue()
    return app


async def disconnect_code(app: web.Application) -> int:
    """Wait (bounded) for the next code a Recorder's disconnect() got; it runs after the close."""
    return await asyncio.wait_for(app[CODES].get(), default_timeout())


# ---------------------------------------------------------------- messages


async def test_text_is_echoed_as_text(ws_client: WsClientFactory) -> None:
    app = create_app({"ws/book/": Echo})
    async with ws_client(app).connect("/ws/book/") as ws:
        await ws.send("hi")
        assert await ws.receive() == "hi"


async def test_bytes_are_echoed_as_bytes(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/book/": Echo})).connect("/ws/book/") as ws:
        await ws.send(b"\x00\xff")
        assert await ws.receive() == b"\x00\xff"


async def test_send_json_and_receive_json_round_trip(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/double/": JsonDoubler})).connect("/ws/double/") as ws:
        await ws.send_json({"n": 21})
        assert await ws.receive_json() == {"double": 42}


async def test_send_json_sends_compact_text(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/book/": Echo})).connect("/ws/book/") as ws:
        await ws.send_json({"a": [1, None]})
        assert await ws.receive_text() == '{"a":[1,null]}'


async def test_send_of_a_dict_is_a_type_error(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/book/": Echo})).connect("/ws/book/") as ws:
        with pytest.raises(TypeError, match="send_json"):
            await ws.send({"a": 1})  # type: ignore[arg-type]


async def test_receive_text_of_a_binary_frame_is_a_type_error(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/book/": Echo})).connect("/ws/book/") as ws:
        await ws.send(b"raw")
        with pytest.raises(TypeError, match="binary frame"):
            await ws.receive_text()


async def test_receive_bytes_of_a_text_frame_is_a_type_error(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/book/": Echo})).connect("/ws/book/") as ws:
        await ws.send("text")
        with pytest.raises(TypeError, match="text frame"):
            await ws.receive_bytes()


async def test_receive_json_of_non_json_is_a_decode_error(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/book/": Echo})).connect("/ws/book/") as ws:
        await ws.send("not json")
        with pytest.raises(msgspec.DecodeError, match="not JSON"):
            await ws.receive_json()


async def test_path_without_leading_slash_is_accepted(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/book/": Echo})).connect("ws/book/") as ws:
        await ws.send("hi")
        assert await ws.receive() == "hi"


async def test_accepted_subprotocol_is_exposed(ws_client: WsClientFactory) -> None:
    class Chat(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept(subprotocol="chat.v1")

    async with ws_client(create_app({"ws/": Chat})).connect("/ws/", subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"


async def test_handshake_headers_reach_the_handler(ws_client: WsClientFactory) -> None:
    class Greeter(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.send(self.headers["X-User"])

    async with ws_client(create_app({"ws/": Greeter})).connect("/ws/", headers={"X-User": "ada"}) as ws:
        assert await ws.receive() == "ada"


# ----------------------------------------------------------------- closing


async def test_server_close_exposes_code_and_reason(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/": ClosesWithReason})).connect("/ws/") as ws:
        await ws.send("go")
        assert await ws.receive() == "last words"
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert (info.value.code, info.value.reason) == (4001, "bye now")
        assert (ws.close_code, ws.close_reason) == (4001, "bye now")


async def test_close_code_is_none_while_open(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/book/": Echo})).connect("/ws/book/") as ws:
        assert (ws.close_code, ws.close_reason, ws.closed) == (None, None, False)


async def test_receive_after_close_keeps_raising_connection_closed(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/": ClosesWithReason})).connect("/ws/") as ws:
        await ws.send("go")
        assert await ws.wait_closed() == 4001
        for _ in range(2):
            with pytest.raises(ConnectionClosed):
                await ws.receive()


async def test_send_after_close_raises_connection_closed(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/book/": Echo})).connect("/ws/book/") as ws:
        await ws.close()
        with pytest.raises(ConnectionClosed) as info:
            await ws.send("late")
        assert info.value.code == 1000


async def test_clean_close_sends_its_code_to_disconnect(ws_client: WsClientFactory) -> None:
    app = recorder_app()
    async with ws_client(app).connect("/ws/rec/") as ws:
        await ws.close(4002, "leaving")
        assert (ws.close_code, ws.close_reason) == (4002, "leaving")
    assert await disconnect_code(app) == 4002


async def test_leaving_the_block_closes_with_1000(ws_client: WsClientFactory) -> None:
    app = recorder_app()
    async with ws_client(app).connect("/ws/rec/") as ws:
        pass
    assert ws.close_code == 1000
    assert await disconnect_code(app) == 1000


async def test_drop_gives_disconnect_1006(ws_client: WsClientFactory) -> None:
    app = recorder_app()
    async with ws_client(app).connect("/ws/rec/") as ws:
        await ws.drop()
        assert ws.close_code == 1006
    assert await disconnect_code(app) == 1006


async def test_drop_then_send_raises_connection_closed_1006(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/book/": Echo})).connect("/ws/book/") as ws:
        await ws.drop()
        with pytest.raises(ConnectionClosed) as info:
            await ws.send("late")
        assert info.value.code == 1006


async def test_handshake_not_accepted_is_rejected_with_403(ws_client: WsClientFactory) -> None:
    with pytest.raises(HandshakeRejectedError) as info:
        async with ws_client(create_app({"ws/": Refuses})).connect("/ws/"):
            pass
    assert info.value.status == 403


async def test_unknown_path_is_rejected_with_404(ws_client: WsClientFactory) -> None:
    with pytest.raises(HandshakeRejectedError) as info:
        async with ws_client(create_app({"ws/book/": Echo})).connect("/ws/nope/"):
            pass
    assert info.value.status == 404


# ------------------------------------------------------------ app lifecycle


async def test_startup_runs_before_the_first_connection(ws_client: WsClientFactory) -> None:
    class ReportsStartup(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.send(self.app[EVENTS])

    app = create_app({"ws/": ReportsStartup})
    app[EVENTS] = []
    app.on_startup.append(lambda app: _record(app, "startup"))
    async with ws_client(app).connect("/ws/") as ws:
        assert await ws.receive_json() == ["startup"]


EVENTS = web.AppKey("events", list[str])


async def _record(app: web.Application, event: str) -> None:
    app[EVENTS].append(event)


async def test_close_runs_shutdown_and_cleanup() -> None:
    app = create_app({"ws/book/": Echo})
    app[EVENTS] = []
    app.on_startup.append(lambda app: _record(app, "startup"))
    app.on_shutdown.append(lambda app: _record(app, "shutdown"))
    app.on_cleanup.append(lambda app: _record(app, "cleanup"))
    async with WebsocketTestClient(app) as client, client.connect("/ws/book/") as ws:
        await ws.send("hi")
        assert await ws.receive() == "hi"
    assert app[EVENTS] == ["startup", "shutdown", "cleanup"]


async def test_server_shutdown_closes_open_connections_with_1001() -> None:
    app = recorder_app()
    client = WebsocketTestClient(app)
    async with client.connect("/ws/rec/") as ws:
        await client.http.server.close()  # stop the server with the connection still open
        assert await ws.wait_closed() == 1001
    await client.close()
    assert app[CODES].get_nowait() == 1001


async def test_same_app_gives_same_client(ws_client: WsClientFactory) -> None:
    app = create_app({"ws/book/": Echo})
    assert ws_client(app) is ws_client(app)


async def test_same_app_with_other_options_is_an_error(ws_client: WsClientFactory) -> None:
    app = create_app({"ws/book/": Echo})
    ws_client(app, timeout=0.5)
    with pytest.raises(WsframeError, match="other options"):
        ws_client(app, timeout=0.25)


async def test_http_post_reaches_the_app(ws_client: WsClientFactory) -> None:
    async def add(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"sum": body["a"] + body["b"]})

    response = await ws_client(create_app({"add/": add})).post("/add/", json={"a": 2, "b": 3})
    assert (response.status, await response.json()) == (200, {"sum": 5})


async def test_http_before_start_is_an_error_that_says_to_start() -> None:
    client = WebsocketTestClient(create_app({"ws/book/": Echo}))
    with pytest.raises(WsframeError, match="start"):
        _ = client.http


async def test_closed_client_cannot_start_again() -> None:
    client = WebsocketTestClient(create_app({"ws/book/": Echo}))
    await client.start()
    await client.close()
    with pytest.raises(WsframeError, match="closed"):
        await client.start()


# ----------------------------------------------------------------- timeouts


async def test_receive_times_out_instead_of_hanging(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/": Silent})).connect("/ws/") as ws:
        await ws.send("hello?")
        with pytest.raises(TimeoutError, match="no message on /ws/"):
            await ws.receive(timeout=SHORT)


async def test_connection_is_usable_after_a_receive_timeout(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/": Silent})).connect("/ws/") as ws:
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=SHORT)
        await ws.send("ping")
        assert await ws.receive() == "pong"
        assert ws.close_code is None


async def test_client_timeout_is_the_default_for_receive(ws_client: WsClientFactory) -> None:
    client = ws_client(create_app({"ws/": Silent}), timeout=SHORT)
    async with client.connect("/ws/") as ws:
        assert ws.timeout == SHORT
        with pytest.raises(TimeoutError, match=f"within {SHORT:g} s"):
            await ws.receive()


async def test_wait_closed_times_out_while_open(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/": Silent})).connect("/ws/") as ws:
        with pytest.raises(TimeoutError, match="still open"):
            await ws.wait_closed(timeout=SHORT)


def test_default_timeout_is_scaled_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TIMEOUT_SCALE_ENV, "1")
    base = default_timeout()
    monkeypatch.setenv(TIMEOUT_SCALE_ENV, "3")
    assert default_timeout() == pytest.approx(3 * base)


@pytest.mark.parametrize("value", ["0", "-2", "fast"])
def test_bad_timeout_scale_is_a_value_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(TIMEOUT_SCALE_ENV, value)
    with pytest.raises(ValueError, match=TIMEOUT_SCALE_ENV):
        default_timeout()


# ------------------------------------------------------------ handler errors


async def test_crash_in_receive_raises_handler_error_from_the_original(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/": CrashesInReceive})).connect("/ws/") as ws:
        await ws.send("x")
        with pytest.raises(HandlerError, match=r"CrashesInReceive\.receive\(\) failed") as info:
            await ws.receive()
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    assert str(cause) == "cannot handle 'x'"
    assert info.value.exception is cause
    assert ws.close_code == status.WS_1011_INTERNAL_ERROR


async def test_handler_error_traceback_reaches_the_handler_line(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/": CrashesInReceive})).connect("/ws/") as ws:
        await ws.send("x")
        with pytest.raises(HandlerError) as info:
            await ws.receive()
    frames = traceback.extract_tb(info.value.exception.__traceback__)
    assert frames[-1].name == "receive"
    assert frames[-1].line == 'raise ValueError(f"cannot handle {data!r}")'


async def test_handler_error_is_raised_once_then_connection_closed(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/": CrashesInReceive})).connect("/ws/") as ws:
        await ws.send("x")
        with pytest.raises(HandlerError):
            await ws.receive()
        with pytest.raises(ConnectionClosed) as info:
            await ws.receive()
        assert info.value.code == 1011


async def test_wait_closed_raises_handler_error(ws_client: WsClientFactory) -> None:
    async with ws_client(create_app({"ws/": CrashesInReceive})).connect("/ws/") as ws:
        await ws.send("x")
        with pytest.raises(HandlerError):
            await ws.wait_closed()


async def test_crash_in_connect_before_accept_raises_handler_error(ws_client: WsClientFactory) -> None:
    with pytest.raises(HandlerError, match="connect") as info:
        async with ws_client(create_app({"ws/": CrashesInConnect})).connect("/ws/"):
            pass
    assert isinstance(info.value.__cause__, LookupError)


async def test_crash_in_an_auth_check_raises_handler_error(ws_client: WsClientFactory) -> None:
    async def broken_auth(connection: GenericWebsocket) -> object:
        raise KeyError("user table")

    app = create_app({"ws/book/": Echo}, auth=broken_auth)
    with pytest.raises(HandlerError, match="auth or permission check") as info:
        async with ws_client(app).connect("/ws/book/"):
            pass
    assert isinstance(info.value.__cause__, KeyError)


async def test_unobserved_crash_is_raised_when_the_client_closes() -> None:
    client = WebsocketTestClient(create_app({"ws/": CrashesInDisconnect}))
    async with client.connect("/ws/") as ws:
        await ws.send("x")
    with pytest.raises(HandlerError, match="disconnect") as info:
        await client.close()
    assert str(info.value.__cause__) == "cleanup failed after 1000"


async def test_unobserved_crash_is_kept_when_not_raising() -> None:
    client = WebsocketTestClient(create_app({"ws/": CrashesInReceive}), raise_handler_errors=False)
    async with client.connect("/ws/") as ws:
        await ws.send("x")
        await asyncio.sleep(0)
    await client.close()
    assert [type(e.exception) for e in client.handler_errors] == [ValueError]


async def test_errors_of_other_clients_are_not_captured() -> None:
    crashing = WebsocketTestClient(create_app({"ws/": CrashesInReceive}), raise_handler_errors=False)
    bystander = WebsocketTestClient(create_app({"ws/book/": Echo}))
    async with bystander, crashing, crashing.connect("/ws/") as ws:
        await ws.send("x")
        with pytest.raises(HandlerError):
            await ws.receive()
    assert bystander.handler_errors == []


# ------------------------------------------------------------- the plugin


def run_pytest(tmp_path: Path, test_source: str, ini: str = "") -> subprocess.CompletedProcess[str]:
    """Run pytest in a fresh process on one test file; the plugin comes from the entry point."""
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n" + ini
    )
    (tmp_path / "test_user.py").write_text(textwrap.dedent(test_source))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


USER_TEST = """
    from wsframe import GenericWebsocket, create_app

    class Echo(GenericWebsocket):
        async def receive(self, data):
            await self.send(data)

    async def test_echo(ws_client):
        async with ws_client(create_app({'ws/book/': Echo})).connect('/ws/book/') as ws:
            await ws.send('hi')
            assert await ws.receive() == 'hi'
"""


def test_plugin_is_registered_by_the_entry_point(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, USER_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_ini_option_sets_the_default_timeout(tmp_path: Path) -> None:
    source = """
        from wsframe import create_app

        async def test_timeout(ws_client):
            assert ws_client(create_app({})).timeout == 0.25
    """
    env_scale = os.environ.get(TIMEOUT_SCALE_ENV)
    if env_scale not in (None, "1"):
        pytest.skip(f"{TIMEOUT_SCALE_ENV}={env_scale} scales the configured timeout")
    result = run_pytest(tmp_path, source, ini="wsframe_timeout = 0.25\n")
    assert result.returncode == 0, result.stdout + result.stderr


def test_bad_ini_timeout_fails_the_run_naming_the_option(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, USER_TEST, ini="wsframe_timeout = soon\n")
    assert result.returncode != 0
    assert "wsframe_timeout must be a positive number" in result.stdout + result.stderr


def test_failing_test_shows_the_handlers_traceback(tmp_path: Path) -> None:
    source = """
        from wsframe import GenericWebsocket, create_app

        class Broken(GenericWebsocket):
            async def receive(self, data):
                total = 1 / 0  # the handler's bug

        async def test_broken(ws_client):
            async with ws_client(create_app({'ws/': Broken})).connect('/ws/') as ws:
                await ws.send('hi')
                assert await ws.receive() == 'hi'
    """
    result = run_pytest(tmp_path, source)
    assert result.returncode == 1
    assert "total = 1 / 0  # the handler's bug" in result.stdout
    assert "ZeroDivisionError: division by zero" in result.stdout
    assert "HandlerError: Broken.receive() failed; closing with 1011" in result.stdout


def test_unobserved_crash_fails_the_test_at_teardown(tmp_path: Path) -> None:
    source = """
        from wsframe import GenericWebsocket, create_app

        class Leaky(GenericWebsocket):
            async def disconnect(self, code):
                raise KeyError('session')

        async def test_leaky(ws_client):
            async with ws_client(create_app({'ws/': Leaky})).connect('/ws/') as ws:
                await ws.send('hi')
    """
    result = run_pytest(tmp_path, source)
    assert result.returncode == 1
    assert "1 passed, 1 error" in result.stdout
    assert "Leaky.disconnect() failed" in result.stdout


# ------------------------------------------------------------- the cluster

CLUSTER_APP = "tests.apps.cluster_app:app"
"""Sends ``{"id", "pid"}`` on connect; ``POST send/<id>/`` sends the body to that id (see the module)."""


async def connections_on_two_workers(
    cluster: WebsocketTestCluster, stack: contextlib.AsyncExitStack
) -> dict[int, tuple[WebsocketTestConnection, str]]:
    """Open connections until two different workers own one each; returns pid -> (connection, id)."""
    owners: dict[int, tuple[WebsocketTestConnection, str]] = {}
    for _ in range(200):
        ws = await cluster.connect("/ws/").__aenter__()
        hello = await ws.receive_json(timeout=5 * default_timeout())
        if hello["pid"] in owners:
            await ws.close()
            await asyncio.sleep(0.02)  # let a worker that is still starting its app take the next one
            continue
        stack.push_async_callback(ws.close)
        owners[hello["pid"]] = (ws, hello["id"])
        if len(owners) == 2:
            return owners
    raise AssertionError(f"200 connections all landed on {set(owners)}:\n{cluster.log()}")


@pytest.mark.functional
@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="ipc"),
        pytest.param({"CLUSTER_BACKEND": "redis://127.0.0.1:6379/0"}, id="redis"),
    ],
)
async def test_cluster_send_reaches_a_connection_on_another_worker(
    ws_cluster: WsClusterFactory, env: dict[str, str]
) -> None:
    cluster = ws_cluster(CLUSTER_APP, workers=2, env=env)
    async with contextlib.AsyncExitStack() as stack:
        owners = await connections_on_two_workers(cluster, stack)
        for ws, connection_id in owners.values():
            # Any worker may take the POST; whichever it is, one of the two targets is elsewhere.
            response = await cluster.post(f"/send/{connection_id}/", data=b"across workers")
            assert response.status == 200
            assert await ws.receive(timeout=5 * default_timeout()) == "across workers"


@pytest.mark.functional
async def test_cluster_without_workers_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="workers"):
        WebsocketTestCluster(CLUSTER_APP, workers=0)


@pytest.mark.functional
async def test_cluster_that_cannot_start_reports_gunicorns_log() -> None:
    cluster = WebsocketTestCluster("tests.apps.no_such_module:app", workers=1)
    with pytest.raises(WsframeError, match="no_such_module"):
        await cluster.start()
    await cluster.close()


@pytest.mark.functional
async def test_cluster_worker_traceback_fails_close() -> None:
    cluster = WebsocketTestCluster(CLUSTER_APP, workers=1)
    async with cluster.connect("/ws/") as ws:
        hello = await ws.receive_json(timeout=5 * default_timeout())
        # A close code that may not be sent makes the app's handler raise ValueError.
        response = await cluster.post(f"/close/{hello['id']}/?code=1005")
        assert response.status == 500
    with pytest.raises(WsframeError, match="Traceback"):
        await cluster.close()
