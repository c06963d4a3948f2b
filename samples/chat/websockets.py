"""A chat room: typed messages in, group sends out, presence from the group's members."""

from __future__ import annotations

import msgspec

from wsframe import GenericWebsocket, group_members, send_message_to_group


class Say(msgspec.Struct, tag="say"):
    text: str


class Who(msgspec.Struct, tag="who"):
    pass


class ChatWebsocket(GenericWebsocket):
    """ws/chat/<room>/?name=ada: everyone in the room sees what anyone says."""

    max_message_size = 4096
    rate_limit = 20  # messages per second per connection; a flooder is closed with 1008

    async def connect(self, room: str) -> None:
        self.name = self.query_params.get("name", "").strip()[:32] or "anonymous"
        self.group = f"room:{room}"
        await self.accept()
        await self.join_group(self.group)
        await send_message_to_group(self.group, {"type": "joined", "name": self.name})
        await self.announce_presence()

    async def receive(self, data: Say | Who) -> None:
        if isinstance(data, Say):
            await send_message_to_group(self.group, {"type": "said", "name": self.name, "text": data.text[:1000]})
        else:
            await self.send({"type": "presence", "count": len(await group_members(self.group))})

    async def disconnect(self, code: int) -> None:
        # We have already left the group: tell the others.
        await send_message_to_group(self.group, {"type": "left", "name": self.name})
        await self.announce_presence()

    async def announce_presence(self) -> None:
        count = len(await group_members(self.group))
        await send_message_to_group(self.group, {"type": "presence", "count": count})
