"""The lifecycle page's handlers: one per row of the close-code table."""

from aiohttp import web

from wsframe import ConnectionClosed, GenericWebsocket, create_app, status


# --8<-- [start:hooks]
class JournalWebsocket(GenericWebsocket):
    """Writes down every hook call, in order, in a list on the app."""

    async def connect(self):
        self.app[JOURNAL].append("connect")
        await self.accept()

    async def receive(self, data: str | bytes):
        self.app[JOURNAL].append(f"receive {data!r}")
        await self.send(data)

    async def disconnect(self, code: int):
        self.app[JOURNAL].append(f"disconnect {code}")


# --8<-- [end:hooks]


JOURNAL = web.AppKey("journal", list)


# --8<-- [start:reject]
class MembersOnlyWebsocket(GenericWebsocket):
    async def connect(self):
        if self.query_params.get("member") == "yes":
            await self.accept()
        # returning without accept(): HTTP 403, nothing registered


class ClosedForTheNightWebsocket(GenericWebsocket):
    async def connect(self):
        # close() before accept(): the handshake completes, then the close frame carries the code
        await self.close(code=4003, reason="the library is closed")


# --8<-- [end:reject]


# --8<-- [start:errors]
class BrokenConnectWebsocket(GenericWebsocket):
    async def connect(self):
        raise RuntimeError("database down")  # before accept: HTTP 500, traceback logged


class BrokenReceiveWebsocket(GenericWebsocket):
    async def receive(self, data: str | bytes):
        raise RuntimeError("bug")  # after accept: close 1011, traceback logged

    async def disconnect(self, code: int):
        self.app[JOURNAL].append(f"disconnect {code}")  # runs, with 1011


# --8<-- [end:errors]


# --8<-- [start:limits]
class SmallMessagesWebsocket(GenericWebsocket):
    max_message_size = 1024  # bytes; a larger message closes the connection with 1009

    async def receive(self, data: str | bytes):
        await self.send(len(data))


# --8<-- [end:limits]


# --8<-- [start:close-twice]
class GoodbyeWebsocket(GenericWebsocket):
    async def receive(self, data: str | bytes):
        await self.close(status.WS_1000_NORMAL_CLOSURE, "goodbye")
        await self.close(4000, "ignored: the first close wins")
        try:
            await self.send("never sent")
        except ConnectionClosed as closed:
            self.app[JOURNAL].append(str(closed))  # connection closed with code 1000 (goodbye)


# --8<-- [end:close-twice]


def make_app():
    app = create_app(
        {
            "ws/journal/": JournalWebsocket,
            "ws/members/": MembersOnlyWebsocket,
            "ws/closed/": ClosedForTheNightWebsocket,
            "ws/broken-connect/": BrokenConnectWebsocket,
            "ws/broken-receive/": BrokenReceiveWebsocket,
            "ws/small/": SmallMessagesWebsocket,
            "ws/goodbye/": GoodbyeWebsocket,
        }
    )
    app[JOURNAL] = []
    return app
