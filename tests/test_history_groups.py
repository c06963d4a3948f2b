"""History groups in one process (the memory backend): frames, resume with ``since``, the seam, gap fill."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from aiohttp import web

import wsframe
from tests.apps.history_app import make_app
from tests.support.history import joined_of, path
from wsframe import (
    BackendUnavailableError,
    ConfigurationError,
    GenericWebsocket,
    History,
    Joined,
    create_app,
    send_message_to_group,
)
from wsframe.backends import IpcBackend, MemoryBackend
from wsframe.backends.base import Envelope, HistoryRead
from wsframe.history import Position
from wsframe.registry import REGISTRY_KEY, Registry
from wsframe.testing import WebsocketTestConnection, WsClientFactory

SHORT = 0.05
"""A receive timeout for waits that expect nothing to arrive."""


async def nothing_more(ws: WebsocketTestConnection) -> bool:
    with pytest.raises(TimeoutError):
        await ws.receive(timeout=SHORT)
    return True


def registry_of(app: web.Application) -> Registry:
    return app[REGISTRY_KEY]


# ------------------------------------------------------------------ frames


async def test_a_message_to_a_history_group_arrives_as_one_frame_with_its_position(ws_client: WsClientFactory) -> None:
    app = make_app()
    async with ws_client(app).connect(path("chat:1")) as ws:
        joined = await joined_of(ws)
        await send_message_to_group("chat:1", {"text": "hi"}, app=app)
        await send_message_to_group("chat:1", "plain", app=app)
        assert msgspec.json.decode(await ws.receive()) == {
            "group": "chat:1",
            "epoch": joined["epoch"],
            "offset": 1,
            "data": {"text": "hi"},
        }
        second = await ws.receive_group_message()
        assert (second.offset, second.data, second.recovered) == (2, "plain", True)


async def test_a_message_sent_from_a_handler_and_from_http_shares_one_numbering(ws_client: WsClientFactory) -> None:
    client = ws_client(make_app())
    async with client.connect(path("chat:1")) as ws:
        await joined_of(ws)
        await ws.send("say from-handler")
        assert (await client.post("/send/chat:1/", data="from-http")).status == 200
        got = [await ws.receive_group_message(), await ws.receive_group_message()]
        assert [(m.offset, m.data) for m in got] == [(1, "from-handler"), (2, "from-http")]


async def test_bytes_sent_to_a_history_group_raise_type_error_and_reach_no_one(ws_client: WsClientFactory) -> None:
    async with ws_client(make_app()).connect(path("chat:1")) as ws:
        await joined_of(ws)
        await ws.send("bytes abc")
        answer = await ws.receive_json()
        assert "JSON only" in answer["error"]
        await ws.send("say next")
        assert (await ws.receive_group_message()).offset == 1  # nothing was numbered for the refused send


async def test_a_group_without_history_is_joined_as_before_and_gets_plain_frames(ws_client: WsClientFactory) -> None:
    app = make_app()
    async with ws_client(app).connect(path("room:1", ("whatever", 3))) as ws:
        assert await joined_of(ws) == {"recovered": True, "epoch": None, "offset": None}
        await send_message_to_group("room:1", {"n": 1}, app=app)
        assert await ws.receive_json() == {"n": 1}


async def test_without_history_configured_join_group_returns_recovered_true(ws_client: WsClientFactory) -> None:
    results: list[Joined] = []

    class Plain(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            results.append(await self.join_group("chat:1", since=("e", 1)))
            await self.send("ok")

    async with ws_client(create_app({"ws/": Plain})).connect("/ws/") as ws:
        assert await ws.receive() == "ok"
    assert results == [Joined(True)]


def test_history_with_the_ipc_backend_is_refused_at_create_app_saying_why(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"history= needs a backend.*ipc backend does not"):
        create_app({}, backend=IpcBackend(str(tmp_path)), history={"chat:": History(10, 60)})


# ------------------------------------------------------------------ resume


async def test_resuming_replays_every_missed_message_in_order_then_live_ones(ws_client: WsClientFactory) -> None:
    app = make_app()
    client = ws_client(app)
    async with client.connect(path("chat:1")) as ws:
        since = await joined_of(ws)
        await send_message_to_group("chat:1", "seen", app=app)
        assert (await ws.receive_group_message()).offset == 1
    for n in range(5):
        await send_message_to_group("chat:1", f"missed {n}", app=app)
    async with client.connect(path("chat:1", (since["epoch"], 1))) as ws:
        replayed = [await ws.receive_group_message() for _ in range(5)]
        assert [(m.offset, m.data) for m in replayed] == [(n + 2, f"missed {n}") for n in range(5)]
        assert await joined_of(ws) == {"recovered": True, "epoch": since["epoch"], "offset": 6}
        await send_message_to_group("chat:1", "live", app=app)
        live = await ws.receive_group_message()
        assert (live.offset, live.data) == (7, "live")
        assert await nothing_more(ws)


async def test_resuming_at_the_current_position_replays_nothing_and_is_recovered(ws_client: WsClientFactory) -> None:
    app = make_app()
    client = ws_client(app)
    async with client.connect(path("chat:1")) as ws:
        since = await joined_of(ws)
    async with client.connect(path("chat:1", (since["epoch"], 0))) as ws:
        assert await joined_of(ws) == {"recovered": True, "epoch": since["epoch"], "offset": 0}


async def test_resuming_from_before_the_oldest_kept_message_replays_nothing(ws_client: WsClientFactory) -> None:
    app = make_app(size=3)
    client = ws_client(app)
    async with client.connect(path("chat:1")) as ws:
        since = await joined_of(ws)
    for n in range(5):
        await send_message_to_group("chat:1", n, app=app)
    async with client.connect(path("chat:1", (since["epoch"], 0))) as ws:
        assert await joined_of(ws) == {"recovered": False, "epoch": since["epoch"], "offset": 5}
        await send_message_to_group("chat:1", "live", app=app)
        assert (await ws.receive_group_message()).offset == 6


async def test_resuming_from_another_epoch_replays_nothing(ws_client: WsClientFactory) -> None:
    app = make_app()
    await_sends = ws_client(app)
    async with await_sends.connect(path("chat:1")) as ws:
        epoch = (await joined_of(ws))["epoch"]
        await send_message_to_group("chat:1", "x", app=app)
        await ws.receive_group_message()
    async with await_sends.connect(path("chat:1", ("not-" + epoch, 0))) as ws:
        assert await joined_of(ws) == {"recovered": False, "epoch": epoch, "offset": 1}


async def test_resuming_from_an_offset_the_epoch_never_reached_replays_nothing(ws_client: WsClientFactory) -> None:
    client = ws_client(make_app())
    async with client.connect(path("chat:1")) as ws:
        epoch = (await joined_of(ws))["epoch"]
    async with client.connect(path("chat:1", (epoch, 50))) as ws:
        assert await joined_of(ws) == {"recovered": False, "epoch": epoch, "offset": 0}


async def test_the_longest_prefix_decides_how_much_is_kept(ws_client: WsClientFactory) -> None:
    app = make_app(size=100)  # chat:vip: keeps 2
    client = ws_client(app)
    async with client.connect(path("chat:vip:1")) as ws:
        epoch = (await joined_of(ws))["epoch"]
    for n in range(3):
        await send_message_to_group("chat:vip:1", n, app=app)
    async with client.connect(path("chat:vip:1", (epoch, 0))) as ws:
        assert (await joined_of(ws))["recovered"] is False
    async with client.connect(path("chat:vip:1", (epoch, 1))) as ws:
        assert [(await ws.receive_group_message()).data for _ in range(2)] == [1, 2]
        assert (await joined_of(ws))["recovered"] is True


async def test_joining_twice_replays_nothing_the_second_time(ws_client: WsClientFactory) -> None:
    results: list[Joined] = []

    class Twice(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            first = await self.join_group("chat:1", since=None)
            await send_message_to_group("chat:1", "one")
            results.extend([first, await self.join_group("chat:1", since=(first.epoch or "", 0))])
            await self.send("done")

    app = create_app({"ws/": Twice}, history={"chat:": History(10, 60)})
    async with ws_client(app).connect("/ws/") as ws:
        assert (await ws.receive_group_message()).data == "one"
        assert await ws.receive() == "done"
    assert [r.recovered for r in results] == [True, True]
    assert results[1].offset == 1


# ------------------------------------------------------------------ the seam


class PausedReads(MemoryBackend):
    """The memory backend whose next history read stops after (or before) reading, until released."""

    def __init__(self, *, read_first: bool) -> None:
        super().__init__()
        self.read_first = read_first
        self.armed = False
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def history_read(self, group: str, since: Position | None, rule: History) -> HistoryRead:
        if not self.armed:
            return await super().history_read(group, since, rule)
        self.armed = False
        read = await super().history_read(group, since, rule) if self.read_first else None
        self.reading.set()
        await self.release.wait()
        return read if read is not None else await super().history_read(group, since, rule)


READS = pytest.mark.parametrize("read_first", [True, False], ids=["read-before-the-sends", "read-after-the-sends"])


@READS
async def test_messages_sent_during_the_first_members_replay_arrive_exactly_once_after_it(
    ws_client: WsClientFactory, read_first: bool
) -> None:
    backend = PausedReads(read_first=read_first)
    app = make_app(backend)
    client = ws_client(app)
    async with client.connect(path("chat:1")) as ws:
        epoch = (await joined_of(ws))["epoch"]
    for n in range(1, 4):
        await send_message_to_group("chat:1", n, app=app)
    backend.armed = True
    opening = asyncio.ensure_future(client.connect(path("chat:1", (epoch, 1))).__aenter__())
    await asyncio.wait_for(backend.reading.wait(), 5)
    for n in range(4, 7):
        await send_message_to_group("chat:1", n, app=app)
    backend.release.set()
    ws = await opening
    try:
        frames = [msgspec.json.decode(await ws.receive()) for _ in range(6)]  # 5 messages and the join's answer
        assert [f["offset"] for f in frames if "joined" not in f] == [2, 3, 4, 5, 6]
        assert [f["joined"]["recovered"] for f in frames if "joined" in f] == [True]
        assert await nothing_more(ws)
    finally:
        await ws.close()


@READS
async def test_messages_sent_during_a_replay_beside_other_members_arrive_exactly_once_after_it(
    ws_client: WsClientFactory, read_first: bool
) -> None:
    backend = PausedReads(read_first=read_first)
    app = make_app(backend)
    client = ws_client(app)
    async with client.connect(path("chat:1")) as watcher:
        epoch = (await joined_of(watcher))["epoch"]
        for n in range(1, 4):
            await send_message_to_group("chat:1", n, app=app)
        assert [(await watcher.receive_group_message()).offset for _ in range(3)] == [1, 2, 3]
        backend.armed = True
        opening = asyncio.ensure_future(client.connect(path("chat:1", (epoch, 1))).__aenter__())
        await asyncio.wait_for(backend.reading.wait(), 5)
        for n in range(4, 7):
            await send_message_to_group("chat:1", n, app=app)
        # The other member is not held up by the read.
        assert [(await watcher.receive_group_message()).offset for _ in range(3)] == [4, 5, 6]
        backend.release.set()
        ws = await opening
        try:
            frames = [msgspec.json.decode(await ws.receive()) for _ in range(6)]
            assert [f["offset"] for f in frames if "joined" not in f] == [2, 3, 4, 5, 6]
            assert [f["joined"]["recovered"] for f in frames if "joined" in f] == [True]
            await send_message_to_group("chat:1", 7, app=app)
            assert (await ws.receive_group_message()).offset == 7
            assert await nothing_more(ws)
        finally:
            await ws.close()


# ------------------------------------------------------------------ gaps on a live connection


def stream_envelope(registry: Registry, group: str, epoch: str, offset: int, data: bytes) -> Envelope:
    return msgspec.structs.replace(Envelope.group_send(group, data, 1, origin="0" * 8), epoch=epoch, offset=offset)


async def test_a_gap_on_a_live_connection_is_filled_from_history_in_order(ws_client: WsClientFactory) -> None:
    backend = MemoryBackend()
    app = make_app(backend)
    async with ws_client(app).connect(path("chat:1")) as ws:
        epoch = (await joined_of(ws))["epoch"]
        # Another worker's two sends whose envelopes never arrived, then its third, which does.
        for data in (b'"a"', b'"b"', b'"c"'):
            backend.history.append("chat:1", data, History(100, 300))
        registry = registry_of(app)
        await registry.deliver_envelope(stream_envelope(registry, "chat:1", epoch, 3, b'"c"'))
        got = [await ws.receive_group_message() for _ in range(3)]
        assert [(m.offset, m.data) for m in got] == [(1, "a"), (2, "b"), (3, "c")]
        assert (registry.history_stats.gaps_filled, registry.history_stats.messages_filled) == (1, 2)


async def test_a_gap_history_cannot_fill_is_signalled_to_each_member_then_delivery_goes_on(
    ws_client: WsClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    backend = MemoryBackend()
    app = make_app(backend)
    client = ws_client(app)
    async with client.connect(path("chat:vip:1")) as first, client.connect(path("chat:vip:1")) as second:
        epoch = (await joined_of(first))["epoch"]
        await joined_of(second)
        for n in range(5):  # chat:vip: keeps 2: offsets 1-2 are gone
            backend.history.append("chat:vip:1", str(n).encode(), History(2, 300))
        registry = registry_of(app)
        await registry.deliver_envelope(stream_envelope(registry, "chat:vip:1", epoch, 5, b"4"))
        for ws in (first, second):
            signal = await ws.receive_group_message()
            assert (signal.recovered, signal.position) == (False, (epoch, 4))
            message = await ws.receive_group_message()
            assert (message.offset, message.data) == (5, 4)
        assert (registry.history_stats.unrecovered, registry.history_stats.members_told) == (1, 2)
        counters = wsframe.stats(app).history_counters
        assert (counters["unrecovered"], counters["members_told"], counters["gaps_filled"]) == (1, 2, 0)
        assert "offsets 1-4 were missed" in caplog.text


async def test_a_new_epoch_on_a_live_connection_is_signalled_before_its_messages(ws_client: WsClientFactory) -> None:
    app = make_app()
    async with ws_client(app).connect(path("chat:1")) as ws:
        await joined_of(ws)
        registry = registry_of(app)
        await registry.deliver_envelope(stream_envelope(registry, "chat:1", "restarted", 1, b'"new"'))
        signal = await ws.receive_group_message()
        assert (signal.recovered, signal.position) == (False, ("restarted", 0))
        message = await ws.receive_group_message()
        assert (message.epoch, message.offset, message.data) == ("restarted", 1, "new")


async def test_an_offset_already_delivered_is_dropped_and_counted(ws_client: WsClientFactory) -> None:
    app = make_app()
    async with ws_client(app).connect(path("chat:1")) as ws:
        epoch = (await joined_of(ws))["epoch"]
        await send_message_to_group("chat:1", "once", app=app)
        registry = registry_of(app)
        await registry.deliver_envelope(stream_envelope(registry, "chat:1", epoch, 1, b'"once"'))
        assert (await ws.receive_group_message()).offset == 1
        assert await nothing_more(ws)
        assert registry.history_stats.duplicates == 1


async def test_the_stream_of_a_group_is_forgotten_when_its_last_member_here_leaves(ws_client: WsClientFactory) -> None:
    app = make_app()
    client = ws_client(app)
    async with client.connect(path("chat:1")) as ws:
        await joined_of(ws)
        assert set(registry_of(app).streams) == {"chat:1"}
    for _ in range(500):
        if not registry_of(app).streams:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"streams left: {registry_of(app).streams}")


async def test_exclude_applies_to_live_delivery_but_a_replay_holds_the_message(ws_client: WsClientFactory) -> None:
    app = make_app()
    client = ws_client(app)
    registry = registry_of(app)
    async with client.connect(path("chat:1")) as sender:
        epoch = (await joined_of(sender))["epoch"]
        (sender_id,) = registry.groups["chat:1"]
        async with client.connect(path("chat:1")) as other:
            await joined_of(other)
            await send_message_to_group("chat:1", "not to the first", exclude=sender_id, app=app)
            assert (await other.receive_group_message()).data == "not to the first"
            assert await nothing_more(sender)
    async with client.connect(path("chat:1", (epoch, 0))) as again:
        assert (await again.receive_group_message()).data == "not to the first"


class FailingReads(MemoryBackend):
    """The memory backend whose history cannot be read, as when Redis stops answering mid-join."""

    async def history_read(self, group: str, since: Position | None, rule: History) -> HistoryRead:
        raise BackendUnavailableError("the store did not answer")


async def test_a_join_whose_history_cannot_be_read_raises_and_leaves_no_membership(ws_client: WsClientFactory) -> None:
    outcome: list[object] = []

    class Careful(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            try:
                await self.join_group("chat:1", since=("e", 3))
            except BackendUnavailableError as exc:
                outcome.extend([str(exc), sorted(self.groups)])
            await self.send("done")

    app = create_app({"ws/": Careful}, backend=FailingReads(), history={"chat:": History(10, 60)})
    async with ws_client(app).connect("/ws/") as ws:
        assert await ws.receive() == "done"
        assert outcome == ["the store did not answer", []]
        assert registry_of(app).groups == {}
        assert registry_of(app).streams == {}


async def test_the_metrics_endpoint_exports_the_history_counters(ws_client: WsClientFactory) -> None:
    backend = MemoryBackend()
    app = make_app(backend, metrics=True)
    client = ws_client(app)
    async with client.connect(path("chat:vip:1")) as ws:
        epoch = (await joined_of(ws))["epoch"]
        for n in range(5):  # chat:vip: keeps 2
            backend.history.append("chat:vip:1", str(n).encode(), History(2, 300))
        registry = registry_of(app)
        await registry.deliver_envelope(stream_envelope(registry, "chat:vip:1", epoch, 5, b"4"))
        assert (await ws.receive_group_message()).recovered is False
        text = await (await client.get("/metrics")).text()
    assert "wsframe_history_unrecovered_total 1.0" in text
    assert "wsframe_history_members_told_total 1.0" in text
    assert "wsframe_history_gaps_filled_total 0.0" in text


async def test_a_replay_larger_than_the_outbound_buffer_closes_the_connection_with_1013(
    ws_client: WsClientFactory,
) -> None:
    app = make_app(max_outbound_buffer=64 * 1024)
    client = ws_client(app)
    async with client.connect(path("chat:1")) as ws:
        epoch = (await joined_of(ws))["epoch"]
    for _ in range(100):  # 10 MB to replay, far past the buffer and the kernel's socket buffers
        await send_message_to_group("chat:1", "x" * 100_000, app=app)
    async with client.connect(path("chat:1", (epoch, 0))) as ws:
        assert await ws.wait_closed(timeout=10) == 1013


async def test_a_since_that_is_not_an_epoch_and_an_offset_raises_type_error_and_joins_nothing(
    ws_client: WsClientFactory,
) -> None:
    outcome: list[object] = []

    class Sloppy(GenericWebsocket):
        async def connect(self) -> None:
            await self.accept()
            try:
                await self.join_group("chat:1", since=("e", "7"))  # type: ignore[arg-type]
            except TypeError as exc:
                outcome.extend([str(exc), sorted(self.groups)])
            await self.send("done")

    app = create_app({"ws/": Sloppy}, history={"chat:": History(10, 60)})
    async with ws_client(app).connect("/ws/") as ws:
        assert await ws.receive() == "done"
    assert outcome == ["since must be None or (epoch, offset), a str and an int, got ('e', '7')", []]


async def test_a_compressed_member_gets_the_replay_and_live_messages_in_order(ws_client: WsClientFactory) -> None:
    app = make_app(compression=True)
    client = ws_client(app)
    async with client.connect(path("chat:1")) as ws:
        epoch = (await joined_of(ws))["epoch"]
    for n in range(1, 4):
        await send_message_to_group("chat:1", f"missed {n}", app=app)
    await client.start()
    ws = await client.http.ws_connect(path("chat:1", (epoch, 0)), compress=15)
    try:
        assert ws.compress == 15  # permessage-deflate was negotiated
        frames = [msgspec.json.decode((await ws.receive(timeout=5)).data) for _ in range(4)]
        assert [f.get("offset") for f in frames[:3]] == [1, 2, 3]
        assert frames[3]["joined"]["recovered"] is True
        await send_message_to_group("chat:1", "live", app=app)
        live = msgspec.json.decode((await ws.receive(timeout=5)).data)
        assert (live["offset"], live["data"]) == (4, "live")
    finally:
        await ws.close()
