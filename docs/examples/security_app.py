"""The security page's examples: origins, token auth, permissions, limits, typed messages."""

import msgspec

from wsframe import GenericWebsocket, TokenAuth, create_app

# --8<-- [start:auth]
USERS_BY_TOKEN = {"s3cret": "ada"}  # your token store


async def verify(token: str) -> str | None:
    return USERS_BY_TOKEN.get(token)  # the user, or None to refuse with 401


async def is_staff(connection: GenericWebsocket) -> bool:
    return connection.user == "ada"  # False refuses with 403


class StaffWebsocket(GenericWebsocket):
    permissions = (is_staff,)

    async def connect(self):
        await self.accept()
        await self.send({"hello": self.user})


# --8<-- [end:auth]


# --8<-- [start:limits]
class UploadWebsocket(GenericWebsocket):
    max_message_size = 8 * 1024 * 1024  # this endpoint takes bigger messages (1009 past it)
    rate_limit = 2  # messages per second per connection (1008 past it)
    idle_timeout = 60  # close with 1000 after a minute of silence

    async def receive(self, data: str | bytes):  # text frames arrive as str, binary as bytes
        await self.send(len(data))


# --8<-- [end:limits]


# --8<-- [start:typed]
class Move(msgspec.Struct, tag="move"):
    x: int
    y: int


class Say(msgspec.Struct, tag="say"):
    text: str


class GameWebsocket(GenericWebsocket):
    async def receive(self, data: Move | Say):  # decoded and validated before receive runs
        if isinstance(data, Move):
            await self.send({"moved": [data.x, data.y]})
        else:
            await self.send({"said": data.text})


# --8<-- [end:typed]

# --8<-- [start:app]
app = create_app(
    {
        "ws/staff/": StaffWebsocket,
        "ws/upload/": UploadWebsocket,
        "ws/game/": GameWebsocket,
    },
    auth=TokenAuth(verify),  # Authorization: Bearer ..., or ?token=... from a browser
    allowed_origins=["https://app.example.com", "https://*.example.com"],
    max_connections=10_000,  # per worker: 503 past it
    max_connections_per_ip=50,  # 429 past it
)
# --8<-- [end:app]
