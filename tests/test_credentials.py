"""First-message login, expiring tokens and their refresh, over a real localhost server."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from tests.apps.credentials_app import verify
from tests.support.servers import Serve
from wsframe import GenericWebsocket, MessageAuth, TokenAuth, close_group, create_app
from wsframe.credentials import (
    WS_4401_INVALID_TOKEN,
    WS_4403_PERMISSION_DENIED,
    WS_4408_LOGIN_TIMEOUT,
    WS_4410_TOKEN_EXPIRED,
)

SLOW = 10.0
"""How long a client waits for something that must come (generous: the machine is shared)."""


class Recorder:
    """A handler class of the test's own, counting connect() and keeping what receive() saw."""

    def __init__(self, auth: Any, **attributes: Any) -> None:
        self.connects = 0
        self.received: list[str] = []
        recorder = self

        class Handler(GenericWebsocket):
            async def connect(self) -> None:
                recorder.connects += 1
                await self.accept()
                await self.send({"user": self.user})

            async def receive(self, data: str) -> None:
                recorder.received.append(data)
                await self.send({"user": self.user, "got": data})

        Handler.auth = auth
        for name, value in attributes.items():
            setattr(Handler, name, value)
        self.handler = Handler


async def next_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = SLOW) -> Any:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def close_code(ws: aiohttp.ClientWebSocketResponse, timeout: float = SLOW) -> int | None:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is WSMsgType.CLOSE, msg
    return ws.close_code


# ----------------------------------------------------------- first-message login


async def test_a_good_login_message_gets_the_apps_first_message(serve: Serve) -> None:
    app = Recorder(MessageAuth(verify, timeout=SLOW))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/") as ws:
        await ws.send_json({"type": "auth", "token": "s3cret"})
        assert await next_json(ws) == {"user": "alice"}
    assert app.connects == 1


async def test_the_login_message_never_reaches_receive(serve: Serve) -> None:
    app = Recorder(MessageAuth(verify, timeout=SLOW))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/") as ws:
        await ws.send_json({"type": "auth", "token": "s3cret"})
        await next_json(ws)
        await ws.send_str("hello")
        assert await next_json(ws) == {"user": "alice", "got": "hello"}
    assert app.received == ["hello"]


async def test_a_wrong_login_token_closes_4401_without_connect(serve: Serve) -> None:
    app = Recorder(MessageAuth(verify, timeout=SLOW))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/") as ws:
        await ws.send_json({"type": "auth", "token": "wrong"})
        assert await close_code(ws) == WS_4401_INVALID_TOKEN
    assert app.connects == 0


async def test_a_first_message_that_is_not_a_login_closes_4401_without_connect(serve: Serve) -> None:
    app = Recorder(MessageAuth(verify, timeout=SLOW))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/") as ws:
        await ws.send_str("hello")
        assert await close_code(ws) == WS_4401_INVALID_TOKEN
    assert (app.connects, app.received) == (0, [])


async def test_a_silent_client_closes_4408_without_connect(serve: Serve) -> None:
    app = Recorder(MessageAuth(verify, timeout=0.5))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/") as ws:
        assert await close_code(ws) == WS_4408_LOGIN_TIMEOUT
    assert app.connects == 0


async def test_a_permission_refusing_the_logged_in_user_closes_4403_without_connect(serve: Serve) -> None:
    async def only_bob(connection: Any) -> bool:
        return bool(connection.user == "bob")

    app = Recorder(MessageAuth(verify, timeout=SLOW), permissions=(only_bob,))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/") as ws:
        await ws.send_json({"type": "auth", "token": "s3cret"})
        assert await close_code(ws) == WS_4403_PERMISSION_DENIED
    assert app.connects == 0


async def test_login_handshake_needs_no_token_in_the_url(serve: Serve) -> None:
    app = Recorder(MessageAuth(verify, timeout=SLOW))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/") as ws:
        assert ws.closed is False  # the 101 came back without any credential
        await ws.send_json({"type": "auth", "token": "s3cret"})
        await next_json(ws)


# ----------------------------------------------------------- expiry and refresh


async def test_a_token_expiring_in_2_s_closes_4410_at_about_2_s(serve: Serve) -> None:
    app = Recorder(TokenAuth(verify))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/?token=exp2:alice") as ws:
        opened = time.monotonic()
        assert await next_json(ws) == {"user": "alice"}
        assert await close_code(ws) == WS_4410_TOKEN_EXPIRED
        elapsed = time.monotonic() - opened
    assert 1.5 < elapsed < 2 + SLOW


async def test_an_expiring_first_message_login_closes_4410(serve: Serve) -> None:
    app = Recorder(MessageAuth(verify, timeout=SLOW))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/") as ws:
        await ws.send_json({"type": "auth", "token": "exp1:alice"})
        assert await next_json(ws) == {"user": "alice"}
        assert await close_code(ws) == WS_4410_TOKEN_EXPIRED


async def test_a_refresh_at_1_s_keeps_the_connection_open_past_3_s_with_the_new_user(serve: Serve) -> None:
    app = Recorder(TokenAuth(verify))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/?token=exp2:alice") as ws:
        opened = time.monotonic()
        assert await next_json(ws) == {"user": "alice"}
        await asyncio.sleep(1)
        await ws.send_json({"type": "auth", "token": "exp30:bob"})
        await asyncio.sleep(max(0.0, 3.2 - (time.monotonic() - opened)))
        await ws.send_str("still there?")
        assert await next_json(ws) == {"user": "bob", "got": "still there?"}
        assert ws.closed is False
    assert app.received == ["still there?"]  # the refresh was wsframe's, not receive()'s


async def test_a_refused_refresh_closes_4401(serve: Serve) -> None:
    app = Recorder(TokenAuth(verify))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/?token=exp30:alice") as ws:
        await next_json(ws)
        await ws.send_json({"type": "auth", "token": "wrong"})
        assert await close_code(ws) == WS_4401_INVALID_TOKEN
    assert app.received == []


async def test_an_application_message_that_mentions_auth_still_reaches_receive(serve: Serve) -> None:
    app = Recorder(TokenAuth(verify))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/?token=exp30:alice") as ws:
        await next_json(ws)
        await ws.send_str('{"type": "auth"}')
        assert await next_json(ws) == {"user": "alice", "got": '{"type": "auth"}'}


async def test_without_expiry_an_auth_message_is_an_ordinary_message(serve: Serve) -> None:
    app = Recorder(TokenAuth(verify))
    client = await serve(create_app({"ws/": app.handler}))
    async with client.ws_connect("/ws/?token=s3cret") as ws:
        await next_json(ws)
        login = '{"type": "auth", "token": "exp30:bob"}'
        await ws.send_str(login)
        assert await next_json(ws) == {"user": "alice", "got": login}


async def test_an_already_expired_token_is_refused_with_401(serve: Serve) -> None:
    app = Recorder(TokenAuth(verify))
    client = await serve(create_app({"ws/": app.handler}))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws/?token=exp-1:alice")
    assert refused.value.status == 401
    assert app.connects == 0


def test_message_auth_refuses_a_timeout_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        MessageAuth(verify, timeout=0)


# ----------------------------------------------------------------- revoking


async def test_revoking_a_user_closes_every_connection_in_their_group(serve: Serve) -> None:
    # The recipe of docs/security.md: each connection joins user:<name>; close_group() revokes.
    class PerUser(GenericWebsocket):
        auth = MessageAuth(verify, timeout=SLOW)  # type: ignore[assignment]  # mypy reads a callable ClassVar as a method

        async def connect(self) -> None:
            await self.accept()
            await self.join_group(f"user:{self.user}")
            await self.send({"user": self.user})

        async def receive(self, data: str) -> None:
            await self.send({"user": self.user, "got": data})

    async def revoke(request: web.Request) -> web.Response:
        await close_group(f"user:{request.match_info['name']}", 4403, "Revoked")
        return web.json_response({"ok": True})

    client = await serve(create_app({"ws/": PerUser, "revoke/<name>/": revoke}))
    sockets = []
    for token in ("s3cret", "s3cret", "exp30:bob"):
        ws = await client.ws_connect("/ws/")
        await ws.send_json({"type": "auth", "token": token})
        await next_json(ws)
        sockets.append(ws)
    await client.post("/revoke/alice/")
    assert [await close_code(ws) for ws in sockets[:2]] == [4403, 4403]
    await sockets[2].send_str("still there?")
    assert await next_json(sockets[2]) == {"user": "bob", "got": "still there?"}  # bob's is untouched
    for ws in sockets:
        await ws.close()
