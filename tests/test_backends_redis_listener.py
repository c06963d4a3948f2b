"""The Redis listener's liveness rule, driven by a clock the test moves: no Redis, no sockets.

The rule: a PING left unanswered for a whole health-check interval in which
the event loop ran is an outage; a wait that came back far later than asked
is a stalled loop, not an outage, unless the loop stalls so often that a
dead Redis would stay hidden.
"""

from __future__ import annotations

from wsframe.backends.redis._listener import Liveness, Silence

INTERVAL = 5.0


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def wait(liveness: Liveness, clock: Clock, took: float) -> Silence:
    """One wait for a message that came back empty after *took* seconds."""
    liveness.waiting()
    clock.now += took
    return liveness.silent()


def test_an_idle_interval_asks_for_a_ping_and_is_no_outage() -> None:
    clock = Clock()
    liveness = Liveness(INTERVAL, clock)
    assert wait(liveness, clock, INTERVAL) == Silence(ping=True)


def test_a_ping_unanswered_for_a_whole_interval_in_which_the_loop_ran_is_an_outage() -> None:
    clock = Clock()
    liveness = Liveness(INTERVAL, clock)
    wait(liveness, clock, INTERVAL)
    liveness.pinged()
    assert wait(liveness, clock, INTERVAL) == Silence(outage="no answer from Redis for 5.0 s")


def test_anything_heard_after_a_ping_clears_it() -> None:
    clock = Clock()
    liveness = Liveness(INTERVAL, clock)
    wait(liveness, clock, INTERVAL)
    liveness.pinged()
    liveness.heard()
    assert wait(liveness, clock, INTERVAL) == Silence(ping=True)


def test_a_stalled_loop_with_a_ping_unanswered_is_not_an_outage() -> None:
    clock = Clock()
    liveness = Liveness(INTERVAL, clock)
    wait(liveness, clock, INTERVAL)
    liveness.pinged()
    # The wait came back 12 s late: the loop did not run, so Redis's answer may be unread.
    assert wait(liveness, clock, INTERVAL + 12.0) == Silence(stalled_for=12.0)


def test_a_stall_while_idle_is_reported_and_still_asks_for_a_ping() -> None:
    clock = Clock()
    liveness = Liveness(INTERVAL, clock)
    assert wait(liveness, clock, 2 * INTERVAL) == Silence(stalled_for=INTERVAL, ping=True)


def test_a_wait_under_one_and_a_half_intervals_is_not_a_stall() -> None:
    clock = Clock()
    liveness = Liveness(INTERVAL, clock)
    wait(liveness, clock, INTERVAL)
    liveness.pinged()
    assert wait(liveness, clock, 1.5 * INTERVAL).stalled_for == 0.0


def test_three_stalls_in_a_row_with_a_ping_unanswered_are_an_outage_after_all() -> None:
    clock = Clock()
    liveness = Liveness(INTERVAL, clock)
    wait(liveness, clock, INTERVAL)
    liveness.pinged()
    assert wait(liveness, clock, 3 * INTERVAL).outage == ""
    assert wait(liveness, clock, 3 * INTERVAL).outage == ""
    third = wait(liveness, clock, 3 * INTERVAL)
    assert third == Silence(
        stalled_for=2 * INTERVAL, outage="no answer from Redis for 45.0 s (over 3 stalls of the event loop)"
    )


def test_hearing_from_redis_resets_the_count_of_stalls() -> None:
    clock = Clock()
    liveness = Liveness(INTERVAL, clock)
    wait(liveness, clock, INTERVAL)
    liveness.pinged()
    wait(liveness, clock, 3 * INTERVAL)
    wait(liveness, clock, 3 * INTERVAL)
    liveness.heard()
    wait(liveness, clock, INTERVAL)
    liveness.pinged()
    assert wait(liveness, clock, 3 * INTERVAL).outage == ""
    assert wait(liveness, clock, 3 * INTERVAL).outage == ""


def test_the_outage_names_how_long_since_the_ping_went_out() -> None:
    clock = Clock()
    liveness = Liveness(INTERVAL, clock)
    wait(liveness, clock, INTERVAL)
    clock.now += 0.25  # the PING itself took a quarter of a second to go out
    liveness.pinged()
    assert wait(liveness, clock, 7.0).outage == "no answer from Redis for 7.0 s"
