"""``Publisher``: synchronous sends and closes from outside the server, through a real Redis."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.apps.redis_server import SHARED_REDIS_URL, RedisServer, own_redis, require_shared_redis
from tests.conftest import TIMEOUT, Serve, raw_connect
from tests.rawws import BINARY, CLOSE, TEXT, Frame, RawWebsocket
from wsframe import BackendUnavailableError, ConfigurationError, GenericWebsocket, Publisher, create_app
from wsframe.backends import RedisBackend

WsClient = TestClient[web.Request, web.Application]


class Announce(GenericWebsocket):
    """Sends the client its connection id."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(self.connection_id)


@pytest.fixture
def prefix() -> str:
    require_shared_redis()
    return f"wsframe-test-{secrets.token_hex(4)}:"


@pytest.fixture
def publisher(prefix: str) -> Iterator[Publisher]:
    with Publisher(SHARED_REDIS_URL, prefix=prefix) as publisher:
        yield publisher


@pytest.fixture
async def node(serve: Serve, prefix: str) -> WsClient:
    return await serve(create_app({"ws/": Announce}, backend=RedisBackend(SHARED_REDIS_URL, prefix=prefix)))


async def connect(client: WsClient) -> tuple[RawWebsocket, str]:
    ws = await raw_connect(client, "/ws/")
    frame = await ws.read_frame(TIMEOUT)
    assert frame is not None
    return ws, frame.text


async def in_thread(function: object, *args: object) -> object:
    # The publisher blocks; a script would call it directly. Here the app's
    # loop must keep running meanwhile, so the call goes to a thread.
    return await asyncio.to_thread(function, *args)  # type: ignore[arg-type]


async def test_text_reaches_the_connection(node: WsClient, publisher: Publisher) -> None:
    ws, connection_id = await connect(node)
    assert await in_thread(publisher.send_message_to_websocket, connection_id, "from a script") is True
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"from a script")


async def test_bytes_arrive_as_a_binary_frame(node: WsClient, publisher: Publisher) -> None:
    ws, connection_id = await connect(node)
    await in_thread(publisher.send_message_to_websocket, connection_id, b"\x01\x02")
    assert await ws.read_frame(TIMEOUT) == Frame(BINARY, b"\x01\x02")


async def test_other_data_is_sent_as_compact_json(node: WsClient, publisher: Publisher) -> None:
    ws, connection_id = await connect(node)
    await in_thread(publisher.send_message_to_websocket, connection_id, {"detail": "ok", "n": [1, None]})
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b'{"detail":"ok","n":[1,null]}')


async def test_sends_arrive_in_the_order_they_were_made(node: WsClient, publisher: Publisher) -> None:
    ws, connection_id = await connect(node)

    def burst() -> None:
        for n in range(50):
            publisher.send_message_to_websocket(connection_id, str(n))

    await asyncio.to_thread(burst)
    assert [(await ws.read_frame(TIMEOUT) or Frame(TEXT, b"")).text for _ in range(50)] == [str(n) for n in range(50)]


async def test_close_delivers_code_and_reason(node: WsClient, publisher: Publisher) -> None:
    ws, connection_id = await connect(node)
    await in_thread(publisher.close_websocket_connection, connection_id, 4001, "job finished")
    frame = await ws.read_frame(TIMEOUT)
    assert frame is not None
    assert (frame.opcode, frame.close_code, frame.close_reason) == (CLOSE, 4001, "job finished")


async def test_a_different_prefix_does_not_reach_the_app(node: WsClient, prefix: str) -> None:
    _, connection_id = await connect(node)
    with Publisher(SHARED_REDIS_URL, prefix=prefix + "other:") as other:
        assert await in_thread(other.send_message_to_websocket, connection_id, "lost") is False


def test_id_of_a_node_nobody_listens_for_returns_false(publisher: Publisher) -> None:
    assert publisher.send_message_to_websocket("deadbeef" + "0" * 24, "anyone?") is False


@pytest.mark.parametrize("bad_id", ["", "short", "deadbeef" + "0" * 25, "../../etc" + "0" * 23])
def test_malformed_id_returns_false_without_publishing(publisher: Publisher, bad_id: str) -> None:
    assert publisher.send_message_to_websocket(bad_id, "x") is False


@pytest.mark.parametrize("code", [999, 1005, 1006, 5000])
def test_close_code_that_may_not_be_sent_raises_value_error(publisher: Publisher, code: int) -> None:
    with pytest.raises(ValueError, match=f"{code} is not a close code"):
        publisher.close_websocket_connection("deadbeef" + "0" * 24, code)


def test_data_that_cannot_be_encoded_raises_type_error(publisher: Publisher) -> None:
    with pytest.raises(TypeError):
        publisher.send_message_to_websocket("deadbeef" + "0" * 24, object())


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with own_redis() as server:
        yield server


def test_redis_down_raises_backend_unavailable_naming_the_url(private_redis: RedisServer) -> None:
    with Publisher(private_redis.url) as publisher:
        private_redis.kill()
        with pytest.raises(BackendUnavailableError, match=rf"Redis at {private_redis.url} did not take the send"):
            publisher.send_message_to_websocket("deadbeef" + "0" * 24, "x")


def test_hung_redis_raises_backend_unavailable_instead_of_hanging(private_redis: RedisServer) -> None:
    with Publisher(private_redis.url, timeout=0.2) as publisher:
        private_redis.pause()
        with pytest.raises(BackendUnavailableError):
            publisher.send_message_to_websocket("deadbeef" + "0" * 24, "x")


def test_publisher_works_again_after_redis_restarts(private_redis: RedisServer) -> None:
    with Publisher(private_redis.url) as publisher:
        assert publisher.send_message_to_websocket("deadbeef" + "0" * 24, "x") is False
        private_redis.kill()
        private_redis.start()
        assert publisher.send_message_to_websocket("deadbeef" + "0" * 24, "x") is False


def test_a_client_you_pass_is_used_and_left_open(prefix: str) -> None:
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        with Publisher(client, prefix=prefix) as publisher:
            assert publisher.send_message_to_websocket("deadbeef" + "0" * 24, "x") is False
        assert client.ping() is True
    finally:
        client.close()


def test_client_with_decode_responses_is_rejected() -> None:
    client = redis.Redis.from_url(SHARED_REDIS_URL, decode_responses=True)
    try:
        with pytest.raises(ConfigurationError, match="decode_responses=False"):
            Publisher(client)
    finally:
        client.close()


def test_url_with_an_unknown_scheme_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="not a Redis URL"):
        Publisher("http://127.0.0.1:6379/0")


def test_neither_url_nor_client_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="got int"):
        Publisher(6379)  # type: ignore[arg-type]


def test_empty_prefix_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        Publisher(SHARED_REDIS_URL, prefix="")


@pytest.mark.parametrize("timeout", [0, -1])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        Publisher(SHARED_REDIS_URL, timeout=timeout)
