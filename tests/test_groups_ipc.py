"""Groups on IPC beyond the contract (test_backends_contract): ordering, one envelope per node, nodes
that start late, stop or are SIGKILLed (a real process), and the wire protocol. Real Unix sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

from tests.support.nodes import WsClient, block_delivery, member, node_app, socket_directory
from tests.support.rawclient import TEXT, TIMEOUT, Frame, RawWebsocket
from tests.support.servers import ROOT, Serve, free_port, wait_for_port
from wsframe import BackendUnavailableError, group_members, send_message_to_group
from wsframe.backends import IpcBackend
from wsframe.registry import REGISTRY_KEY


@pytest.fixture
def sockets_dir() -> Iterator[Path]:
    with socket_directory() as path:
        yield path


def node(directory: Path, **options: float) -> web.Application:
    return node_app(IpcBackend(directory, **options))  # type: ignore[arg-type]


def backend_of(client: WsClient) -> IpcBackend:
    backend = client.app[REGISTRY_KEY].backend
    assert isinstance(backend, IpcBackend)
    return backend


async def three(serve: Serve, directory: Path) -> list[WsClient]:
    return [await serve(node(directory)) for _ in range(3)]


def control_frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body) | 1 << 31) + body


# ------------------------------------------------------------------ sending


async def test_group_send_is_one_envelope_per_other_node(serve: Serve, sockets_dir: Path) -> None:
    a, b, _ = await three(serve, sockets_dir)
    for _ in range(4):
        await member(b, "red")
    before = backend_of(a).stats.sent
    await send_message_to_group("red", "x", app=a.app)
    assert backend_of(a).stats.sent - before == 2


async def test_a_node_started_later_is_reached_by_group_sends_from_earlier_nodes(
    serve: Serve, sockets_dir: Path
) -> None:
    early = await serve(node(sockets_dir))
    late = await serve(node(sockets_dir))
    ws, _ = await member(late, "red")
    # The early node never listed the directory after startup: it knows the late one from its hello.
    assert backend_of(early)._peers.nodes == {late.app[REGISTRY_KEY].node_id}
    await send_message_to_group("red", "welcome", app=early.app)
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"welcome")


async def test_a_node_that_shut_down_is_forgotten_at_the_next_group_send(serve: Serve, sockets_dir: Path) -> None:
    a, b = await serve(node(sockets_dir)), await serve(node(sockets_dir))
    ws, _ = await member(a, "red")
    b_id = b.app[REGISTRY_KEY].node_id
    await b.close()
    await send_message_to_group("red", "still here", app=a.app)
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"still here")
    assert b_id not in backend_of(a)._peers.nodes
    assert backend_of(a).stats.dropped == 1


async def test_stale_socket_found_at_startup_is_removed_and_not_a_node(serve: Serve, sockets_dir: Path) -> None:
    stale = sockets_dir / "0badc0de.sock"
    with socket.socket(socket.AF_UNIX) as listener:  # bound, then closed without unlinking: a SIGKILLed worker
        listener.bind(str(stale))
    client = await serve(node(sockets_dir))
    assert not stale.exists()
    assert backend_of(client)._peers.nodes == set()


async def test_group_send_to_a_node_that_does_not_take_it_raises_after_the_others_have_it(
    serve: Serve, sockets_dir: Path
) -> None:
    sender = await serve(node(sockets_dir, ack_timeout=0.2))
    healthy = await serve(node(sockets_dir))
    stuck_node = await serve(node(sockets_dir, inbox_size=1))
    ws, _ = await member(healthy, "red")
    release = await block_delivery(sender, stuck_node)
    with pytest.raises(BackendUnavailableError, match="did not take the group_send for group 'red'"):
        await send_message_to_group("red", "to all", app=sender.app)
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"to all")
    release.set()


# ----------------------------------------------------------------- presence


@pytest.fixture
def process_node(sockets_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``tests.apps.groups_app`` in a process of its own, meeting the test's nodes in *sockets_dir*."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "wsframe", "run", "tests.apps.groups_app:app", "--port", str(port)],
        cwd=ROOT, env={**_without_redis(os.environ), "GROUPS_IPC_DIR": str(sockets_dir)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, process)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


async def test_members_of_a_sigkilled_node_leave_presence_at_the_next_query(
    serve: Serve, sockets_dir: Path, process_node: tuple[subprocess.Popen[bytes], int]
) -> None:
    process, port = process_node
    local = await serve(node(sockets_dir))
    _, local_id = await member(local, "red")
    ws = await RawWebsocket.connect("127.0.0.1", port, "/ws/red/", timeout=TIMEOUT)
    hello = await ws.read_frame(TIMEOUT)
    assert hello is not None
    remote_id = json.loads(hello.text)["id"]
    assert await group_members("red", app=local.app) == {local_id, remote_id}
    process.send_signal(signal.SIGKILL)
    await asyncio.to_thread(process.wait, 10)
    assert await group_members("red", app=local.app) == {local_id}


# ------------------------------------------------------------ wire protocol


async def _open_to(client: WsClient) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    path = backend_of(client).directory / f"{client.app[REGISTRY_KEY].node_id}.sock"  # type: ignore[operator]
    return await asyncio.open_unix_connection(str(path))


async def test_control_frame_that_does_not_decode_is_refused_and_the_stream_keeps_working(
    serve: Serve, sockets_dir: Path
) -> None:
    owner = await serve(node(sockets_dir))
    _, member_id = await member(owner, "red")
    reader, writer = await _open_to(owner)
    writer.write(control_frame(b"\xc1garbage") + control_frame(msgspec.msgpack.encode(["members", "", "red"])))
    assert await asyncio.wait_for(reader.readexactly(1), TIMEOUT) == b"\x00"
    assert await asyncio.wait_for(reader.readexactly(1), TIMEOUT) == b"\x02"
    (size,) = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), TIMEOUT))
    assert msgspec.msgpack.decode(await asyncio.wait_for(reader.readexactly(size), TIMEOUT)) == [member_id]
    assert backend_of(owner).stats.bad_messages == 1
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("claimed", ["own", "../../x", "DEADBEEF", ""])
async def test_hello_that_does_not_name_another_node_is_refused(serve: Serve, sockets_dir: Path, claimed: str) -> None:
    owner = await serve(node(sockets_dir))
    if claimed == "own":
        claimed = owner.app[REGISTRY_KEY].node_id
    reader, writer = await _open_to(owner)
    writer.write(control_frame(msgspec.msgpack.encode(["hello", claimed, ""])))
    assert await asyncio.wait_for(reader.readexactly(1), TIMEOUT) == b"\x00"
    assert backend_of(owner)._peers.nodes == set()
    writer.close()
    await writer.wait_closed()


ROGUE = "0badc0de"


async def presence_from_a_hand_written_peer(serve: Serve, sockets_dir: Path, *pieces: bytes) -> tuple[set[str], int]:
    """Ask a real node for group 'red' while a hand-written peer answers every presence query with *pieces*.

    The pieces are written one at a time with a pause between, so the asker reads them in separate chunks.
    Returns what group_members said and the asker's bad_messages count.
    """

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (size,) = struct.unpack("!I", await reader.readexactly(4))
                body = msgspec.msgpack.decode(await reader.readexactly(size & ~(1 << 31)))
                if body[0] != "members":
                    writer.write(b"\x01")
                    continue
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(peer, path=str(sockets_dir / f"{ROGUE}.sock"))
    try:
        asker = await serve(node(sockets_dir))
        members = await group_members("red", app=asker.app)
        bad = backend_of(asker).stats.bad_messages
        await asker.close()
        return members, bad
    finally:
        server.close()
        await server.wait_closed()


def reply(body: bytes) -> bytes:
    return b"\x02" + struct.pack("!I", len(body)) + body


async def test_a_node_answering_with_ids_of_other_nodes_is_not_believed(serve: Serve, sockets_dir: Path) -> None:
    answer = reply(msgspec.msgpack.encode([ROGUE + "1" * 24, "feedface" + "2" * 24, ROGUE]))
    assert await presence_from_a_hand_written_peer(serve, sockets_dir, answer) == ({ROGUE + "1" * 24}, 0)


async def test_an_answer_that_arrives_in_pieces_is_put_together(serve: Serve, sockets_dir: Path) -> None:
    ids = [ROGUE + f"{n:024x}" for n in range(3000)]  # about 100 KiB: more than one read
    answer = reply(msgspec.msgpack.encode(ids))
    pieces = (answer[:1], answer[1:3], answer[3:70_000], answer[70_000:])
    assert await presence_from_a_hand_written_peer(serve, sockets_dir, *pieces) == (set(ids), 0)


async def test_an_answer_that_does_not_decode_counts_as_no_members(serve: Serve, sockets_dir: Path) -> None:
    assert await presence_from_a_hand_written_peer(serve, sockets_dir, reply(b"\xc1")) == (set(), 1)


async def test_a_peer_that_refuses_the_query_counts_as_no_members(serve: Serve, sockets_dir: Path) -> None:
    assert await presence_from_a_hand_written_peer(serve, sockets_dir, b"\x00") == (set(), 0)


def _without_redis(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment minus GROUPS_REDIS, which would put tests.apps.groups_app on Redis."""
    return {key: value for key, value in environ.items() if key != "GROUPS_REDIS"}
