"""Per-connection and per-worker limits, each tripping with its code."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.rawclient import CLOSE, TEXT, TIMEOUT, Frame, HandshakeRejected, raw_connect
from tests.support.servers import Serve
from wsframe import GenericWebsocket, create_app
from wsframe.limits import ConnectionLimiter, OutboundPolicy, TokenBucket


class Echo(GenericWebsocket):
    async def receive(self, data: str | bytes) -> None:
        await self.send(data)


async def test_rate_limit_closes_1008_when_a_burst_exceeds_it(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}, rate_limit=5))
    ws = await raw_connect(client, "/ws/")
    for i in range(20):
        ws.send_text(str(i))
    frames = await ws.frames_until_eof(TIMEOUT)
    # The burst allowance (5) is echoed, then the sixth message trips the limit.
    assert frames[:5] == [Frame(TEXT, str(i).encode()) for i in range(5)]
    assert [(f.opcode, f.close_code, f.close_reason) for f in frames[5:]] == [(CLOSE, 1008, "Rate limit exceeded")]


async def test_rate_limit_on_a_handler_class_leaves_others_alone(serve: Serve) -> None:
    class Strict(Echo):
        rate_limit = 1

    client = await serve(create_app({"ws/strict/": Strict, "ws/free/": Echo}))
    free = await raw_connect(client, "/ws/free/")
    for i in range(20):
        free.send_text(str(i))
    assert [await free.read_frame(TIMEOUT) for _ in range(20)] == [Frame(TEXT, str(i).encode()) for i in range(20)]
    strict = await raw_connect(client, "/ws/strict/")
    strict.send_text("a")
    strict.send_text("b")
    frames = await strict.frames_until_eof(TIMEOUT)
    assert [(f.opcode, f.close_code) for f in frames] == [(TEXT, None), (CLOSE, 1008)]


async def test_max_connections_per_worker_is_503(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}, max_connections=2))
    first, second = await raw_connect(client, "/ws/"), await raw_connect(client, "/ws/")
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, "/ws/")
    assert info.value.status == 503
    first.send_close(1000)
    await first.frames_until_eof(TIMEOUT, answer_close=False)
    third = None
    statuses: list[int] = []
    for _ in range(100):  # the server frees the slot when the first handler has finished
        try:
            third = await raw_connect(client, "/ws/")
            break
        except HandshakeRejected as exc:
            statuses.append(exc.status)
            await asyncio.sleep(0.01)
    assert third is not None
    assert set(statuses) <= {503}
    third.send_text("room again")
    assert await third.read_frame(TIMEOUT) == Frame(TEXT, b"room again")
    await second.aclose()


async def test_max_connections_per_ip_is_429(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}, max_connections_per_ip=1))
    await raw_connect(client, "/ws/")
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, "/ws/")
    assert info.value.status == 429


async def test_refused_handshakes_do_not_hold_a_slot(serve: Serve) -> None:
    class Refuse(GenericWebsocket):
        async def connect(self) -> None:
            pass

    client = await serve(create_app({"ws/": Refuse, "ok/": Echo}, max_connections=1))
    for _ in range(3):
        with pytest.raises(HandshakeRejected) as info:
            await raw_connect(client, "/ws/")
        assert info.value.status == 403
    ok = await raw_connect(client, "/ok/")
    ok.send_text("fine")
    assert await ok.read_frame(TIMEOUT) == Frame(TEXT, b"fine")


async def test_handshake_timeout_is_408(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    class Slow(GenericWebsocket):
        handshake_timeout = 0.05

        async def connect(self) -> None:
            await asyncio.sleep(10)

    client = await serve(create_app({"ws/": Slow}))
    with pytest.raises(HandshakeRejected) as info:
        await raw_connect(client, "/ws/")
    assert info.value.status == 408
    assert "neither accepted nor closed within 0.05 s" in caplog.text


async def test_handshake_timeout_stops_at_accept(serve: Serve) -> None:
    class LongConnect(GenericWebsocket):
        handshake_timeout = 0.05

        async def connect(self) -> None:
            await self.accept()
            await asyncio.sleep(0.2)  # longer than the handshake timeout, after accept: fine
            await self.send("still here")
            await self.close()

    client = await serve(create_app({"ws/": LongConnect}))
    ws = await raw_connect(client, "/ws/")
    frames = await ws.frames_until_eof(TIMEOUT)
    assert [(f.opcode, f.payload[2:] if f.opcode == CLOSE else f.payload) for f in frames] == [
        (TEXT, b"still here"),
        (CLOSE, b""),
    ]


async def test_idle_timeout_closes_with_1000(serve: Serve) -> None:
    client = await serve(create_app({"ws/": Echo}, idle_timeout=0.1))
    ws = await raw_connect(client, "/ws/")
    frames = await ws.frames_until_eof(TIMEOUT)
    assert [(f.close_code, f.close_reason) for f in frames] == [(1000, "Idle timeout")]


def test_limiter_counts_per_address_and_releases() -> None:
    limiter = ConnectionLimiter(max_connections=3, max_per_ip=2)
    assert [limiter.admit("a"), limiter.admit("a"), limiter.admit("a")] == [None, None, 429]
    assert limiter.admit("b") is None
    assert limiter.admit("c") == 503
    limiter.release("a")
    assert limiter.admit("c") is None
    assert limiter.by_ip == {"a": 1, "b": 1, "c": 1}


# ------------------------------------------------------- pure policies


def test_token_bucket_allows_a_burst_of_rate_messages_then_refuses() -> None:
    bucket = TokenBucket(5, now=100.0)
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]


def test_token_bucket_refills_at_rate_per_second() -> None:
    bucket = TokenBucket(2, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert [bucket.take(0.5) for _ in range(2)] == [True, False]


def test_token_bucket_refills_no_further_than_the_burst() -> None:
    bucket = TokenBucket(3, now=0.0)
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_token_bucket_below_one_per_second_still_allows_one_message() -> None:
    bucket = TokenBucket(0.5, now=0.0)
    assert [bucket.take(0.0), bucket.take(1.0), bucket.take(2.0)] == [True, False, True]


def test_outbound_policy_writes_up_to_and_including_the_limit() -> None:
    policy = OutboundPolicy(1024, "close")
    assert [policy.decide(0), policy.decide(1024)] == ["write", "write"]


def test_outbound_policy_closes_past_the_limit_by_default() -> None:
    assert OutboundPolicy(1024, "close").decide(1025) == "close"


def test_outbound_policy_drops_past_the_limit_in_drop_mode() -> None:
    assert OutboundPolicy(1024, "drop").decide(1025) == "drop"
