"""The local IPC backend beyond the contract (test_backends_contract): ordering, dead nodes, bad
input, socket files and directories, and backend selection. Real Unix sockets."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.nodes import Announce, WsClient, connect, node_app, socket_directory
from tests.support.rawclient import TEXT, TIMEOUT, Frame
from tests.support.servers import Serve
from wsframe import ConfigurationError, create_app
from wsframe.backends import IpcBackend, MemoryBackend, RedisBackend, backend_from_url, resolve_backend
from wsframe.backends.base import Envelope, encode_envelope
from wsframe.backends.ipc import runtime_base
from wsframe.registry import REGISTRY_KEY, Registry


@pytest.fixture
def sockets_dir() -> Iterator[Path]:
    with socket_directory() as path:
        yield path


@pytest.fixture
def not_gunicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)


@pytest.fixture
def under_gunicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVER_SOFTWARE", "gunicorn/27.0.1")


def ipc_node(directory: Path, **options: float) -> web.Application:
    return node_app(IpcBackend(directory, **options))  # type: ignore[arg-type]


def backend_of(client: WsClient) -> IpcBackend:
    backend = client.app[REGISTRY_KEY].backend
    assert isinstance(backend, IpcBackend)
    return backend


@pytest.fixture
async def two_nodes(serve: Serve, sockets_dir: Path) -> tuple[WsClient, WsClient]:
    return await serve(ipc_node(sockets_dir)), await serve(ipc_node(sockets_dir))


def raw_frame(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


# ------------------------------------------------------------------ delivery


async def test_concurrent_sends_to_many_connections_each_arrive_once(two_nodes: tuple[WsClient, WsClient]) -> None:
    sender, owner = two_nodes
    clients = [await connect(owner) for _ in range(20)]
    registry = sender.app[REGISTRY_KEY]
    await asyncio.gather(*(registry.send(cid, f"{i}:{k}") for k in range(10) for i, (_, cid) in enumerate(clients)))
    for i, (ws, _) in enumerate(clients):
        texts = sorted([(await ws.read_frame(TIMEOUT) or Frame(TEXT, b"")).text for _ in range(10)])
        assert texts == sorted(f"{i}:{k}" for k in range(10))
    assert backend_of(sender).stats.sent == 200


# ------------------------------------------------------- gone and dead nodes


async def test_send_to_a_node_without_a_socket_is_dropped_quietly(serve: Serve, sockets_dir: Path) -> None:
    client = await serve(ipc_node(sockets_dir))
    await client.app[REGISTRY_KEY].send("0badc0de" + "0" * 24, "anyone?")
    assert backend_of(client).stats.dropped == 1


async def test_stale_socket_of_a_killed_worker_is_removed_and_the_send_dropped(
    serve: Serve, sockets_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await serve(ipc_node(sockets_dir))
    stale = sockets_dir / "0badc0de.sock"
    with socket.socket(socket.AF_UNIX) as listener:  # bound, then closed without unlinking: a SIGKILLed worker
        listener.bind(str(stale))
    caplog.set_level(logging.DEBUG, logger="wsframe.backends.ipc")
    await client.app[REGISTRY_KEY].send("0badc0de" + "0" * 24, "anyone?")
    assert not stale.exists()
    assert backend_of(client).stats.dropped == 1
    assert any("is gone (connection refused)" in r.getMessage() for r in caplog.records)


async def test_send_to_a_node_that_shut_down_after_we_connected_is_dropped(serve: Serve, sockets_dir: Path) -> None:
    sender = await serve(ipc_node(sockets_dir))
    owner = await serve(ipc_node(sockets_dir))
    ws, connection_id = await connect(owner)
    await sender.app[REGISTRY_KEY].send(connection_id, "while alive")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"while alive")
    await owner.close()
    await sender.app[REGISTRY_KEY].send(connection_id, "after it left")
    await sender.app[REGISTRY_KEY].send(connection_id, "and again")
    assert backend_of(sender).stats.dropped == 2


async def test_id_whose_node_part_is_a_path_is_dropped_without_touching_the_filesystem(
    serve: Serve, sockets_dir: Path
) -> None:
    client = await serve(ipc_node(sockets_dir))
    (sockets_dir.parent / "x.sock").unlink(missing_ok=True)
    await client.app[REGISTRY_KEY].send("../x.so" + "0" * 25, "escape")
    assert backend_of(client).stats.dropped == 0
    assert backend_of(client)._peers.dead == set()


# ----------------------------------------------------------------- bad input


async def test_undecodable_frame_is_skipped_and_the_stream_keeps_working(
    two_nodes: tuple[WsClient, WsClient],
) -> None:
    _sender, owner = two_nodes
    ws, connection_id = await connect(owner)
    path = backend_of(owner).directory / f"{owner.app[REGISTRY_KEY].node_id}.sock"  # type: ignore[operator]
    reader, writer = await asyncio.open_unix_connection(str(path))
    good = encode_envelope(Envelope("send", connection_id, payload=b"after garbage"))
    writer.write(raw_frame(b"\xc1garbage") + raw_frame(good))
    assert await asyncio.wait_for(reader.readexactly(2), TIMEOUT) == b"\x00\x01"
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"after garbage")
    assert backend_of(owner).stats.bad_messages == 1
    writer.close()
    await writer.wait_closed()


async def test_frame_announcing_more_than_a_gigabyte_closes_only_that_stream(
    two_nodes: tuple[WsClient, WsClient],
) -> None:
    sender, owner = two_nodes
    ws, connection_id = await connect(owner)
    path = backend_of(owner).directory / f"{owner.app[REGISTRY_KEY].node_id}.sock"  # type: ignore[operator]
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(struct.pack("!I", (1 << 30) + 1))
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.close()
    await writer.wait_closed()
    await sender.app[REGISTRY_KEY].send(connection_id, "others unaffected")
    assert await ws.read_frame(TIMEOUT) == Frame(TEXT, b"others unaffected")


# --------------------------------------------------------- files and folders


async def test_shutdown_removes_the_node_socket(serve: Serve, sockets_dir: Path) -> None:
    client = await serve(ipc_node(sockets_dir))
    path = sockets_dir / f"{client.app[REGISTRY_KEY].node_id}.sock"
    assert path.exists()
    await client.close()
    assert not path.exists()


async def test_the_node_socket_is_private_to_this_user(serve: Serve, sockets_dir: Path) -> None:
    client = await serve(ipc_node(sockets_dir))
    path = sockets_dir / f"{client.app[REGISTRY_KEY].node_id}.sock"
    assert path.stat().st_mode & 0o777 == 0o600


async def test_directory_made_at_creation_is_shared_and_removed_when_the_last_node_stops(
    serve: Serve, not_gunicorn: None
) -> None:
    backend = IpcBackend()
    made = backend._made_dir
    assert made is not None
    assert made.parent == runtime_base()
    client = await serve(create_app({"ws/": Announce}, backend=backend))
    assert backend.directory == made
    await client.close()
    assert not made.exists()


def test_directory_made_at_creation_is_removed_at_exit_by_its_creator(not_gunicorn: None) -> None:
    backend = IpcBackend()
    assert backend._made_dir is not None
    assert backend._made_dir.is_dir()
    backend._remove_directory_at_exit()
    assert not backend._made_dir.exists()


async def test_under_gunicorn_workers_share_a_directory_named_by_the_master_pid(
    serve: Serve, under_gunicorn: None
) -> None:
    client = await serve(create_app({"ws/": Announce}))
    backend = backend_of(client)
    try:
        assert backend.directory == runtime_base() / f"gunicorn-{os.getppid()}"
    finally:
        await client.close()
        shutil.rmtree(runtime_base() / f"gunicorn-{os.getppid()}", ignore_errors=True)


def test_directories_of_dead_processes_are_swept(not_gunicorn: None) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead_pid = int(finished.stdout)
    leftover = runtime_base() / f"gunicorn-{dead_pid}"
    leftover.mkdir()
    (leftover / "0badc0de.sock").touch()
    backend = IpcBackend()
    backend._remove_directory_at_exit()
    assert not leftover.exists()


def test_a_directory_with_a_live_socket_is_not_swept_even_if_its_pid_looks_dead(not_gunicorn: None) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    foreign = runtime_base() / f"gunicorn-{int(finished.stdout)}"  # a master in another pid namespace
    foreign.mkdir()
    try:
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(foreign / "0badc0de.sock"))
            listener.listen()
            IpcBackend()._remove_directory_at_exit()
            assert (foreign / "0badc0de.sock").exists()
    finally:
        shutil.rmtree(foreign, ignore_errors=True)


def test_a_runtime_base_others_can_write_to_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, not_gunicorn: None
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "wsframe").mkdir(mode=0o777)
    os.chmod(tmp_path / "wsframe", 0o777)
    with pytest.raises(ConfigurationError, match="mode 0700"):
        IpcBackend()


async def test_an_explicit_directory_that_is_a_file_is_refused_at_startup(sockets_dir: Path) -> None:
    target = sockets_dir / "file"
    target.touch()
    backend = IpcBackend(target)
    with pytest.raises(ConfigurationError, match="not a directory"):
        await backend.on_startup(Registry(backend))


async def test_a_directory_too_long_for_a_unix_socket_path_is_refused_at_startup(sockets_dir: Path) -> None:
    backend = IpcBackend(sockets_dir / ("d" * 100))
    with pytest.raises(ConfigurationError, match="longer than the 107 bytes"):
        await backend.on_startup(Registry(backend))


# ------------------------------------------------------------------ selection


def test_default_backend_outside_gunicorn_is_memory(not_gunicorn: None) -> None:
    assert isinstance(resolve_backend(), MemoryBackend)


def test_default_backend_under_gunicorn_is_ipc(under_gunicorn: None) -> None:
    assert isinstance(resolve_backend(), IpcBackend)


def test_ipc_url_with_a_path_uses_that_directory(sockets_dir: Path) -> None:
    backend = backend_from_url(f"ipc://{sockets_dir}/app")
    assert isinstance(backend, IpcBackend)
    assert backend._explicit == sockets_dir / "app"


def test_ipc_url_with_a_host_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="ipc:///abs/path"):
        backend_from_url("ipc://otherhost/run/app")


@pytest.mark.parametrize(("url", "kind"), [("memory://", MemoryBackend), ("redis://127.0.0.1:6379/0", RedisBackend)])
def test_backend_url_selects_by_scheme(url: str, kind: type) -> None:
    assert isinstance(backend_from_url(url), kind)


def test_unknown_backend_url_scheme_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown backend URL"):
        backend_from_url("kafka://broker:9092")


def test_backend_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="got int"):
        resolve_backend(42)  # type: ignore[arg-type]


def test_memory_backend_under_gunicorn_logs_a_warning_saying_what_to_do(
    under_gunicorn: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wsframe.backends")
    create_app({"ws/": Announce}, backend="memory://")
    [record] = [r for r in caplog.records if r.name == "wsframe.backends"]
    assert "cannot reach connections in other workers" in record.getMessage()
    assert "redis=" in record.getMessage()


@pytest.mark.parametrize("option", ["ack_timeout", "connect_timeout", "inbox_size"])
def test_options_must_be_positive(option: str, sockets_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=option):
        IpcBackend(sockets_dir, **{option: 0})  # type: ignore[arg-type]


def test_listening_socket_appears_only_once_it_accepts_connections(tmp_path: Path) -> None:
    from wsframe.backends.ipc._dirs import listening_socket

    path = tmp_path / "0123abcd.sock"
    listener = listening_socket(path)
    try:
        # No temporary name is left behind, and the final name answers at once.
        assert [p.name for p in tmp_path.iterdir()] == ["0123abcd.sock"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
            peer.connect(str(path))
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    finally:
        listener.close()
