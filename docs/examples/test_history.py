"""The history page's example: chat rooms whose members resume after a reconnect, and its tests."""

from wsframe import GenericWebsocket, History, create_app, send_message_to_group


# --8<-- [start:app]
class Room(GenericWebsocket):
    async def connect(self, room: str):
        await self.accept()
        query = self.query_params  # the client says where it was: ?epoch=...&offset=...
        since = (query["epoch"], int(query["offset"])) if "epoch" in query else None
        joined = await self.join_group(f"chat:{room}", since=since)
        if not joined.recovered:
            # Some messages are gone: the client reloads the room some other way.
            await self.send({"resync": True, "epoch": joined.epoch, "offset": joined.offset})

    async def receive(self, data: str | bytes):
        await send_message_to_group(f"chat:{self.path_variables['room']}", data)


def make_app():
    return create_app(
        {"ws/rooms/<room>/": Room},
        history={"chat:": History(size=100, ttl=300)},  # groups named chat:... keep 100 messages, 5 minutes
    )


# --8<-- [end:app]


# --8<-- [start:test]
async def test_a_member_that_reconnects_gets_every_message_it_missed(ws_client):
    client = ws_client(make_app())
    async with client.connect("/ws/rooms/1/") as alice:
        async with client.connect("/ws/rooms/1/") as bob:
            await alice.send("hi")
            last = await bob.receive_group_message()  # group, epoch, offset, data
            assert (last.offset, last.data) == (1, "hi")
        for text in ("are", "you", "there?"):  # bob is away
            await alice.send(text)
        assert [(await alice.receive_group_message()).data for _ in range(4)] == ["hi", "are", "you", "there?"]
        epoch, offset = last.position
        async with client.connect(f"/ws/rooms/1/?epoch={epoch}&offset={offset}") as bob:
            missed = [await bob.receive_group_message() for _ in range(3)]
            assert [(m.offset, m.data) for m in missed] == [(2, "are"), (3, "you"), (4, "there?")]


async def test_a_position_history_no_longer_covers_is_not_recovered(ws_client):
    client = ws_client(make_app())
    async with client.connect("/ws/rooms/2/?epoch=from-another-life&offset=7") as ws:
        answer = await ws.receive_json()
        assert answer["resync"] is True
        assert answer["offset"] == 0  # the room's position now: resume from here next time


# --8<-- [end:test]
