"""The backend contract: what every backend does for the registry, run against each of them.

The fixture a test takes says which backends it is for: ``nodes`` gives every backend, as
three nodes (apps on real ports) that reach each other, or memory's single node, for which
the same assertions hold with nothing to cross; ``shared_nodes`` gives three nodes of the
backends that reach other nodes (Redis, Redis Cluster, IPC), for what needs a second node;
``outage`` gives Redis and IPC with the transport down (the cluster's outages are in
``test_backends_redis_cluster``). Redis is the real server on 127.0.0.1:6379 under a prefix
per test (missing, the tests fail saying how to start it); the cluster is six real
``redis-server`` processes started once for this module; IPC uses real Unix sockets in a
fresh directory. What only one backend does is tested in its own ``test_backends_*`` and
``test_groups_*`` module.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.nodes import (
    WsClient,
    block_delivery,
    connect,
    member,
    node_app,
    redis_prefix,
    silent,
    socket_directory,
    wait_until_down,
)
from tests.support.rawclient import BINARY, CLOSE, TEXT, TIMEOUT, Frame
from tests.support.redis_cluster import RedisCluster, own_cluster
from tests.support.redis_server import SHARED_REDIS_URL, own_redis
from tests.support.servers import Serve
from wsframe import BackendUnavailableError, close_group, group_members, send_message_to_group
from wsframe.backends import Backend, IpcBackend, MemoryBackend, RedisBackend
from wsframe.backends.base import Envelope
from wsframe.backends.ipc import IpcBackendStats
from wsframe.backends.redis import RedisBackendStats, RedisClusterBackend
from wsframe.registry import REGISTRY_KEY, Registry

BACKENDS = ["memory", "redis", "cluster", "ipc"]
SHARED = ["redis", "cluster", "ipc"]
"""The backends whose nodes reach each other."""


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A six-node Redis Cluster (three masters) shared by this module's cluster tests."""
    with own_cluster() as cluster:
        yield cluster


def cluster_url(request: pytest.FixtureRequest, kind: str) -> str:
    """The module's cluster URL when *kind* is ``cluster`` (the cluster starts on first use), else ""."""
    return request.getfixturevalue("redis_cluster").url if kind == "cluster" else ""


@contextlib.contextmanager
def backends(kind: str, url: str = "") -> Iterator[Callable[[], Backend]]:
    """Make backends of *kind* that meet: under a Redis prefix of their own, or in a fresh socket directory."""
    if kind == "redis":
        prefix = redis_prefix()
        yield lambda: RedisBackend(SHARED_REDIS_URL, prefix=prefix)
    elif kind == "cluster":
        prefix = redis_prefix()
        yield lambda: RedisClusterBackend(url, prefix=prefix)
    elif kind == "ipc":
        with socket_directory() as directory:
            yield lambda: IpcBackend(directory)
    else:
        yield MemoryBackend


@contextlib.asynccontextmanager
async def running_nodes(kind: str, serve: Serve, url: str = "") -> AsyncIterator[list[WsClient]]:
    with backends(kind, url) as new_backend:
        nodes = [await serve(node_app(new_backend())) for _ in range(1 if kind == "memory" else 3)]
        try:
            yield nodes
        finally:
            for node in nodes:  # before the directory goes
                await node.close()


@pytest.fixture(params=BACKENDS)
async def nodes(request: pytest.FixtureRequest, serve: Serve) -> AsyncIterator[list[WsClient]]:
    """Every backend: three nodes that reach each other, or memory's one."""
    async with running_nodes(request.param, serve, cluster_url(request, request.param)) as started:
        yield started


@pytest.fixture(params=SHARED)
async def shared_nodes(request: pytest.FixtureRequest, serve: Serve) -> AsyncIterator[list[WsClient]]:
    """Three nodes of a backend whose nodes reach each other."""
    async with running_nodes(request.param, serve, cluster_url(request, request.param)) as started:
        yield started


def stats(node: WsClient) -> RedisBackendStats | IpcBackendStats:
    """The counters of *node*'s backend: both count ``delivered`` and ``bad_messages`` alike."""
    backend = node.app[REGISTRY_KEY].backend
    assert isinstance(backend, RedisBackend | RedisClusterBackend | IpcBackend)
    return backend.stats


# ------------------------------------------------------------------ by id


@pytest.mark.parametrize(
    ("data", "frame"),
    [
        ("hello from the other node", Frame(TEXT, b"hello from the other node")),
        (b"\x00\xffraw", Frame(BINARY, b"\x00\xffraw")),
    ],
    ids=["text", "bytes"],
)
async def test_send_to_a_connection_on_another_node_arrives_once_as_sent(
    shared_nodes: list[WsClient], data: str | bytes, frame: Frame
) -> None:
    sender, owner, bystander = shared_nodes
    ws, connection_id = await connect(owner)
    await sender.app[REGISTRY_KEY].send(connection_id, data)
    assert await ws.read_frame(TIMEOUT) == frame
    assert await silent(ws)
    assert [stats(node).delivered for node in (sender, owner, bystander)] == [0, 1, 0]


async def test_sends_that_returned_one_after_another_arrive_in_that_order_whichever_node_sent_them(
    shared_nodes: list[WsClient],
) -> None:
    first, second, owner = shared_nodes
    ws, connection_id = await connect(owner)
    for n in range(100):
        await (first if n % 2 else second).app[REGISTRY_KEY].send(connection_id, {"n": n})
    received = [(await ws.read_frame(TIMEOUT) or Frame(TEXT, b"")).text for _ in range(100)]
    assert received == [f'{{"n":{n}}}' for n in range(100)]


async def test_a_delivery_that_raises_is_counted_and_skipped_and_the_next_one_arrives(
    shared_nodes: list[WsClient],
) -> None:
    sender, owner, _ = shared_nodes
    ws, connection_id = await connect(owner)
    registry = owner.app[REGISTRY_KEY]
    original = registry.deliver_envelope
    calls = 0

    async def fail_once(envelope: Envelope) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("delivery blew up")
        await original(envelope)

    registry.deliver_envelope = fail_once  # type: ignore[method-assign]
    await sender.app[REGISTRY_KEY].send(connection_id, "first")
    await sender.app[REGISTRY_KEY].send(connection_id, "second")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"second")
    assert stats(owner).bad_messages == 1


async def test_close_by_id_on_another_node_reaches_the_connection_with_code_and_reason(
    shared_nodes: list[WsClient],
) -> None:
    sender, owner, _ = shared_nodes
    ws, connection_id = await connect(owner)
    await sender.app[REGISTRY_KEY].close(connection_id, 4010, "moved elsewhere")
    frame = await ws.read_frame(TIMEOUT)
    assert frame is not None
    assert (frame.opcode, frame.close_code, frame.close_reason) == (CLOSE, 4010, "moved elsewhere")


async def test_sends_and_closes_to_unknown_nodes_and_connections_are_not_errors(nodes: list[WsClient]) -> None:
    sender, owner = nodes[0], nodes[-1]
    ws, connection_id = await connect(owner)
    registry = sender.app[REGISTRY_KEY]
    unknown = [
        "deadbeef" + "0" * 24,  # a node nobody runs
        owner.app[REGISTRY_KEY].node_id + "0" * 24,  # a live node, a connection it never had
        "not an id",
    ]
    for unknown_id in unknown:
        await registry.send(unknown_id, "to nobody")
        await registry.close(unknown_id, 4000, "nobody")
    await registry.send(connection_id, "to somebody")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"to somebody")


# ------------------------------------------------------------------ groups


async def test_group_send_reaches_every_member_on_every_node_exactly_once(nodes: list[WsClient]) -> None:
    members = [await member(node, "red") for node in nodes for _ in range(2)]
    outsiders = [(await member(node, "blue"))[0] for node in nodes]
    # The first node has members too: it delivers to them itself, and not again when its publish comes back.
    await send_message_to_group("red", {"n": 1}, app=nodes[0].app)
    for ws, _ in members:
        assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b'{"n":1}')
    for ws, _ in members:
        assert await silent(ws)
    for ws in outsiders:
        assert await silent(ws)


async def test_group_sends_that_returned_one_after_another_arrive_in_that_order_whichever_node_sent_them(
    shared_nodes: list[WsClient],
) -> None:
    first, second, third = shared_nodes
    ws, _ = await member(third, "red")
    for n in range(50):
        await send_message_to_group("red", str(n), app=(first if n % 2 else second).app)
    assert [(await ws.read_frame(TIMEOUT) or Frame(TEXT, b"")).text for _ in range(50)] == [str(n) for n in range(50)]


async def test_group_send_skips_the_excluded_members_on_every_node(nodes: list[WsClient]) -> None:
    excluded = [await member(node, "red") for node in nodes]
    included = [(await member(node, "red"))[0] for node in nodes]
    await send_message_to_group("red", "hi", exclude={cid for _, cid in excluded}, app=nodes[-1].app)
    for ws in included:
        assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"hi")
    for ws, _ in excluded:
        assert await silent(ws)


async def test_close_group_closes_members_on_every_node_with_code_and_reason(nodes: list[WsClient]) -> None:
    members = [(await member(node, "red"))[0] for node in nodes]
    outsider, _ = await member(nodes[0], "blue")
    await close_group("red", 4001, "room closed", app=nodes[-1].app)
    for ws in members:
        frames = await ws.frames_until_eof(TIMEOUT)
        assert [(f.close_code, f.close_reason) for f in frames] == [(4001, "room closed")]
    assert await silent(outsider)


async def test_group_members_is_the_same_from_every_node(nodes: list[WsClient]) -> None:
    ids = {(await member(node, "red"))[1] for node in nodes for _ in range(2)}
    await member(nodes[0], "blue")
    for node in nodes:
        assert await group_members("red", app=node.app) == ids


async def test_group_members_of_a_group_nobody_joined_is_empty(nodes: list[WsClient]) -> None:
    await member(nodes[-1], "red")
    for node in nodes:
        assert await group_members("nobody-here", app=node.app) == set()


async def test_member_that_left_gets_no_group_sends_and_leaves_presence_everywhere(nodes: list[WsClient]) -> None:
    stayer, stayer_id = await member(nodes[0], "red")
    leaver, _ = await member(nodes[-1], "red")
    leaver.send_text("leave")
    assert await leaver.read_frame(TIMEOUT) == Frame(TEXT, b"left")
    for node in nodes:
        assert await group_members("red", app=node.app) == {stayer_id}
    await send_message_to_group("red", "after", app=nodes[0].app)
    assert await stayer.read_frame(TIMEOUT) == Frame(TEXT, b"after")
    assert await silent(leaver)


TYPED_NAME = "room:a b ü *?[x]"
"""A room named as users type: spaces, a non-ASCII letter and every glob character."""


async def test_a_group_named_as_users_type_gets_its_sends_and_lists_its_members_everywhere(
    nodes: list[WsClient],
) -> None:
    # Joined through a path variable, as the chat sample does; "room:a" would match it as a glob.
    members = [await member(node, quote(TYPED_NAME, safe="")) for node in nodes]
    neighbours = [(await member(node, "room:a"))[0] for node in nodes]
    for node in nodes:
        assert await group_members(TYPED_NAME, app=node.app) == {cid for _, cid in members}
    await send_message_to_group(TYPED_NAME, "typed", app=nodes[-1].app)
    for ws, _ in members:
        assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"typed")
    for ws in neighbours:
        assert await silent(ws)


async def test_a_send_to_a_plain_name_does_not_reach_a_group_whose_name_would_match_it_as_a_glob(
    nodes: list[WsClient],
) -> None:
    glob, _ = await member(nodes[0], quote("room:*", safe=""))
    plain, _ = await member(nodes[-1], "room:a")
    await send_message_to_group("room:a", "plain", app=nodes[0].app)
    assert await plain.read_frame(TIMEOUT) == Frame(TEXT, b"plain")
    assert await silent(glob)


async def eventually_members(node: WsClient, group: str, expected: set[str]) -> set[str]:
    """group_members from *node* once it equals *expected*, or what it says after a while (a leave is not awaited)."""
    for _ in range(100):
        seen = await group_members(group, app=node.app)
        if seen == expected:
            break
        await asyncio.sleep(0.02)
    return seen


async def test_member_that_disconnected_leaves_presence_everywhere(nodes: list[WsClient]) -> None:
    _, stayer_id = await member(nodes[0], "red")
    gone, _ = await member(nodes[-1], "red")
    gone.abort()
    for node in nodes:
        assert await eventually_members(node, "red", {stayer_id}) == {stayer_id}


async def test_members_of_a_node_that_shut_down_leave_presence_on_the_others(shared_nodes: list[WsClient]) -> None:
    first, leaving, third = shared_nodes
    _, first_id = await member(first, "red")
    clients = [(await member(leaving, "red"))[0] for _ in range(3)]
    assert len(await group_members("red", app=third.app)) == 4
    readers = [asyncio.ensure_future(ws.frames_until_eof(TIMEOUT)) for ws in clients]  # answer the 1001 close
    await leaving.close()
    await asyncio.gather(*readers)
    assert await group_members("red", app=first.app) == {first_id}
    assert await group_members("red", app=third.app) == {first_id}


# ---------------------------------------------------------- backend down


@dataclass
class Outage:
    """A node whose backend cannot carry anything to *owner* right now."""

    sender: WsClient
    connection_id: str
    """A connection on the owner node, member of group ``red``."""
    names: str
    """What the error must name: the Redis URL, or the IPC node that does not answer."""


@pytest.fixture(params=["redis", "ipc"])
async def outage(request: pytest.FixtureRequest, serve: Serve) -> AsyncIterator[Outage]:
    if request.param == "redis":
        with own_redis() as redis:
            sender, owner = [await serve(node_app(RedisBackend(redis.url, prefix="p:"))) for _ in range(2)]
            _, connection_id = await member(owner, "red")
            redis.kill()
            await wait_until_down(sender)
            yield Outage(sender, connection_id, f"Redis at {redis.url} has been unreachable")
            for node in (sender, owner):
                await node.close()
        return
    with socket_directory() as directory:
        sender = await serve(node_app(IpcBackend(directory, ack_timeout=0.2)))
        owner = await serve(node_app(IpcBackend(directory, inbox_size=1)))
        _, connection_id = await member(owner, "red")
        release = await block_delivery(sender, owner)
        yield Outage(sender, connection_id, f"worker node {owner.app[REGISTRY_KEY].node_id} did not")
        release.set()
        for node in (sender, owner):
            await node.close()


OPERATIONS: dict[str, Callable[[Registry, str], Awaitable[Any]]] = {
    "send": lambda registry, connection_id: registry.send(connection_id, "lost"),
    "close": lambda registry, connection_id: registry.close(connection_id, 4000, "lost"),
    "group-send": lambda registry, _: registry.send_group("red", "lost"),
    "group-members": lambda registry, _: registry.group_members("red"),
}


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_operations_while_the_backend_is_down_raise_backend_unavailable_naming_what_is_down(
    outage: Outage, operation: str
) -> None:
    with pytest.raises(BackendUnavailableError) as caught:
        await OPERATIONS[operation](outage.sender.app[REGISTRY_KEY], outage.connection_id)
    assert outage.names in str(caught.value)


@pytest.mark.parametrize("kind", SHARED)
async def test_a_backend_that_is_not_started_raises_backend_unavailable_saying_so(
    kind: str, request: pytest.FixtureRequest
) -> None:
    with backends(kind, cluster_url(request, kind)) as new_backend:
        backend = new_backend()
        with pytest.raises(BackendUnavailableError, match="not started"):
            await backend.publish_to_node("deadbeef", Envelope("send", "deadbeef" + "0" * 24))
        with pytest.raises(BackendUnavailableError, match="not started"):
            await backend.publish_to_group("red", Envelope("group_send", "", group="red"))
        with pytest.raises(BackendUnavailableError, match="not started"):
            await backend.group_members("red")
