"""Deadlines (wsframe._deadlines): one timer for many deadlines of one length; settled ones never fire."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from wsframe._deadlines import Deadlines


class Owner:
    pass


async def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_an_unsettled_entry_expires_with_its_value_and_a_settled_one_does_not() -> None:
    expired: list[str] = []
    deadlines = Deadlines(0.05, expired.append)
    first, second, third = Owner(), Owner(), Owner()
    deadlines.add(first, "first")
    deadlines.add(second, "second")
    deadlines.add(third, "third")
    deadlines.settle(second)
    await wait_for(lambda: len(expired) == 2)
    assert expired == ["first", "third"]  # in deadline order, the settled one left out
    assert deadlines.pending == {}
    assert deadlines.timer is None  # nothing left to wait for: no timer


async def test_entries_added_while_the_timer_waits_expire_after_it_fired_once() -> None:
    expired: list[int] = []
    deadlines = Deadlines(0.05, expired.append)
    owners = [Owner() for _ in range(3)]
    for index, owner in enumerate(owners):
        deadlines.add(owner, index)
        await asyncio.sleep(0.02)  # later deadlines: the one timer is armed again for each in turn
    await wait_for(lambda: len(expired) == 3)
    assert expired == [0, 1, 2]


async def test_settling_an_owner_that_has_no_deadline_does_nothing() -> None:
    deadlines = Deadlines(0.05, print)
    deadlines.settle(Owner())
    assert deadlines.pending == {}


def test_a_new_event_loop_starts_afresh() -> None:
    """An app served again on another loop: the old loop's timer is gone, the new one is armed."""
    expired: list[str] = []
    deadlines = Deadlines(60.0, expired.append)
    keep = Owner()

    async def add_long() -> None:
        deadlines.add(keep, "never")

    asyncio.run(add_long())  # its loop closes with the 60 s timer pending
    deadlines.timeout = 0.01
    later = Owner()

    async def add_short() -> None:
        deadlines.add(later, "fired")
        await wait_for(lambda: expired)

    asyncio.run(add_short())
    assert expired == ["fired"]
