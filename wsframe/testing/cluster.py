"""The gunicorn test cluster: runs an app under real gunicorn with aiohttp workers, for tests across processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import ClientError, ClientResponse, ClientSession, ClientTimeout, ClientWSTimeout, WSServerHandshakeError

from ..exceptions import WsframeError
from . import timeouts
from .connection import WebsocketTestConnection
from .errors import HandshakeRejectedError, _ErrorCapture
from .served import _absolute, _Served
from .timeouts import default_timeout

__all__ = ["WebsocketTestCluster"]


class WebsocketTestCluster(_Served):
    """Runs *app* (``module:attribute``) under real gunicorn with *workers* aiohttp workers.

    For integration tests of what one process cannot show: sends between
    workers, the Redis or IPC backend, worker restarts. The app chooses its
    backend as in production (``create_app(redis=...)``; pass its URL through
    *env*). The server listens on a free loopback port; :meth:`start` returns
    once gunicorn has booted every worker and one of them answers HTTP
    (others may still be starting their app: which worker takes a
    connection is up to the kernel).

    Handler exceptions happen in other processes: the client cannot raise
    them in the test, so :meth:`close` raises
    :class:`~wsframe.exceptions.WsframeError` quoting gunicorn's log when a
    worker logged a traceback (``raise_handler_errors=False`` to allow it).
    """

    def __init__(
        self,
        app: str,
        *,
        workers: int = 2,
        env: Mapping[str, str] | None = None,
        gunicorn_args: Iterable[str] = (),
        timeout: float | None = None,
        startup_timeout: float = 30.0,
        raise_handler_errors: bool = True,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.app = app
        self.workers = workers
        self.timeout = default_timeout() if timeout is None else timeout
        """Default seconds for the handshake, receives and closes."""
        self.startup_timeout = startup_timeout * (default_timeout() / timeouts._configured_timeout)
        self.raise_handler_errors = raise_handler_errors
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        """The base URL, ``http://127.0.0.1:<port>``."""
        self._args = [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(workers),
            "--worker-class",
            "aiohttp.GunicornWebWorker",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--graceful-timeout",
            "10",
            "--no-control-socket",  # several clusters may run at once
            *gunicorn_args,
            app,
        ]
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._log_path = Path(tempfile.mkdtemp(prefix="wsframe-cluster-")) / "gunicorn.log"
        self._process: asyncio.subprocess.Process | None = None
        self._session: ClientSession | None = None
        self._connections: list[WebsocketTestConnection] = []
        self._capture = _ErrorCapture(set())  # stays empty: errors live in the workers' log

    def _open_log(self) -> BinaryIO:
        return open(self._log_path, "ab")  # the caller closes it once gunicorn holds its own copy

    def log(self) -> str:
        """Everything gunicorn and the workers printed so far."""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def start(self) -> None:
        """Start gunicorn and wait until every worker booted; does nothing when started.

        Raises :class:`~wsframe.exceptions.WsframeError` with gunicorn's log
        when it exits or is not ready within *startup_timeout* seconds.
        """
        if self._process is not None:
            return
        with self._open_log() as log:
            self._process = await asyncio.create_subprocess_exec(
                *self._args, stdout=log, stderr=asyncio.subprocess.STDOUT, env=self._env, cwd=os.getcwd()
            )
        self._session = ClientSession()
        try:
            await self._wait_ready()
        except BaseException:
            # Never leave a gunicorn behind; the log is in the error already.
            self.raise_handler_errors = False
            await self.close()
            raise

    async def _wait_ready(self) -> None:
        process = self._process
        if process is None:  # pragma: no cover - start() made it
            raise WsframeError("internal error: gunicorn not started")
        step = 0.05
        for _ in range(int(self.startup_timeout / step) + 1):
            if process.returncode is not None:
                raise WsframeError(f"gunicorn exited with {process.returncode}:\n{self.log()}")
            if self.log().count("Booting worker") >= self.workers and await self._answers():
                return
            await asyncio.sleep(step)
        raise WsframeError(f"{self.workers} workers were not ready within {self.startup_timeout:g} s:\n{self.log()}")

    async def _answers(self) -> bool:
        """True once a worker answers HTTP (any status: the app need not serve this path)."""
        if self._session is None:  # pragma: no cover - start() made it
            return False
        try:
            async with self._session.get(f"{self.url}/.wsframe-ready", timeout=ClientTimeout(total=1)) as response:
                await response.read()
        except (ClientError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        """Close open connections, stop gunicorn gracefully (SIGTERM), and check the log.

        Raises :class:`~wsframe.exceptions.WsframeError` quoting the log when
        a worker logged a traceback and ``raise_handler_errors`` is set.
        """
        for connection in self._connections:
            await connection.close()
        self._connections.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        log = self.log()
        if self.raise_handler_errors and "Traceback (most recent call last)" in log:
            start = log.index("Traceback (most recent call last)")
            raise WsframeError(f"a worker logged an error:\n{log[max(0, start - 300) : start + 3000]}")

    async def request(self, method: str, path: str, **kwargs: Any) -> ClientResponse:
        """Make an HTTP request to the cluster (starting it if needed); *kwargs* as aiohttp's ``request``.

        Read the body before the next request on the same worker matters; the
        response is released when the cluster closes.
        """
        await self.start()
        if self._session is None:  # pragma: no cover - start() made it
            raise WsframeError("internal error: no HTTP session")
        response = await self._session.request(method, self.url + _absolute(path), **kwargs)
        await response.read()
        return response

    async def _open(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None,
        subprotocols: tuple[str, ...],
        timeout: float | None,  # noqa: ASYNC109
    ) -> WebsocketTestConnection:
        await self.start()
        if self._session is None:  # pragma: no cover - start() made it
            raise WsframeError("internal error: no HTTP session")
        wait = self.timeout if timeout is None else timeout
        path = _absolute(path)
        try:
            async with asyncio.timeout(wait):
                ws = await self._session.ws_connect(
                    self.url + path,
                    headers=headers,
                    protocols=subprotocols,
                    timeout=ClientWSTimeout(ws_close=wait),
                )
        except TimeoutError:
            raise TimeoutError(f"websocket handshake for {path} took longer than {wait:g} s") from None
        except WSServerHandshakeError as exc:
            raise HandshakeRejectedError(path, exc.status) from None
        connection = WebsocketTestConnection(ws, path=path, token="", capture=self._capture, timeout=wait)
        self._connections.append(connection)
        return connection
