"""gc_freeze (wsframe._freeze): gc.freeze() after startup and bursts; one full collection per half replaced."""

from __future__ import annotations

import gc
import weakref

from tests.support.rawclient import TEXT, Frame, RawWebsocket, raw_connect
from tests.support.servers import Serve
from wsframe import GenericWebsocket, create_app
from wsframe._freeze import BURST, Freezer
from wsframe.backends.memory import MemoryBackend
from wsframe.registry import REGISTRY_KEY, Registry


class Echo(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        await self.send(data)


async def echo(ws: RawWebsocket, text: str) -> bool:
    ws.send_text(text)
    return await ws.read_frame() == Frame(TEXT, text.encode())


async def test_a_served_app_has_frozen_the_objects_of_its_startup(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}))
    assert gc.get_freeze_count() > 0
    ws = await raw_connect(client, "/ws/")  # and it serves as usual
    ws.send_text("hi")
    assert await ws.read_frame() == Frame(TEXT, b"hi")
    await ws.aclose()


async def test_gc_freeze_false_leaves_the_collector_unfrozen(serve: Serve) -> None:
    await serve(create_app({"ws/": Echo}, gc_freeze=False))
    assert gc.get_freeze_count() == 0


async def test_shutdown_unfreezes_so_the_process_collects_as_usual_again() -> None:
    freezer = Freezer(Registry(MemoryBackend()))
    freezer.start()
    assert gc.get_freeze_count() > 0
    freezer.stop()
    assert gc.get_freeze_count() == 0


async def test_a_burst_of_open_connections_freezes_again_at_once(serve: Serve) -> None:
    app = create_app({"ws/": Echo})
    client = await serve(app)
    registry = app[REGISTRY_KEY]
    assert registry.burst_at == registry.unfinished + BURST
    registry.burst_at = 2  # (a burst of two, not of a thousand: the same code path)
    first = await raw_connect(client, "/ws/")
    assert await echo(first, "one")
    assert registry.burst_at == 2
    second = await raw_connect(client, "/ws/")
    assert await echo(second, "two")
    assert registry.burst_at == 2 + BURST  # frozen at the second: the next burst counts from there
    await first.aclose()
    await second.aclose()


async def test_fewer_open_connections_than_at_the_last_freeze_make_the_next_burst_count_from_there() -> None:
    registry = Registry(MemoryBackend())
    freezer = Freezer(registry)
    registry.unfinished = 500
    freezer.start()
    try:
        assert registry.burst_at == 500 + BURST
        registry.unfinished = 100
        freezer.check()
        assert (registry.burst_at, freezer.freezes, freezer.full_collections) == (100 + BURST, 1, 0)
    finally:
        freezer.stop()
    assert registry.on_burst is None


async def test_when_enough_connections_ended_one_full_collection_frees_their_cycles() -> None:
    registry = Registry(MemoryBackend())
    freezer = Freezer(registry)
    freezer.start()
    try:

        class Cycle:
            me: object

        garbage = Cycle()
        garbage.me = garbage
        alive = weakref.ref(garbage)
        gc.freeze()  # frozen, as a connection's objects are
        del garbage
        gc.collect()
        assert alive() is not None  # a frozen cycle outlives a full collection
        registry.tally.closed[1000] = BURST  # (what Tally.finished counts)
        freezer.check()
        assert (freezer.full_collections, freezer.freezes) == (1, 2)
        assert alive() is None
        assert gc.get_freeze_count() > 0  # frozen again after the collection
        freezer.check()  # nothing ended since
        assert freezer.full_collections == 1
    finally:
        freezer.stop()
