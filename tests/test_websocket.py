"""GenericWebsocket: the handshake, the receive loop, send encodings and every close path."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import uuid
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import WSMsgType, web

from tests.support.rawclient import BINARY, CLOSE, TEXT, TIMEOUT, Frame, HandshakeRejected, raw_connect
from tests.support.servers import Serve
from wsframe import ConnectionClosed, GenericWebsocket, WsframeError, create_app, status


class Echo(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        await self.send(data)


def close_frame(code: int, reason: str = "") -> Frame:
    return Frame(CLOSE, code.to_bytes(2, "big") + reason.encode())


# ------------------------------------------------------------------ handshake


async def test_echo_text_frame_sequence(serve: Serve) -> None:
    client = await serve(create_app({"ws/echo/": Echo}))
    ws = await raw_connect(client, "/ws/echo/")
    ws.send_text("hello")
    ws.send_close(1000, "bye")
    assert await ws.frames_until_eof(TIMEOUT, answer_close=False) == [Frame(TEXT, b"hello"), close_frame(1000)]


async def test_echo_binary_frame(serve: Serve) -> None:
    client = await serve(create_app({"ws/echo/": Echo}))
    ws = await raw_connect(client, "/ws/echo/")
    ws.send_binary(b"\x00\xff\x10")
    assert await ws.read_frame(TIMEOUT) == Frame(BINARY, b"\x00\xff\x10")
    await ws.aclose()


async def test_plain_get_on_websocket_route_is_426_with_json_detail(serve: Serve) -> None:
    client = await serve(create_app({"ws/echo/": Echo}))
    response = await client.get("/ws/echo/")
    assert response.status == 426
    assert response.headers["Upgrade"] == "websocket"
    assert "websocket" in (await response.json())["detail"]


async def test_upgrade_with_bad_version_is_400(serve: Serve) -> None:
    client = await serve(create_app({"ws/echo/": Echo}))
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, "/ws/echo/", {"Sec-WebSocket-Version": "12"})
    assert info.value.status == 400


async def test_connect_without_accept_is_403_and_nothing_registered(serve: Serve) -> None:
    seen: list[str] = []

    class Refuse(GenericWebsocket):
        async def connect(self) -> None:
            seen.append(self.connection_id)

    app = create_app({"ws/": Refuse})
    client = await serve(app)
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, "/ws/")
    assert info.value.status == 403
    assert len(seen) == 1
    from wsframe.registry import REGISTRY_KEY

    assert app[REGISTRY_KEY].connections == {}


async def test_exception_in_connect_before_accept_is_500_without_details(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(GenericWebsocket):
        async def connect(self) -> None:
            raise RuntimeError("secret database password")

    client = await serve(create_app({"ws/": Broken}))
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, "/ws/")
    assert info.value.status == 500
    assert b"secret" not in info.value.body
    assert "secret database password" in caplog.text


async def test_close_in_connect_before_accept_upgrades_then_closes_with_that_code(serve: Serve) -> None:
    disconnects: list[int] = []

    class Reject(GenericWebsocket):
        async def connect(self) -> None:
            await self.close(4003, "not allowed")

        async def disconnect(self, code: int) -> None:
            disconnects.append(code)

    client = await serve(create_app({"ws/": Reject}))
    ws = await raw_connect(client, "/ws/")
    assert await ws.frames_until_eof(TIMEOUT) == [close_frame(4003, "not allowed")]
    assert disconnects == []  # never accepted, so no disconnect


async def test_close_in_connect_after_accept_sends_code_and_reason(serve: Serve) -> None:
    class AcceptThenClose(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.send("welcome")
            await self.close(status.WS_1008_POLICY_VIOLATION, "Closing connection")

    client = await serve(create_app({"ws/": AcceptThenClose}))
    ws = await raw_connect(client, "/ws/")
    assert await ws.frames_until_eof(TIMEOUT) == [Frame(TEXT, b"welcome"), close_frame(1008, "Closing connection")]


async def test_accept_with_subprotocol_and_headers(serve: Serve) -> None:
    class Proto(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept(subprotocol="chat.v1", headers={"X-Server": "wsframe"})

    client = await serve(create_app({"ws/": Proto}))
    ws = await raw_connect(client, "/ws/", {"Sec-WebSocket-Protocol": "chat.v0, chat.v1"})
    assert ws.headers["sec-websocket-protocol"] == "chat.v1"
    assert ws.headers["x-server"] == "wsframe"
    await ws.aclose()


async def test_declined_subprotocols_are_not_logged_as_warnings(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    client = await serve(create_app({"ws/": Echo}))
    for _ in range(3):
        ws = await raw_connect(client, "/ws/", {"Sec-WebSocket-Protocol": "spam.v1, spam.v2"})
        assert "sec-websocket-protocol" not in ws.headers
        await ws.aclose()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_accept_twice_raises(serve: Serve) -> None:
    errors: list[str] = []

    class Twice(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            try:
                await self.accept()
            except WsframeError as exc:
                errors.append(str(exc))
            await self.close()

    client = await serve(create_app({"ws/": Twice}))
    ws = await raw_connect(client, "/ws/")
    assert await ws.frames_until_eof(TIMEOUT) == [close_frame(1000)]
    assert errors == ["accept() was already called for this connection"]


# ------------------------------------------------------------- attributes


async def test_request_attributes_are_visible_in_connect(serve: Serve) -> None:
    seen: dict[str, Any] = {}

    class Inspect(GenericWebsocket):
        async def connect(self, room: str) -> None:
            seen.update(
                connection_id=self.connection_id,
                header=self.headers["x-token"],
                query=self.query_params,
                cookie=self.cookies["session"],
                path_variables=self.path_variables,
                app_is_request_app=self.app is self.request.app,
            )
            await self.accept()
            await self.close()

    client = await serve(create_app({"ws/<room>/": Inspect}))
    ws = await raw_connect(client, "/ws/lobby/?a=1&b=2&a=3", {"X-Token": "t0k", "Cookie": "session=s1"})
    await ws.frames_until_eof(TIMEOUT)
    assert re.fullmatch(r"[0-9a-f]{32}", seen["connection_id"])
    assert seen["header"] == "t0k"
    assert seen["query"] == {"a": "3", "b": "2"}
    assert seen["cookie"] == "s1"
    assert seen["path_variables"] == {"room": "lobby"}
    assert seen["app_is_request_app"] is True


async def test_a_handler_may_use_any_private_name_without_breaking_the_connection(serve: Serve) -> None:
    # The names the handler itself once kept per connection: a subclass may use them now.
    clobbered = ("_state", "_ws", "_transport", "_groups", "_registry", "_config", "_compressed", "_close_code")

    class Clobber(GenericWebsocket):
        async def connect(self) -> None:
            for name in clobbered:
                setattr(self, name, "mine")
            await self.accept()
            await self.join_group("room")

        async def receive(self, data: str | bytes) -> None:
            await self.send([data, sorted(self.groups), [getattr(self, name) for name in clobbered]])

    client = await serve(create_app({"ws/": Clobber}))
    ws = await raw_connect(client, "/ws/")
    ws.send_text("hi")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, msgspec.json.encode(["hi", ["room"], ["mine"] * 8]))
    await ws.aclose()


async def test_connection_ids_share_the_node_prefix_and_differ(serve: Serve) -> None:
    ids: list[str] = []

    class Record(GenericWebsocket):
        async def connect(self) -> None:
            ids.append(self.connection_id)
            await self.accept()
            await self.close()

    client = await serve(create_app({"ws/": Record}))
    for _ in range(3):
        await (await raw_connect(client, "/ws/")).frames_until_eof(TIMEOUT)
    assert len(set(ids)) == 3
    assert len({i[:8] for i in ids}) == 1


async def test_typed_path_variables_are_converted(serve: Serve) -> None:
    seen: list[tuple[Any, ...]] = []

    class Typed(GenericWebsocket):
        async def connect(self, user_id: int, room_id: str, key: uuid.UUID) -> None:
            seen.append((user_id, room_id, key))
            await self.accept()
            await self.close()

    client = await serve(create_app({"ws/<user_id>/<room_id>/<key>/": Typed}))
    key = uuid.uuid4()
    await (await raw_connect(client, f"/ws/42/general/{key}/")).frames_until_eof(TIMEOUT)
    assert seen == [(42, "general", key)]


async def test_path_variable_that_does_not_convert_is_404_before_upgrade(serve: Serve) -> None:
    called: list[int] = []

    class Typed(GenericWebsocket):
        async def connect(self, user_id: int) -> None:
            called.append(user_id)
            await self.accept()

    client = await serve(create_app({"ws/<user_id>/": Typed}))
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, "/ws/abc/")
    assert info.value.status == 404
    assert called == []


# ----------------------------------------------------------------- sending


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Book(msgspec.Struct):
    title: str


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain text", Frame(TEXT, b"plain text")),
        (42, Frame(TEXT, b"42")),
        ({"detail": "ok"}, Frame(TEXT, b'{"detail":"ok"}')),
        ([1, "a", None], Frame(TEXT, b'[1,"a",null]')),
        ((1, 2), Frame(TEXT, b"[1,2]")),
        (b"\x00raw", Frame(BINARY, b"\x00raw")),
        (bytearray(b"ba"), Frame(BINARY, b"ba")),
        (None, Frame(TEXT, b"null")),
        (Point(1, 2), Frame(TEXT, b'{"x":1,"y":2}')),
        (Book(title="Dune"), Frame(TEXT, b'{"title":"Dune"}')),
    ],
    ids=["str", "int", "dict", "list", "tuple", "bytes", "bytearray", "None", "dataclass", "struct"],
)
async def test_send_encodes_each_type_to_the_exact_frame(serve: Serve, value: Any, expected: Frame) -> None:
    class Sender(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.send(value)
            await self.close()

    client = await serve(create_app({"ws/": Sender}))
    ws = await raw_connect(client, "/ws/")
    assert await ws.frames_until_eof(TIMEOUT) == [expected, close_frame(1000)]


async def test_send_without_an_argument_sends_json_null(serve: Serve) -> None:
    class Sender(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.send()
            await self.close()

    client = await serve(create_app({"ws/": Sender}))
    ws = await raw_connect(client, "/ws/")
    assert await ws.frames_until_eof(TIMEOUT) == [Frame(TEXT, b"null"), close_frame(1000)]


async def test_send_of_unencodable_value_raises_type_error_and_sends_nothing(serve: Serve) -> None:
    errors: list[str] = []

    class Sender(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            try:
                await self.send(object())
            except TypeError as exc:
                errors.append(type(exc).__name__)
            await self.close()

    client = await serve(create_app({"ws/": Sender}))
    ws = await raw_connect(client, "/ws/")
    assert await ws.frames_until_eof(TIMEOUT) == [close_frame(1000)]
    assert errors == ["TypeError"]


async def test_send_before_accept_raises_with_the_fix(serve: Serve) -> None:
    errors: list[str] = []

    class Early(GenericWebsocket):
        async def connect(self) -> None:
            try:
                await self.send("too early")
            except WsframeError as exc:
                errors.append(str(exc))
            await self.accept()
            await self.close()

    client = await serve(create_app({"ws/": Early}))
    await (await raw_connect(client, "/ws/")).frames_until_eof(TIMEOUT)
    assert errors == ["Call accept() before send(): the handshake is not complete."]


async def test_send_after_close_raises_connection_closed_with_code(serve: Serve) -> None:
    errors: list[ConnectionClosed] = []

    class Late(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.close(4001, "done")
            try:
                await self.send("too late")
            except ConnectionClosed as exc:
                errors.append(exc)

    client = await serve(create_app({"ws/": Late}))
    ws = await raw_connect(client, "/ws/")
    assert await ws.frames_until_eof(TIMEOUT) == [close_frame(4001, "done")]
    assert [(e.code, e.reason) for e in errors] == [(4001, "done")]
    assert str(errors[0]) == "connection closed with code 4001 (done)"


# ----------------------------------------------------------------- closing


async def test_close_twice_sends_one_close_frame_and_first_code_wins(serve: Serve) -> None:
    class Twice(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.close(4000, "first")
            await self.close(4001, "second")

    client = await serve(create_app({"ws/": Twice}))
    ws = await raw_connect(client, "/ws/")
    assert await ws.frames_until_eof(TIMEOUT) == [close_frame(4000, "first")]


async def test_close_reason_is_cut_to_123_bytes_on_a_character_boundary(serve: Serve) -> None:
    class LongReason(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.close(4000, "é" * 100)  # 200 bytes of two-byte characters

    client = await serve(create_app({"ws/": LongReason}))
    ws = await raw_connect(client, "/ws/")
    frames = await ws.frames_until_eof(TIMEOUT)
    assert frames == [close_frame(4000, "é" * 61)]
    assert len(frames[0].payload) == 2 + 122


@pytest.mark.parametrize("code", [999, 1005, 1006, 1015, 2000, 5000])
async def test_close_with_a_code_that_cannot_be_sent_raises_value_error(serve: Serve, code: int) -> None:
    errors: list[str] = []

    class BadCode(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            try:
                await self.close(code)
            except ValueError as exc:
                errors.append(str(exc))
            await self.close(1000)

    client = await serve(create_app({"ws/": BadCode}))
    ws = await raw_connect(client, "/ws/")
    assert await ws.frames_until_eof(TIMEOUT) == [close_frame(1000)]
    assert len(errors) == 1
    assert errors[0].startswith(f"{code} is not a close code that can be sent")


async def test_crash_in_receive_closes_1011_and_other_connections_keep_working(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    disconnects: list[int] = []

    class Fragile(GenericWebsocket):
        async def receive(self, data: str | bytes) -> None:
            if data == "boom":
                raise ZeroDivisionError("internal detail")
            await self.send(data)

        async def disconnect(self, code: int) -> None:
            disconnects.append(code)

    app = create_app({"ws/": Fragile})
    client = await serve(app)
    bystander = await raw_connect(client, "/ws/")
    victim = await raw_connect(client, "/ws/")
    victim.send_text("boom")
    assert await victim.frames_until_eof(TIMEOUT) == [close_frame(1011, "Internal server error")]
    assert "ZeroDivisionError: internal detail" in caplog.text
    bystander.send_text("still here")
    assert await bystander.read_frame(TIMEOUT) == Frame(TEXT, b"still here")
    from wsframe.registry import REGISTRY_KEY

    assert len(app[REGISTRY_KEY].connections) == 1
    assert disconnects == [1011]
    await bystander.aclose()


async def test_crash_in_connect_after_accept_closes_1011(serve: Serve) -> None:
    class Fragile(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            raise KeyError("x")

    client = await serve(create_app({"ws/": Fragile}))
    ws = await raw_connect(client, "/ws/")
    assert await ws.frames_until_eof(TIMEOUT) == [close_frame(1011, "Internal server error")]


async def test_message_one_byte_over_the_size_limit_closes_1009(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}, max_message_size=1000))
    ws = await raw_connect(client, "/ws/")
    ws.send_binary(b"x" * 1001)
    frames = await ws.frames_until_eof(TIMEOUT)
    assert [(f.opcode, f.close_code) for f in frames] == [(CLOSE, 1009)]


async def test_1009_close_says_which_size_limit_the_message_went_over(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}, max_message_size=1000))
    ws = await raw_connect(client, "/ws/")
    ws.send_binary(b"x" * 1001)
    assert await ws.frames_until_eof(TIMEOUT) == [close_frame(1009, "message too big: limit 1000 bytes")]


async def test_two_mib_message_closes_1009_under_the_default_limit(serve: Serve) -> None:
    codes: list[int] = []
    done = asyncio.Event()

    class Watch(Echo):
        async def disconnect(self, code: int) -> None:
            codes.append(code)
            done.set()

    client = await serve(create_app({"ws/": Watch}))
    async with client.ws_connect("/ws/") as ws:
        # The server may close before the client has written all 2 MiB; then the
        # write fails and the client never reads the close frame. The server's
        # side says which code it closed with either way.
        with contextlib.suppress(aiohttp.ClientConnectionResetError, ConnectionResetError):
            await ws.send_bytes(b"x" * (2 * 1024 * 1024))
            msg = await ws.receive(timeout=TIMEOUT)
            assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1009)
    await asyncio.wait_for(done.wait(), TIMEOUT)
    assert codes == [1009]


async def test_message_at_the_size_limit_is_delivered(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}, max_message_size=1000))
    ws = await raw_connect(client, "/ws/")
    ws.send_binary(b"y" * 1000)
    assert await ws.read_frame(TIMEOUT) == Frame(BINARY, b"y" * 1000)
    await ws.aclose()


async def test_handler_class_attribute_overrides_the_app_size_limit(serve: Serve) -> None:
    class Small(Echo):
        max_message_size = 10

    client = await serve(create_app({"ws/small/": Small, "ws/big/": Echo}))
    small = await raw_connect(client, "/ws/small/")
    small.send_text("x" * 11)
    assert [f.close_code for f in await small.frames_until_eof(TIMEOUT)] == [1009]
    big = await raw_connect(client, "/ws/big/")
    big.send_text("x" * 11)
    assert await big.read_frame(TIMEOUT) == Frame(TEXT, b"x" * 11)
    await big.aclose()


# -------------------------------------------------------------- disconnect


async def test_disconnect_gets_the_client_close_code_once(serve: Serve) -> None:
    codes: list[int] = []
    done = asyncio.Event()

    class Watch(GenericWebsocket):
        async def disconnect(self, code: int) -> None:
            codes.append(code)
            done.set()

    client = await serve(create_app({"ws/": Watch}))
    ws = await raw_connect(client, "/ws/")
    ws.send_close(4321, "client leaving")
    assert await ws.frames_until_eof(TIMEOUT, answer_close=False) == [close_frame(1000)]
    await asyncio.wait_for(done.wait(), TIMEOUT)
    assert codes == [4321]


async def test_disconnect_gets_1005_for_an_empty_close_frame(serve: Serve) -> None:
    codes: list[int] = []
    done = asyncio.Event()

    class Watch(GenericWebsocket):
        async def disconnect(self, code: int) -> None:
            codes.append(code)
            done.set()

    client = await serve(create_app({"ws/": Watch}))
    ws = await raw_connect(client, "/ws/")
    ws.send_close(None)
    await ws.frames_until_eof(TIMEOUT, answer_close=False)
    await asyncio.wait_for(done.wait(), TIMEOUT)
    assert codes == [1005]


async def test_disconnect_gets_1006_when_tcp_drops_without_close_frame(serve: Serve) -> None:
    codes: list[int] = []
    done = asyncio.Event()

    class Watch(GenericWebsocket):
        async def disconnect(self, code: int) -> None:
            codes.append(code)
            done.set()

    app = create_app({"ws/": Watch})
    client = await serve(app)
    ws = await raw_connect(client, "/ws/")
    ws.abort()
    await asyncio.wait_for(done.wait(), TIMEOUT)
    assert codes == [1006]
    from wsframe.registry import REGISTRY_KEY

    assert app[REGISTRY_KEY].connections == {}


async def test_disconnect_gets_our_code_when_the_server_closes(serve: Serve) -> None:
    codes: list[int] = []

    class Closer(GenericWebsocket):
        async def receive(self, data: str | bytes) -> None:
            await self.close(4100, "bye")

        async def disconnect(self, code: int) -> None:
            codes.append(code)

    client = await serve(create_app({"ws/": Closer}))
    ws = await raw_connect(client, "/ws/")
    ws.send_text("please close")
    assert await ws.frames_until_eof(TIMEOUT) == [close_frame(4100, "bye")]
    assert codes == [4100]


async def test_exception_in_disconnect_is_logged_and_contained(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    class BadCleanup(Echo):
        async def disconnect(self, code: int) -> None:
            raise RuntimeError("cleanup failed")

    client = await serve(create_app({"ws/": BadCleanup}))
    ws = await raw_connect(client, "/ws/")
    ws.send_close(1000)
    await ws.frames_until_eof(TIMEOUT, answer_close=False)
    other = await raw_connect(client, "/ws/")
    other.send_text("fine")
    assert await other.read_frame(TIMEOUT) == Frame(TEXT, b"fine")
    assert "cleanup failed" in caplog.text
    await other.aclose()


async def test_messages_are_handled_in_order_one_at_a_time(serve: Serve) -> None:
    class Slow(GenericWebsocket):
        async def receive(self, data: str | bytes) -> None:
            await asyncio.sleep(0.001 * (5 - int(data)))
            await self.send(data)

    client = await serve(create_app({"ws/": Slow}))
    async with client.ws_connect("/ws/") as ws:
        for i in range(5):
            await ws.send_str(str(i))
        received = [(await ws.receive(timeout=TIMEOUT)).data for _ in range(5)]
    assert received == ["0", "1", "2", "3", "4"]


async def test_aiohttp_client_sees_close_code_and_reason(serve: Serve) -> None:
    class Closer(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            await self.close(status.WS_1008_POLICY_VIOLATION, "Closing connection")

    client = await serve(create_app({"ws/": Closer}))
    async with client.ws_connect("/ws/") as ws:
        msg = await ws.receive(timeout=TIMEOUT)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1008, "Closing connection")


async def test_heartbeat_setting_sends_pings(serve: Serve) -> None:
    class Fast(Echo):
        heartbeat = 0.2

    client = await serve(create_app({"ws/": Fast}))
    async with client.ws_connect("/ws/", autoping=False) as ws:
        msg = await ws.receive(timeout=TIMEOUT)
        assert msg.type is WSMsgType.PING


async def test_peer_that_does_not_answer_pings_is_dropped(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    codes: list[int] = []
    done = asyncio.Event()

    class Fast(Echo):
        heartbeat = 0.2

        async def disconnect(self, code: int) -> None:
            codes.append(code)
            done.set()

    caplog.set_level(logging.DEBUG, "wsframe")
    client = await serve(create_app({"ws/": Fast}))
    async with client.ws_connect("/ws/", autoping=False) as ws:
        await asyncio.wait_for(done.wait(), TIMEOUT)
        # The server gave up on us: the connection is dropped, not closed politely.
        assert codes == [1006]
        kinds = [(await ws.receive(timeout=TIMEOUT)).type for _ in range(3)]
    assert kinds[-1] in (WSMsgType.CLOSED, WSMsgType.ERROR)


async def test_client_leaving_during_the_handshake_is_not_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    gate = asyncio.Event()
    outcomes: list[str] = []

    class Slow(GenericWebsocket):
        async def connect(self) -> None:
            await gate.wait()
            try:
                await self.accept()
            except ConnectionClosed as exc:
                outcomes.append(f"closed {exc.code}")
                raise

    app = create_app({"ws/": Slow})
    # A runner as web.run_app makes it: aiohttp's TestServer cancels handlers whose client left,
    # which production servers do not (handler_cancellation is off by default).
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /ws/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # gone before the server accepts
        writer.close()
        await asyncio.sleep(0.05)
        gate.set()
        for _ in range(100):
            if outcomes:
                break
            await asyncio.sleep(0.01)
    finally:
        await runner.cleanup()
    assert outcomes == ["closed 1006"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    from wsframe.registry import REGISTRY_KEY

    assert app[REGISTRY_KEY].connections == {}


async def test_a_flooding_client_does_not_keep_the_server_to_itself(serve: Serve) -> None:
    handled: list[str] = []

    class Recorder(GenericWebsocket):
        async def receive(self, data: str | bytes) -> None:
            assert isinstance(data, str)
            handled.append(data)

    client = await serve(create_app({"ws/": Recorder}))
    flooder = await raw_connect(client, "/ws/")
    quiet = await raw_connect(client, "/ws/")
    flood = 5000
    # One write each: the server's read buffer fills with thousands of frames at once.
    flooder.writer.write(b"".join(_masked_text(f"{n:05d}") for n in range(flood)))
    quiet.writer.write(_masked_text("quiet"))
    for _ in range(500):
        if len(handled) == flood + 1:
            break
        await asyncio.sleep(0.01)
    assert len(handled) == flood + 1
    # Served in turn, not after the flooder's whole backlog.
    assert handled.index("quiet") < flood // 2


def _masked_text(text: str) -> bytes:
    payload = text.encode()
    return bytes((0x81, 0x80 | len(payload))) + b"\x00\x00\x00\x00" + payload  # mask key 0: payload as is
