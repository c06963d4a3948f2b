"""A real gunicorn for the functional tests, and clients of ``tests.apps.groups_app`` under it.

``with Gunicorn(app, log_dir, ...) as server`` runs ``gunicorn -k aiohttp.GunicornWebWorker``
with N workers on a free port until the block ends, then stops it with SIGTERM (SIGKILL after
20 s). Right after it listens only the first worker may be up, and it takes every connection:
:meth:`Gunicorn.wait_for_workers` returns once every worker has answered.

The clients: :class:`Member` (a websocket that joined a group), :func:`join_across_workers`
(members spread over the workers), and :func:`post` / :func:`members_seen` on a new TCP
connection each, so that the kernel spreads those requests over the workers too.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import aiohttp

from tests.support.servers import ROOT, free_port, wait_for_port

__all__ = [
    "SCALE",
    "RECEIVE",
    "WORKERS",
    "GROUPS_APP",
    "Gunicorn",
    "Member",
    "join",
    "join_across_workers",
    "post",
    "members_seen",
    "members_seen_by_every_worker",
]

SCALE = float(os.environ.get("WSFRAME_TEST_TIMEOUT_SCALE", "1"))
RECEIVE = 5.0 * SCALE
"""How long a client waits for a frame that must come (a busy 2-core machine runs 3 workers)."""
WORKERS = 3
GROUPS_APP = "tests.apps.groups_app:app"


class Gunicorn:
    """One gunicorn master with its workers, logging to a file in *log_dir* that the test can read.

    *env* is laid over this process's environment; a ``None`` value removes that variable.
    *extra_args* go on gunicorn's command line before the app (``["--access-logfile", "-"]``).
    """

    def __init__(
        self,
        app: str,
        log_dir: Path,
        *,
        workers: int = WORKERS,
        preload: bool = False,
        env: Mapping[str, str | None] | None = None,
        graceful_timeout: int = 10,
        keep_alive: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = log_dir / f"gunicorn-{self.port}.log"
        self.args = [
            sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", "aiohttp.GunicornWebWorker",
            "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", str(graceful_timeout),
            # Tests run several gunicorns at once; they must not share the default control socket.
            "--no-control-socket",
            *(["--keep-alive", str(keep_alive)] if keep_alive is not None else []),
            *(["--preload"] if preload else []),
            *extra_args,
            app,
        ]  # fmt: skip
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for key, value in (env or {}).items():
            if value is None:
                self.env.pop(key, None)
            else:
                self.env[key] = value
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the master; it may not listen yet."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def __enter__(self) -> Gunicorn:
        """Start, and return once the port accepts connections; raises RuntimeError with the log if gunicorn exits."""
        self.start()
        assert self.process is not None
        try:
            wait_for_port(self.port, self.process)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{self.log()}") from None
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The master's pid."""
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> set[int]:
        """The pids of the master's children right now."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except FileNotFoundError:
            return set()
        return {int(pid) for pid in text.split()}

    def wait_for_workers(self, path: str) -> set[int]:
        """GET *path* (which answers ``{"pid"}``) on a new TCP connection each time until every worker answered.

        Returns their pids; fails after 30 s (scaled) naming the log.
        """
        seen: set[int] = set()
        deadline = time.monotonic() + 30 * SCALE
        while len(seen) < self.workers and time.monotonic() < deadline:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=RECEIVE)
            try:
                connection.request("GET", path)
                seen.add(json.loads(connection.getresponse().read())["pid"])
            except OSError:
                pass  # a worker being replaced
            finally:
                connection.close()
            time.sleep(0.02)
        assert len(seen) == self.workers, f"only workers {seen} answered within 30 s; see {self.log_path}"
        return seen

    def log(self) -> str:
        """What gunicorn and its workers wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM the master (graceful) and return its exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


# ------------------------------------------------------- groups_app clients


class Member:
    """A websocket client that joined a group: its connection id and the pid of the worker that owns it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, connection_id: str, pid: int) -> None:
        self.ws, self.id, self.pid = ws, connection_id, pid

    async def next_text(self) -> str:
        msg = await self.ws.receive(timeout=RECEIVE)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        return str(msg.data)

    async def nothing_pending(self) -> bool:
        try:
            msg = await self.ws.receive(timeout=0.2)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected message {msg}")


_open_websockets: list[aiohttp.ClientWebSocketResponse] = []


async def close_websockets() -> None:
    """Close every websocket ``join`` opened; call it before the session that opened them closes.

    A websocket still open when its ``ClientSession`` closes is finalised by the garbage
    collector, and on Python 3.12 and 3.13 its connection is then often reported as unclosed
    (a ResourceWarning, an error under the suite's filterwarnings) in whichever test runs then.
    """
    while _open_websockets:
        await _open_websockets.pop().close()


async def join(session: aiohttp.ClientSession, server: Gunicorn, group: str) -> Member:
    ws = await session.ws_connect(f"{server.base}/ws/{group}/")
    _open_websockets.append(ws)
    hello = json.loads((await ws.receive(timeout=RECEIVE)).data)
    return Member(ws, hello["id"], hello["pid"])


async def join_across_workers(
    session: aiohttp.ClientSession, server: Gunicorn, group: str, count: int, *, workers: int | None = None
) -> list[Member]:
    """Join *count* members at once (a burst spreads over the workers), more until *workers* (all) have some."""
    wanted = server.workers if workers is None else workers
    members = list(await asyncio.gather(*(join(session, server, group) for _ in range(count))))
    for _ in range(40):  # the kernel may keep handing bursts to the same idle workers for a while
        if len({m.pid for m in members}) >= wanted:
            return members
        await asyncio.sleep(0.02)
        members += await asyncio.gather(*(join(session, server, group) for _ in range(count)))
    raise AssertionError(f"gunicorn put every connection on workers { ({m.pid for m in members}) }")


async def post(server: Gunicorn, path: str, body: str = "", session: aiohttp.ClientSession | None = None) -> int:
    """POST, asserting 200, and return the pid that answered.

    On a new TCP connection, so that requests land on different workers; or on *session*,
    whose keep-alive connection sends every request to the same worker.
    """
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
        (session or fresh).post(f"{server.base}{path}", data=body) as response,
    ):
        assert response.status == 200, await response.text()
        return int((await response.json())["pid"])


async def members_seen(server: Gunicorn, group: str) -> tuple[set[str], int]:
    """``group_members`` as a worker sees it (asked on a new TCP connection), and that worker's pid."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
        fresh.get(f"{server.base}/members/{group}/") as response,
    ):
        body = await response.json()
    return set(body["members"]), int(body["pid"])


async def members_seen_by_every_worker(server: Gunicorn, group: str, pids: set[int]) -> list[tuple[set[str], int]]:
    """Every answer of :func:`members_seen`, asked six at a time, until each worker in *pids* gave one.

    Concurrent requests spread over the workers; one at a time, the kernel may hand every new
    connection to the same idle worker for a long while. Fails after 30 s (scaled).
    """
    answers: list[tuple[set[str], int]] = []
    deadline = time.monotonic() + 30 * SCALE
    while not pids <= {pid for _, pid in answers}:
        assert time.monotonic() < deadline, f"only workers { ({pid for _, pid in answers}) } of {pids} answered"
        answers += await asyncio.gather(*(members_seen(server, group) for _ in range(6)))
    return answers
