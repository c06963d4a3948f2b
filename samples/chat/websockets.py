"""A chat room: typed messages in and out, group sends, presence from the group's members."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from wsframe import GenericWebsocket, InvalidGroupNameError, group_members, send_message_to_group

# ------------------------------------------------------------------ client -> server


class Say(msgspec.Struct, tag="say"):
    """Say something to the room: ``{"type": "say", "text": "hello"}``."""

    text: str


class Who(msgspec.Struct, tag="who"):
    """Ask how many are in the room: ``{"type": "who"}``; the answer is a Presence."""


# ------------------------------------------------------------------ server -> client


class Joined(msgspec.Struct, tag="joined"):
    """Someone entered the room."""

    name: str


class Said(msgspec.Struct, tag="said"):
    """Someone said something (at most 1000 characters of it)."""

    name: str
    text: str


class Left(msgspec.Struct, tag="left"):
    """Someone left the room."""

    name: str


class Presence(msgspec.Struct, tag="presence"):
    """How many connections are in the room now."""

    count: int


class ChatWebsocket(GenericWebsocket):
    """ws/chat/<room>/?name=ada: everyone in the room sees what anyone says."""

    max_message_size = 4096
    rate_limit = 20  # messages per second per connection; a flooder is closed with 1008
    send_type: ClassVar[object] = Joined | Said | Left | Presence
    """What this handler sends: read by the AsyncAPI generator (docs/asyncapi.md)."""

    async def connect(self, room: str) -> None:
        self.name = self.query_params.get("name", "").strip()[:32] or "anonymous"
        self.group = ""
        await self.accept()
        try:
            # Any room name users type is a group name, up to 256 characters.
            await self.join_group(f"room:{room}")
        except InvalidGroupNameError:
            await self.close(4400, "Room names are at most 251 characters.")
            return
        self.group = f"room:{room}"
        await send_message_to_group(self.group, Joined(self.name))
        await self.announce_presence()

    async def receive(self, data: Say | Who) -> None:
        if isinstance(data, Say):
            await send_message_to_group(self.group, Said(self.name, data.text[:1000]))
        else:
            await self.send(Presence(len(await group_members(self.group))))

    async def disconnect(self, code: int) -> None:
        if not self.group:
            return  # refused before it joined
        # We have already left the group: tell the others.
        await send_message_to_group(self.group, Left(self.name))
        await self.announce_presence()

    async def announce_presence(self) -> None:
        count = len(await group_members(self.group))
        await send_message_to_group(self.group, Presence(count))
