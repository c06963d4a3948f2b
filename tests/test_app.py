"""create_app: a real aiohttp Application, settings, startup and the 1001 drain on shutdown."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.rawclient import CLOSE, TIMEOUT, RawWebsocket, raw_connect
from tests.support.servers import Serve
from wsframe import ConfigurationError, GenericWebsocket, Settings, create_app
from wsframe.config import SETTINGS_KEY
from wsframe.registry import REGISTRY_KEY


class Echo(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        await self.send(data)


def test_create_app_returns_an_aiohttp_application() -> None:
    assert isinstance(create_app({"ws/": Echo}), web.Application)


def test_settings_default_to_1_mib_messages_a_25_s_heartbeat_no_compression_and_5_s_and_10_s_to_close() -> None:
    settings = create_app({})[SETTINGS_KEY]
    assert settings == Settings(
        max_message_size=1024 * 1024, heartbeat=25.0, compression=False, close_timeout=5.0, shutdown_timeout=10.0
    )


def test_settings_given_to_create_app_are_kept() -> None:
    settings = create_app({}, max_message_size=10, heartbeat=0, compression=True)[SETTINGS_KEY]
    assert (settings.max_message_size, settings.heartbeat, settings.compression) == (10, 0, True)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("max_message_size", 0, "max_message_size must be a positive number of bytes"),
        ("heartbeat", -1, "heartbeat must be a number of seconds"),
        ("close_timeout", 0, "close_timeout must be a positive number"),
        ("shutdown_timeout", -5, "shutdown_timeout must be a positive number"),
        ("rate_limit", 0, "rate_limit must be a positive number"),
        ("max_connections", 0, "max_connections must be a positive whole number"),
        ("allowed_origins", "https://a.example", "allowed_origins must be"),
    ],
)
def test_bad_setting_is_a_configuration_error(option: str, value: float, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_app({}, **{option: value})


async def test_aiohttp_middlewares_run_for_websocket_handshakes(serve: Serve) -> None:
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:  # type: ignore[type-arg]
        seen.append(request.path)
        return await handler(request)

    client = await serve(create_app({"ws/": Echo}, middlewares=[record]))
    ws = await raw_connect(client, "/ws/")
    await ws.aclose()
    assert seen == ["/ws/"]


async def test_app_options_reach_web_application(serve: Serve) -> None:
    async def upload(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    client = await serve(create_app({"up/": upload}, client_max_size=10))
    assert (await client.post("/up/", data=b"x" * 11)).status == 413


async def test_shutdown_closes_every_connection_with_1001(serve: Serve) -> None:
    codes: list[int] = []

    class Watch(Echo):
        async def disconnect(self, code: int) -> None:
            codes.append(code)

    app = create_app({"ws/": Watch})
    server = TestServer(app)
    await server.start_server()
    sockets = [await RawWebsocket.connect("127.0.0.1", int(server.port or 0), "/ws/") for _ in range(5)]
    readers = [asyncio.ensure_future(ws.frames_until_eof(TIMEOUT)) for ws in sockets]
    await server.close()
    for frames in await asyncio.gather(*readers):
        assert [(f.opcode, f.close_code, f.close_reason) for f in frames] == [(CLOSE, 1001, "Server shutdown")]
    assert codes == [1001] * 5
    assert app[REGISTRY_KEY].connections == {}


async def test_shutdown_drops_peers_that_never_answer_within_the_bound() -> None:
    app = create_app({"ws/": Echo}, shutdown_timeout=0.2, close_timeout=30)
    server = TestServer(app)
    await server.start_server()
    silent = await RawWebsocket.connect("127.0.0.1", int(server.port or 0), "/ws/")
    await server.close()
    # The peer never answers our close frame, and close_timeout is 30 s: reaching
    # TCP EOF within the test's receive timeout shows shutdown_timeout dropped it.
    frames = await silent.frames_until_eof(TIMEOUT, answer_close=False)
    assert [(f.opcode, f.close_code) for f in frames] == [(CLOSE, 1001)]


def test_importing_every_wsframe_module_changes_no_logging_state() -> None:
    # In a fresh interpreter: this one has imported wsframe long ago.
    script = (
        "import logging, pkgutil, importlib, wsframe\n"
        "for info in pkgutil.walk_packages(wsframe.__path__, 'wsframe.'):\n"
        "    if info.name != 'wsframe.__main__':\n"
        "        importlib.import_module(info.name)\n"
        "root = logging.getLogger()\n"
        "loggers = [l for l in logging.Logger.manager.loggerDict.values() if isinstance(l, logging.Logger)]\n"
        "changed = [l.name for l in loggers if l.filters or l.handlers or l.level]\n"
        "print(sorted(changed), root.filters, root.handlers, logging.getLevelName(root.level))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[] [] [] WARNING"


def test_create_app_quiets_aiohttp_warning_about_declined_subprotocols() -> None:
    create_app({})
    names = [getattr(f, "__name__", "") for f in logging.getLogger("aiohttp.websocket").filters]
    assert names.count("_not_a_subprotocol_mismatch") == 1
