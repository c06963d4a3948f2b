"""Groups in one process: membership, sends, exclusion, closing, presence and name checks."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.support.rawclient import CLOSE, TEXT, TIMEOUT, Frame, RawWebsocket, raw_connect
from tests.support.servers import Serve
from wsframe import (
    GenericWebsocket,
    InvalidGroupNameError,
    WsframeError,
    close_group,
    create_app,
    group_members,
    send_message_to_group,
)
from wsframe.registry import REGISTRY_KEY


class Room(GenericWebsocket):
    """Joins the group in the path, says its id, and obeys 'leave' / 'join <g>' / 'say <text>'."""

    async def connect(self, room: str) -> None:
        await self.accept()
        await self.join_group(room)
        await self.send(self.connection_id)

    async def receive(self, data: str | bytes) -> None:
        assert isinstance(data, str)
        command, _, argument = data.partition(" ")
        if command == "leave":
            await self.leave_group(argument)
            await self.send(f"left {argument}")
        elif command == "join":
            await self.join_group(argument)
            await self.send(f"joined {argument}")
        elif command == "say":
            (room,) = self.path_variables.values()
            await send_message_to_group(room, argument, exclude=self.connection_id)
        elif command == "groups":
            await self.send(sorted(self.groups))


async def join(client: object, room: str) -> tuple[RawWebsocket, str]:
    ws = await raw_connect(client, f"/ws/{room}/")  # type: ignore[arg-type]
    frame = await ws.read_frame(TIMEOUT)
    assert frame is not None
    return ws, frame.text


async def nothing_more(ws: RawWebsocket) -> bool:
    """True when the server sends nothing further before the connection is closed by us."""
    ws.send_close(1000)
    frames = await ws.frames_until_eof(TIMEOUT, answer_close=False)
    return [f.opcode for f in frames] == [CLOSE]


def room_app() -> web.Application:
    return create_app({"ws/<room>/": Room})


async def test_group_send_reaches_every_member_once_and_no_one_else(serve: Serve) -> None:
    app = room_app()
    client = await serve(app)
    members = [await join(client, "red") for _ in range(5)]
    outsider, _ = await join(client, "blue")
    await send_message_to_group("red", {"n": 1}, app=app)
    for ws, _ in members:
        assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b'{"n":1}')
        assert await nothing_more(ws)
    assert await nothing_more(outsider)


async def test_exclude_skips_the_sender(serve: Serve) -> None:
    client = await serve(room_app())
    alice, _ = await join(client, "red")
    bob, _ = await join(client, "red")
    alice.send_text("say hello")
    assert await bob.read_frame(TIMEOUT) == Frame(TEXT, b"hello")
    assert await nothing_more(alice)


async def test_exclude_accepts_a_collection_of_ids(serve: Serve) -> None:
    app = room_app()
    client = await serve(app)
    joined = [await join(client, "red") for _ in range(3)]
    await send_message_to_group("red", "x", exclude={joined[0][1], joined[1][1]}, app=app)
    assert await joined[2][0].read_frame(TIMEOUT) == Frame(TEXT, b"x")
    assert await nothing_more(joined[0][0])
    assert await nothing_more(joined[1][0])


async def test_member_that_left_gets_nothing(serve: Serve) -> None:
    app = room_app()
    client = await serve(app)
    stayer, _ = await join(client, "red")
    leaver, _ = await join(client, "red")
    leaver.send_text("leave red")
    assert await leaver.read_frame(TIMEOUT) == Frame(TEXT, b"left red")
    await send_message_to_group("red", "after", app=app)
    assert await stayer.read_frame(TIMEOUT) == Frame(TEXT, b"after")
    assert await nothing_more(leaver)


async def test_disconnect_leaves_every_group(serve: Serve) -> None:
    app = room_app()
    client = await serve(app)
    ws, connection_id = await join(client, "red")
    ws.send_text("join blue")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"joined blue")
    assert await group_members("blue", app=app) == {connection_id}
    ws.abort()
    for _ in range(100):
        if not app[REGISTRY_KEY].groups:
            break
        await asyncio.sleep(0.01)
    assert await group_members("red", app=app) == set()
    assert await group_members("blue", app=app) == set()
    assert app[REGISTRY_KEY].groups == {}


async def test_groups_attribute_lists_memberships(serve: Serve) -> None:
    client = await serve(room_app())
    ws, _ = await join(client, "red")
    ws.send_text("join green")
    await ws.read_frame(TIMEOUT)
    ws.send_text("groups")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b'["green","red"]')


async def test_group_members_lists_current_members(serve: Serve) -> None:
    app = room_app()
    client = await serve(app)
    ids = {(await join(client, "red"))[1] for _ in range(3)}
    await join(client, "blue")
    assert await group_members("red", app=app) == ids
    assert await group_members("empty", app=app) == set()


async def test_close_group_closes_every_member_with_code_and_reason(serve: Serve) -> None:
    app = room_app()
    client = await serve(app)
    members = [(await join(client, "red"))[0] for _ in range(3)]
    outsider, _ = await join(client, "blue")
    await close_group("red", 4000, "room closed", app=app)
    for ws in members:
        frames = await ws.frames_until_eof(TIMEOUT)
        assert [(f.close_code, f.close_reason) for f in frames] == [(4000, "room closed")]
    assert await nothing_more(outsider)


async def test_join_twice_delivers_once(serve: Serve) -> None:
    app = room_app()
    client = await serve(app)
    ws, _ = await join(client, "red")
    ws.send_text("join red")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"joined red")
    await send_message_to_group("red", "once", app=app)
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"once")
    assert await nothing_more(ws)


@pytest.mark.parametrize("name", ["", "x" * 257, "lone \ud800 surrogate"])
async def test_invalid_group_names_are_refused(serve: Serve, name: str) -> None:
    app = room_app()
    await serve(app)
    with pytest.raises(InvalidGroupNameError, match="invalid group name"):
        await send_message_to_group(name, "x", app=app)
    with pytest.raises(InvalidGroupNameError):
        await group_members(name, app=app)


@pytest.mark.parametrize("name", ["has space", "a*", "room?", "[x]", "x" * 129, "x" * 256, "ünï"])
async def test_group_names_users_type_are_valid(serve: Serve, name: str) -> None:
    app = room_app()
    await serve(app)
    await send_message_to_group(name, "x", app=app)
    assert await group_members(name, app=app) == set()


async def test_invalid_name_in_join_closes_1011_and_leaves_others(serve: Serve) -> None:
    client = await serve(room_app())
    ws, _ = await join(client, "red")
    ws.send_text("join " + "x" * 257)
    frames = await ws.frames_until_eof(TIMEOUT)
    assert [f.close_code for f in frames] == [1011]


async def test_join_with_a_name_users_type_joins_it(serve: Serve) -> None:
    app = room_app()
    client = await serve(app)
    ws, connection_id = await join(client, "red")
    ws.send_text("join bad*name ü [x]?")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, "joined bad*name ü [x]?".encode())
    assert await group_members("bad*name ü [x]?", app=app) == {connection_id}


async def test_join_before_accept_raises_with_the_fix(serve: Serve) -> None:
    errors: list[str] = []

    class Early(GenericWebsocket):
        async def connect(self) -> None:
            try:
                await self.join_group("red")
            except WsframeError as exc:
                errors.append(str(exc))
            await self.accept()
            await self.close()

    client = await serve(create_app({"ws/": Early}))
    await (await raw_connect(client, "/ws/")).frames_until_eof(TIMEOUT)
    assert errors == ["Call accept() before join_group(): only open connections can be members."]


async def test_close_group_with_unsendable_code_raises(serve: Serve) -> None:
    app = room_app()
    await serve(app)
    with pytest.raises(ValueError, match="1005 is not a close code"):
        await close_group("red", 1005, app=app)
