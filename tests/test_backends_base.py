"""What every backend shares (wsframe.backends.base): the Node a backend serves, the one receive
path that decodes, delivers and counts, the "not started" guard and the positive-number check.

A small backend that hands every envelope back to its own node exercises them without I/O.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wsframe import BackendUnavailableError, ConfigurationError
from wsframe.backends import IpcBackend, MemoryBackend, RedisBackend
from wsframe.backends.base import Backend, BackendStats, Envelope, Node, check_positive, encode_envelope
from wsframe.registry import Registry

CONNECTION = "deadbeef" + "0" * 24


class Inbox:
    """A node that keeps what it is handed, and fails on a close (as a buggy handler would)."""

    node_id = "deadbeef"

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def deliver_envelope(self, envelope: Envelope) -> None:
        if envelope.kind == "close":
            raise RuntimeError("a bug in delivery")
        self.envelopes.append(envelope)

    def local_members(self, group: str) -> list[str]:
        return [CONNECTION] if group == "red" else []

    def local_groups(self) -> list[str]:
        return ["red"]


class Loopback(Backend):
    """Hands every envelope back to its own node, through the shared receive path."""

    name = "loopback"
    _starts = "remembers its node"

    def __init__(self) -> None:
        self.stats = BackendStats()

    async def on_startup(self, node: Node) -> None:
        self._node = node

    async def publish_to_node(self, node_id: str, envelope: Envelope) -> None:
        self._require_started()
        await self._receive(encode_envelope(envelope), "the loopback")

    async def receive_raw(self, data: bytes) -> None:
        await self._receive(data, "the loopback")


async def started() -> tuple[Loopback, Inbox]:
    backend, node = Loopback(), Inbox()
    await backend.on_startup(node)
    return backend, node


def test_the_registry_is_a_node() -> None:
    node: Node = Registry(MemoryBackend())
    assert node.local_members("nobody-here") == []


async def test_a_received_envelope_is_delivered_and_counted() -> None:
    backend, node = await started()
    await backend.publish_to_node("deadbeef", Envelope("send", CONNECTION, payload=b"hi"))
    assert node.envelopes == [Envelope("send", CONNECTION, payload=b"hi")]
    assert backend.stats == BackendStats(delivered=1, bad_messages=0)


async def test_bytes_that_are_not_an_envelope_are_skipped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wsframe.backends.loopback")
    backend, node = await started()
    await backend.receive_raw(b"\x00 not msgpack")
    assert node.envelopes == []
    assert backend.stats == BackendStats(delivered=0, bad_messages=1)
    [record] = caplog.records
    assert record.getMessage().startswith("skipping a message on the loopback that is not a wsframe envelope")


async def test_a_delivery_that_raises_is_counted_logged_and_does_not_stop_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="wsframe.backends.loopback")
    backend, node = await started()
    await backend.publish_to_node("deadbeef", Envelope("close", CONNECTION))
    await backend.publish_to_node("deadbeef", Envelope("send", CONNECTION, payload=b"after"))
    assert node.envelopes == [Envelope("send", CONNECTION, payload=b"after")]
    assert backend.stats == BackendStats(delivered=1, bad_messages=1)
    [record] = caplog.records
    assert record.getMessage() == f"delivering close to {CONNECTION} failed; skipped"


async def test_a_backend_used_before_startup_raises_saying_how_it_starts() -> None:
    with pytest.raises(BackendUnavailableError) as caught:
        await Loopback().publish_to_node("deadbeef", Envelope("send", CONNECTION))
    assert str(caught.value) == (
        "the loopback backend is not started; start the app (its on_startup remembers its node) first."
    )


async def test_the_redis_and_ipc_backends_say_how_they_start(tmp_path: Path) -> None:
    unstarted = {
        "Redis": RedisBackend("redis://127.0.0.1:6379/0"),
        "IPC": IpcBackend(tmp_path),
    }
    starts = {"Redis": "connects to Redis", "IPC": "opens the worker socket"}
    for label, backend in unstarted.items():
        with pytest.raises(BackendUnavailableError) as caught:
            await backend.publish_to_node("deadbeef", Envelope("send", CONNECTION))
        assert str(caught.value) == (
            f"the {label} backend is not started; start the app (its on_startup {starts[label]}) first."
        )


@pytest.mark.parametrize("value", [1, 0.25, 10**6])
def test_a_positive_number_is_returned_as_a_float(value: float) -> None:
    assert check_positive("timeout", value) == float(value)
    assert isinstance(check_positive("timeout", value), float)


@pytest.mark.parametrize("value", [0, -1, -0.5, "1", None])
def test_anything_but_a_positive_number_is_refused_naming_the_option_and_unit(value: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_positive("ack_timeout", value)
    assert str(caught.value) == f"ack_timeout must be a positive number of seconds, got {value!r}"


def test_a_whole_number_option_refuses_a_fraction() -> None:
    with pytest.raises(ConfigurationError, match=r"inbox_size must be a positive number of envelopes, got 2\.5"):
        check_positive("inbox_size", 2.5, "envelopes", whole=True)
    assert check_positive("inbox_size", 3, "envelopes", whole=True) == 3.0


def test_a_group_send_envelope_names_no_connection_and_carries_its_group_and_origin() -> None:
    envelope = Envelope.group_send("red", b"hi", 2, exclude=(CONNECTION,), origin="publisher")
    assert envelope == Envelope(
        "group_send", "", payload=b"hi", opcode=2, group="red", exclude=(CONNECTION,), origin="publisher"
    )
