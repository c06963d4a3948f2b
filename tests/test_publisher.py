"""``Publisher``: synchronous sends and closes from outside the server, through a real Redis."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import pytest
import redis
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.rawclient import BINARY, CLOSE, TEXT, TIMEOUT, Frame, RawWebsocket, raw_connect
from tests.support.redis_server import SHARED_REDIS_URL, RedisServer, own_redis, require_shared_redis
from tests.support.servers import Serve
from wsframe import BackendUnavailableError, ConfigurationError, GenericWebsocket, History, Publisher, create_app
from wsframe.backends import RedisBackend
from wsframe.backends.redis import alive_key, members_key
from wsframe.exceptions import InvalidGroupNameError

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


# ------------------------------------------------------------------- groups


class Member(GenericWebsocket):
    """Joins the group in the path, then sends the client its connection id."""

    async def connect(self, group: str) -> None:
        await self.accept()
        await self.join_group(group)
        await self.send(self.connection_id)


@pytest.fixture
async def group_nodes(serve: Serve, prefix: str) -> AsyncIterator[tuple[WsClient, WsClient]]:
    def app() -> web.Application:
        return create_app({"ws/<group>/": Member}, backend=RedisBackend(SHARED_REDIS_URL, prefix=prefix))

    yield await serve(app()), await serve(app())
    # Let every member's leave reach Redis before the nodes stop: a leave still running when
    # the backend closes its connection pool opens a connection that nobody closes.
    for ws in RawWebsocket.opened:
        ws.abort()
    async with aioredis.Redis.from_url(SHARED_REDIS_URL) as client:
        for _ in range(100):
            if not [key async for key in client.scan_iter(match=f"{prefix}members:*")]:
                break
            await asyncio.sleep(0.02)


async def join(client: WsClient, group: str) -> tuple[RawWebsocket, str]:
    ws = await raw_connect(client, f"/ws/{group}/")
    frame = await ws.read_frame(TIMEOUT)
    assert frame is not None
    return ws, frame.text


async def silent(ws: RawWebsocket) -> bool:
    """True when nothing more arrives before our own close is answered."""
    ws.send_close(1000)
    return [f.opcode for f in await ws.frames_until_eof(TIMEOUT, answer_close=False)] == [CLOSE]


async def test_group_send_reaches_members_on_every_node_once(
    group_nodes: tuple[WsClient, WsClient], publisher: Publisher
) -> None:
    a, b = group_nodes
    members = [await join(a, "red"), await join(b, "red"), await join(b, "red")]
    outsider, _ = await join(a, "blue")
    assert await in_thread(publisher.send_message_to_group, "red", {"n": 1}) == 2
    for ws, _ in members:
        assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b'{"n":1}')
    for ws, _ in members:
        assert await silent(ws)
    assert await silent(outsider)


async def test_group_send_skips_excluded_ids(group_nodes: tuple[WsClient, WsClient], publisher: Publisher) -> None:
    a, b = group_nodes
    first, first_id = await join(a, "red")
    second, second_id = await join(b, "red")
    third, _ = await join(b, "red")

    def send() -> int:
        return publisher.send_message_to_group("red", b"\x07", exclude={first_id, second_id})

    await asyncio.to_thread(send)
    assert await third.read_frame(TIMEOUT) == Frame(BINARY, b"\x07")
    assert await silent(first)
    assert await silent(second)


async def test_group_send_with_one_excluded_id_as_a_string(
    group_nodes: tuple[WsClient, WsClient], publisher: Publisher
) -> None:
    a, b = group_nodes
    (skipped, skipped_id), (other, _) = await join(a, "red"), await join(b, "red")
    await asyncio.to_thread(lambda: publisher.send_message_to_group("red", "hi", exclude=skipped_id))
    assert await other.read_frame(TIMEOUT) == Frame(TEXT, b"hi")
    assert await silent(skipped)


def test_group_send_to_a_group_nobody_is_in_returns_zero(publisher: Publisher) -> None:
    assert publisher.send_message_to_group("empty-room", "anyone?") == 0


async def test_close_group_closes_members_on_every_node(
    group_nodes: tuple[WsClient, WsClient], publisher: Publisher
) -> None:
    a, b = group_nodes
    members = [(await join(a, "red"))[0], (await join(b, "red"))[0]]
    assert await in_thread(publisher.close_group, "red", 4002, "room closed") == 2
    for ws in members:
        frames = await ws.frames_until_eof(TIMEOUT)
        assert [(f.close_code, f.close_reason) for f in frames] == [(4002, "room closed")]


async def test_group_members_lists_members_of_every_node(
    group_nodes: tuple[WsClient, WsClient], publisher: Publisher
) -> None:
    a, b = group_nodes
    ids = {(await join(a, "red"))[1], (await join(b, "red"))[1], (await join(b, "red"))[1]}
    await join(a, "blue")
    assert await in_thread(publisher.group_members, "red") == ids


async def test_group_named_as_users_type_gets_publisher_sends_and_lists_its_members(
    group_nodes: tuple[WsClient, WsClient], publisher: Publisher
) -> None:
    a, b = group_nodes
    name = "room:a b ü *?[x]"
    members = [await join(a, quote(name, safe="")), await join(b, quote(name, safe=""))]
    neighbour, _ = await join(a, "room:a")
    assert await in_thread(publisher.group_members, name) == {cid for _, cid in members}
    assert await in_thread(publisher.send_message_to_group, name, "typed") == 2
    for ws, _ in members:
        assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"typed")
    assert await silent(neighbour)


def test_group_members_of_an_empty_group_is_an_empty_set(publisher: Publisher) -> None:
    assert publisher.group_members("empty-room") == set()


def test_group_members_leaves_out_and_prunes_members_of_a_dead_node(publisher: Publisher, prefix: str) -> None:
    # A SIGKILLed node leaves its ids in the set; its liveness key expires presence_ttl later.
    live, dead = "c0ffee00" + "1" * 24, "deadbeef" + "2" * 24
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        client.sadd(members_key(prefix, "red"), live, dead)
        client.set(alive_key(prefix, "c0ffee00"), b"1", px=10_000)
        assert publisher.group_members("red") == {live}
        assert client.smembers(members_key(prefix, "red")) == {live.encode()}
    finally:
        client.delete(members_key(prefix, "red"), alive_key(prefix, "c0ffee00"))
        client.close()


@pytest.mark.parametrize("group", ["", "a" * 257, "lone \ud800 surrogate", 42])
@pytest.mark.parametrize("method", ["send_message_to_group", "close_group", "group_members"])
def test_invalid_group_name_raises_invalid_group_name_error(publisher: Publisher, method: str, group: object) -> None:
    call = getattr(publisher, method)
    with pytest.raises(InvalidGroupNameError, match="invalid group name"):
        call(group, "x") if method == "send_message_to_group" else call(group)


@pytest.mark.parametrize("code", [999, 1005, 1006, 5000])
def test_close_group_code_that_may_not_be_sent_raises_value_error(publisher: Publisher, code: int) -> None:
    with pytest.raises(ValueError, match=f"{code} is not a close code"):
        publisher.close_group("red", code)


def test_group_data_that_cannot_be_encoded_raises_type_error(publisher: Publisher) -> None:
    with pytest.raises(TypeError):
        publisher.send_message_to_group("red", object())


@pytest.mark.parametrize("exclude", [[1, 2], 42])
def test_exclude_that_is_not_connection_ids_raises_type_error(publisher: Publisher, exclude: object) -> None:
    with pytest.raises(TypeError):
        publisher.send_message_to_group("red", "x", exclude=exclude)  # type: ignore[arg-type]


def test_group_send_with_redis_down_raises_backend_unavailable(private_redis: RedisServer) -> None:
    with Publisher(private_redis.url) as publisher:
        private_redis.kill()
        with pytest.raises(BackendUnavailableError, match="did not take the group_send to group 'red'"):
            publisher.send_message_to_group("red", "x")


def test_close_group_with_redis_down_raises_backend_unavailable(private_redis: RedisServer) -> None:
    with Publisher(private_redis.url) as publisher:
        private_redis.kill()
        with pytest.raises(BackendUnavailableError, match="did not take the group_close to group 'red'"):
            publisher.close_group("red")


def test_group_members_with_redis_down_raises_backend_unavailable(private_redis: RedisServer) -> None:
    with Publisher(private_redis.url) as publisher:
        private_redis.kill()
        with pytest.raises(BackendUnavailableError, match="did not say who is in group 'red'"):
            publisher.group_members("red")


BUSY_ONE_SECOND = """
local started = redis.call('TIME')
while true do
  local now = redis.call('TIME')
  if (now[1] - started[1]) * 1e6 + (now[2] - started[2]) > 1e6 then return 1 end
end
"""
"""A script that keeps Redis busy for a second: commands sent meanwhile run after it, their replies late."""


def test_a_history_send_whose_reply_is_late_raises_and_is_kept_once(private_redis: RedisServer) -> None:
    history = {"chat:": History(size=100, ttl=60)}
    with Publisher(private_redis.url, timeout=0.2, history=history) as publisher:
        publisher.send_message_to_group("chat:1", "first")
        busy = threading.Thread(target=redis.Redis.from_url(private_redis.url).eval, args=(BUSY_ONE_SECOND, 0))
        busy.start()
        time.sleep(0.1)  # the script is running: Redis reads nothing else until it ends
        with pytest.raises(BackendUnavailableError, match="may have been kept and sent"):
            publisher.send_message_to_group("chat:1", "second")
        busy.join()
    stream, client = "wsframe:history:{chat:1}", redis.Redis.from_url(private_redis.url)
    deadline = time.monotonic() + 5
    while client.xlen(stream) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the late command runs once the script has ended
    time.sleep(0.3)  # a retried copy would have run by now too
    assert client.xlen(stream) == 2
