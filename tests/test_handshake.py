"""The checks between an upgrade request and ``connect()``, each refusing with its HTTP status.

A malformed handshake is answered 400 saying what is wrong, a refused origin 403, a full worker
503, a bad path variable 404, failed authentication 401 and a denied permission 403, in that
order, every one with a JSON ``{"detail": ...}`` body and before any handler code runs. Statuses
that other modules already pin down (426, 408, 429, 500, and the 400 for a bad version) are
tested there: tests/test_websocket.py, tests/test_limits.py and tests/test_security.py.
"""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.rawclient import TEXT, TIMEOUT, Frame, HandshakeRejected, raw_connect
from tests.support.servers import Serve
from wsframe import GenericWebsocket, create_app
from wsframe.exceptions import AuthenticationFailed


class Echo(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        await self.send(data)


async def refusal(
    client: TestClient[web.Request, web.Application], path: str, headers: dict[str, str] | None = None
) -> HandshakeRejected:
    """The HandshakeRejected that opening *path* on *client* raises (fails the test if it opens)."""
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, path, headers)
    return info.value


def detail(rejected: HandshakeRejected) -> str:
    """The ``detail`` of a refusal's JSON body."""
    body = json.loads(rejected.body)
    assert isinstance(body, dict)
    return str(body["detail"])


async def fails(connection: GenericWebsocket) -> str:
    raise AuthenticationFailed("no token")


async def deny(connection: GenericWebsocket) -> bool:
    return False


# ------------------------------------------------------------ malformed: 400


async def test_a_key_that_is_not_16_bytes_of_base64_is_refused_with_400_saying_so(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}))
    rejected = await refusal(client, "/ws/", {"Sec-WebSocket-Key": "dG9vIHNob3J0"})  # "too short"
    assert (rejected.status, detail(rejected)) == (400, "Sec-WebSocket-Key must be 16 bytes, base64-encoded.")


async def test_a_connection_header_without_upgrade_is_refused_with_400_saying_so(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}))
    rejected = await refusal(client, "/ws/", {"Connection": "keep-alive"})
    assert (rejected.status, detail(rejected)) == (400, "The Connection header must include 'upgrade'.")


async def test_the_400_for_another_version_names_the_version_to_use(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}))
    rejected = await refusal(client, "/ws/", {"Sec-WebSocket-Version": "8"})
    assert detail(rejected) == "Unsupported Sec-WebSocket-Version; use 13."


async def test_a_malformed_handshake_never_reaches_connect(serve: Serve) -> None:
    called: list[str] = []

    class Recorder(GenericWebsocket):
        async def connect(self) -> None:
            called.append(self.connection_id)
            await self.accept()

    client = await serve(create_app({"ws/": Recorder}))
    assert (await refusal(client, "/ws/", {"Sec-WebSocket-Key": "x"})).status == 400
    assert called == []


async def test_a_malformed_handshake_is_400_even_from_a_refused_origin(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}))
    headers = {"Sec-WebSocket-Key": "x", "Origin": "https://evil.example"}
    assert (await refusal(client, "/ws/", headers)).status == 400


# ----------------------------------------------------------------- origin: 403


async def test_a_refused_origin_is_403_with_a_json_detail(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}))
    rejected = await refusal(client, "/ws/", {"Origin": "https://evil.example"})
    host = f"{client.host}:{client.port}"
    assert (rejected.status, rejected.headers["content-type"], detail(rejected)) == (
        403,
        "application/json; charset=utf-8",
        f"Origin 'https://evil.example' not allowed for Host '{host}': by default only pages from the same"
        " host and port may connect. Allow it with allowed_origins=['https://evil.example'] in create_app()"
        " or on the handler class.",
    )


async def test_a_refused_origin_is_403_even_when_the_worker_is_full(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}, max_connections=1))
    await raw_connect(client, "/ws/")
    assert (await refusal(client, "/ws/", {"Origin": "https://evil.example"})).status == 403


# ----------------------------------------------------------- limits: 503, 429


async def test_a_full_worker_is_503_with_a_json_detail(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}, max_connections=1))
    await raw_connect(client, "/ws/")
    rejected = await refusal(client, "/ws/")
    assert (rejected.status, detail(rejected)) == (503, "Too many connections; try again later.")


async def test_a_full_worker_is_503_before_path_variables_are_converted(serve: Serve) -> None:
    class Typed(Echo):
        async def connect(self, user_id: int) -> None:
            await self.accept()

    client = await serve(create_app({"ws/<user_id>/": Typed}, max_connections=1))
    await raw_connect(client, "/ws/1/")
    assert (await refusal(client, "/ws/not-a-number/")).status == 503


async def test_a_handler_class_with_its_own_max_connections_counts_its_connections_apart(serve: Serve) -> None:
    class Limited(Echo):
        max_connections = 1

    client = await serve(create_app({"ws/limited/": Limited, "ws/echo/": Echo}, max_connections=1))
    await raw_connect(client, "/ws/limited/")
    echo = await raw_connect(client, "/ws/echo/")  # the app's one slot is still free
    assert (await refusal(client, "/ws/limited/")).status == 503
    echo.send_text("app slot")
    assert await echo.read_frame(TIMEOUT) == Frame(TEXT, b"app slot")


async def test_a_handshake_refused_by_auth_does_not_hold_a_connection_slot(serve: Serve) -> None:
    class Guarded(Echo):
        auth = fails

    client = await serve(create_app({"ws/guarded/": Guarded, "ws/echo/": Echo}, max_connections=1))
    assert [(await refusal(client, "/ws/guarded/")).status for _ in range(3)] == [401, 401, 401]
    echo = await raw_connect(client, "/ws/echo/")
    echo.send_text("slot free")
    assert await echo.read_frame(TIMEOUT) == Frame(TEXT, b"slot free")


# ------------------------------------------------------- path variables: 404


async def test_a_path_variable_that_does_not_convert_is_404_with_a_json_detail(serve: Serve) -> None:
    class Typed(Echo):
        async def connect(self, user_id: int) -> None:
            await self.accept()

    client = await serve(create_app({"ws/<user_id>/": Typed}))
    rejected = await refusal(client, "/ws/abc/")
    assert (rejected.status, detail(rejected)) == (404, "Not found")


async def test_a_path_variable_that_does_not_convert_is_404_before_auth_runs(serve: Serve) -> None:
    asked: list[str] = []

    async def auth(connection: GenericWebsocket) -> str:
        asked.append(connection.request.path)
        return "ada"

    class Typed(Echo):
        async def connect(self, user_id: int) -> None:
            await self.accept()

    client = await serve(create_app({"ws/<user_id>/": Typed}, auth=auth))
    assert (await refusal(client, "/ws/abc/")).status == 404
    assert asked == []


# --------------------------------------------------------- auth: 401 and 403


async def test_failed_authentication_is_401_with_a_json_detail(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}, auth=fails))
    rejected = await refusal(client, "/ws/")
    assert (rejected.status, detail(rejected)) == (401, "Authentication required.")


async def test_a_denied_permission_is_403_with_a_json_detail(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}, permissions=[deny]))
    rejected = await refusal(client, "/ws/")
    assert (rejected.status, detail(rejected)) == (403, "Permission denied.")


async def test_failed_authentication_is_401_before_permissions_run(serve: Serve) -> None:
    asked: list[str] = []

    async def recorded(connection: GenericWebsocket) -> bool:
        asked.append("permission")
        return True

    client = await serve(create_app({"ws/": Echo}, auth=fails, permissions=[recorded]))
    assert (await refusal(client, "/ws/")).status == 401
    assert asked == []


async def test_auth_and_permissions_run_before_connect(serve: Serve) -> None:
    order: list[str] = []

    async def auth(connection: GenericWebsocket) -> str:
        order.append("auth")
        return "ada"

    async def allow(connection: GenericWebsocket) -> bool:
        order.append("permission")
        return True

    class Recorder(GenericWebsocket):
        async def connect(self) -> None:
            order.append("connect")
            await self.accept()
            await self.send(str(self.user))

    client = await serve(create_app({"ws/": Recorder}, auth=auth, permissions=[allow]))
    ws = await raw_connect(client, "/ws/")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"ada")
    assert order == ["auth", "permission", "connect"]
