"""Typed receive: frames decoded and validated into receive()'s annotation."""

from __future__ import annotations

from typing import Any, TypedDict

import msgspec
import pytest

from tests.support.rawclient import TEXT, TIMEOUT, Frame, raw_connect
from tests.support.servers import Serve
from wsframe import ConfigurationError, GenericWebsocket, create_app
from wsframe.config import SETTINGS_KEY
from wsframe.limits import ConnectionLimiter
from wsframe.messages import decoder_for

LIMITER = ConnectionLimiter(None, None)


class Join(msgspec.Struct, tag="join"):
    room: str


class Say(msgspec.Struct, tag="say"):
    text: str
    count: int = 1


class Move(TypedDict):
    x: int
    y: int


class Chat(GenericWebsocket):
    async def receive(self, data: Join | Say) -> None:
        if isinstance(data, Join):
            await self.send({"joined": data.room})
        else:
            await self.send({"said": data.text * data.count})


async def frames_for(serve: Serve, handler: type[GenericWebsocket], *messages: str | bytes) -> list[Frame]:
    client = await serve(create_app({"ws/": handler}))
    ws = await raw_connect(client, "/ws/")
    for message in messages:
        if isinstance(message, str):
            ws.send_text(message)
        else:
            ws.send_binary(message)
    return await ws.frames_until_eof(TIMEOUT)


def closing(frames: list[Frame]) -> tuple[int | None, str]:
    return frames[-1].close_code, frames[-1].close_reason


async def test_tagged_union_decodes_each_variant(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Chat}))
    ws = await raw_connect(client, "/ws/")
    ws.send_text('{"type":"join","room":"lobby"}')
    ws.send_binary(b'{"type":"say","text":"hi","count":2}')
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b'{"joined":"lobby"}')
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b'{"said":"hihi"}')


async def test_wrong_field_type_closes_1007_naming_the_field(serve: Serve) -> None:
    frames = await frames_for(serve, Chat, '{"type":"say","text":"hi","count":"two"}')
    assert closing(frames) == (1007, "Invalid message: Expected `int`, got `str` - at `$.count`")


async def test_missing_field_closes_1007_naming_the_field(serve: Serve) -> None:
    frames = await frames_for(serve, Chat, '{"type":"join"}')
    assert closing(frames) == (1007, "Invalid message: Object missing required field `room`")


async def test_unknown_tag_closes_1007(serve: Serve) -> None:
    frames = await frames_for(serve, Chat, '{"type":"dance"}')
    assert closing(frames) == (1007, "Invalid message: Invalid value 'dance' - at `$.type`")


async def test_malformed_json_closes_1007_without_parser_details(serve: Serve) -> None:
    frames = await frames_for(serve, Chat, "{not json")
    assert closing(frames) == (1007, "Invalid message: malformed JSON")


async def test_typed_dict_is_validated(serve: Serve) -> None:
    class Mover(GenericWebsocket):
        async def receive(self, data: Move) -> None:
            await self.send(data["x"] + data["y"])

    client = await serve(create_app({"ws/": Mover}))
    ws = await raw_connect(client, "/ws/")
    ws.send_text('{"x":1,"y":2}')
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"3")
    ws.send_text('{"x":1}')
    assert closing(await ws.frames_until_eof(TIMEOUT)) == (1007, "Invalid message: Object missing required field `y`")


async def test_plain_dict_and_list_annotations_decode_json(serve: Serve) -> None:
    class Lists(GenericWebsocket):
        async def receive(self, data: list[int]) -> None:
            await self.send(sum(data))

    frames = await frames_for(serve, Lists, "[1,2,3]", '["x"]')
    assert frames[0] == Frame(TEXT, b"6")
    assert closing(frames) == (1007, "Invalid message: Expected `int`, got `str` - at `$[0]`")


async def test_on_invalid_message_can_be_overridden_to_keep_the_connection(serve: Serve) -> None:
    class Forgiving(Chat):
        async def on_invalid_message(self, error: Exception) -> None:
            await self.send({"error": str(error)})

    client = await serve(create_app({"ws/": Forgiving}))
    ws = await raw_connect(client, "/ws/")
    ws.send_text('{"type":"join"}')
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b'{"error":"Object missing required field `room`"}')
    ws.send_text('{"type":"join","room":"r"}')
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b'{"joined":"r"}')


async def test_untyped_receive_gets_raw_text_and_bytes(serve: Serve) -> None:
    class Raw(GenericWebsocket):
        async def receive(self, data):  # type: ignore[no-untyped-def]
            await self.send(repr(data))

    client = await serve(create_app({"ws/": Raw}))
    ws = await raw_connect(client, "/ws/")
    ws.send_text("{}")
    ws.send_binary(b"{}")
    assert [await ws.read_frame(TIMEOUT), await ws.read_frame(TIMEOUT)] == [Frame(TEXT, b"'{}'"), Frame(TEXT, b"b'{}'")]


@pytest.mark.parametrize("annotation", [str, bytes, str | bytes, Any])
def test_raw_annotations_get_no_decoder(annotation: Any) -> None:
    async def receive(self: Any, data: Any) -> None: ...

    receive.__annotations__ = {"data": annotation, "return": None}
    assert decoder_for(receive, "test") is None


def test_undecodable_annotation_is_a_configuration_error() -> None:
    class Opaque:
        pass

    class Bad(GenericWebsocket):
        async def receive(self, data: Opaque) -> None:  # type: ignore[override]
            pass

    Bad.receive.__annotations__["data"] = Opaque
    with pytest.raises(ConfigurationError, match=r"receive\(\) annotation .* cannot be decoded from JSON"):
        create_app({"ws/": Bad})


def test_decoder_is_part_of_the_handler_config_built_at_create_app() -> None:
    from wsframe.config import HandlerConfig
    from wsframe.handshake import build_handler_config
    from wsframe.pathvars import PathConverters

    def build(handler: type[GenericWebsocket]) -> HandlerConfig:
        return build_handler_config(handler, PathConverters({}), create_app({})[SETTINGS_KEY], LIMITER, "test")

    assert build(Chat).decoder is not None
    assert build(GenericWebsocket).decoder is None
