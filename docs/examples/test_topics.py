"""Tests for the testing page: each shows one thing the test client does."""

import json

import pytest
from aiohttp import web

from wsframe import ConnectionClosed, GenericWebsocket, create_app
from wsframe.testing import HandlerError, HandshakeRejectedError


# --8<-- [start:json]
class PriceWebsocket(GenericWebsocket):
    async def receive(self, data: str | bytes):
        order = json.loads(data)
        await self.send({"book": order["book"], "total": order["quantity"] * 12})


async def test_price_is_computed(ws_client):
    app = create_app({"ws/price/": PriceWebsocket})
    async with ws_client(app).connect("/ws/price/") as ws:
        await ws.send_json({"book": "Dune", "quantity": 3})
        assert await ws.receive_json() == {"book": "Dune", "total": 36}


# --8<-- [end:json]


# --8<-- [start:close]
class GuardedWebsocket(GenericWebsocket):
    async def connect(self):
        await self.accept()
        if self.query_params.get("token") != "secret":
            await self.close(code=4001, reason="bad token")


async def test_bad_token_is_closed_with_4001(ws_client):
    app = create_app({"ws/guarded/": GuardedWebsocket})
    async with ws_client(app).connect("/ws/guarded/?token=guess") as ws:
        with pytest.raises(ConnectionClosed):
            await ws.receive()
        assert ws.close_code == 4001
        assert ws.close_reason == "bad token"


# --8<-- [end:close]


# --8<-- [start:rejected]
class StaffOnlyWebsocket(GenericWebsocket):
    async def connect(self):
        if self.headers.get("X-Staff") == "yes":
            await self.accept()


async def test_visitors_are_refused_with_403(ws_client):
    app = create_app({"ws/staff/": StaffOnlyWebsocket})
    with pytest.raises(HandshakeRejectedError) as refused:
        async with ws_client(app).connect("/ws/staff/"):
            pass
    assert refused.value.status == 403


# --8<-- [end:rejected]


# --8<-- [start:disconnect]
ONLINE = web.AppKey("online", set)
CODES = web.AppKey("codes", list)


class PresenceWebsocket(GenericWebsocket):
    async def connect(self):
        await self.accept()
        self.app[ONLINE].add(self.connection_id)

    async def disconnect(self, code: int):
        self.app[ONLINE].discard(self.connection_id)
        self.app[CODES].append(code)


def presence_app():
    app = create_app({"ws/presence/": PresenceWebsocket})
    app[ONLINE], app[CODES] = set(), []
    return app


async def test_closing_tab_goes_offline(ws_client):
    app = presence_app()
    client = ws_client(app)
    async with client.connect("/ws/presence/") as ws:
        assert len(app[ONLINE]) == 1
        await ws.close(code=4000, reason="tab closed")
    await client.close()  # stops the server: every disconnect() has run
    assert app[ONLINE] == set()
    assert app[CODES] == [4000]


async def test_lost_network_goes_offline_with_1006(ws_client):
    app = presence_app()
    client = ws_client(app)
    async with client.connect("/ws/presence/") as ws:
        await ws.drop()  # TCP gone, no close frame
    await client.close()
    assert app[CODES] == [1006]


# --8<-- [end:disconnect]


# --8<-- [start:crash]
class BuggyWebsocket(GenericWebsocket):
    async def receive(self, data: str | bytes):
        await self.send(100 // int(data))


async def test_zero_crashes_the_handler(ws_client):
    app = create_app({"ws/divide/": BuggyWebsocket})
    async with ws_client(app).connect("/ws/divide/") as ws:
        await ws.send("0")
        with pytest.raises(HandlerError) as crash:
            await ws.receive()
        assert isinstance(crash.value.exception, ZeroDivisionError)
        assert ws.close_code == 1011


# --8<-- [end:crash]


# --8<-- [start:timeout]
class QuietWebsocket(GenericWebsocket):
    async def receive(self, data: str | bytes):
        pass  # never answers


async def test_nothing_comes_back(ws_client):
    app = create_app({"ws/quiet/": QuietWebsocket})
    async with ws_client(app).connect("/ws/quiet/") as ws:
        await ws.send("hello?")
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.1)


# --8<-- [end:timeout]
