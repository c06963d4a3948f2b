"""Run ``tests.apps.conformance_app`` in a real ``python -m wsframe run`` process.

The suite talks to it over real TCP sockets only. The server's log goes to a
file so a test can check that nothing it did produced a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.rawclient import TIMEOUT, RawWebsocket, http_request
from tests.support.servers import ROOT, free_port, wsframe_run

__all__ = ["LiveServer", "APP_TARGET"]

APP_TARGET = "tests.apps.conformance_app:app"
_STARTUP_SECONDS = 30.0 * float(os.environ.get("WSFRAME_TEST_TIMEOUT_SCALE", "1"))


class LiveServer:
    """One server process on 127.0.0.1 and a free port, serving *target* (``module:attribute``)."""

    host = "127.0.0.1"

    def __init__(self, log_path: Path, target: str = APP_TARGET) -> None:
        self.log_path = log_path
        self.port = free_port()
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [*wsframe_run(target, self.port), "--log-level", "warning"],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._log_offset = 0

    def wait_ready(self) -> None:
        """Return once ``GET /registry/`` answers; raise ``RuntimeError`` with the log if it never does."""
        deadline = time.monotonic() + _STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                self.registry_size()
            except OSError:
                time.sleep(0.05)
                continue
            return
        self.stop()
        raise RuntimeError(f"conformance server did not start:\n{self.log_path.read_text(errors='replace')}")

    def alive(self) -> bool:
        """Whether the server process is still running."""
        return self.process.poll() is None

    def get(self, path: str) -> tuple[int, object]:
        """GET *path*; return the status and the decoded JSON body."""
        raw = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nConnection: close\r\n\r\n".encode()
        response = http_request(self.host, self.port, raw)
        return response.status, json.loads(response.body)

    def registry_size(self) -> int:
        """How many connections the server's registry holds."""
        status, body = self.get("/registry/")
        if status != 200 or not isinstance(body, dict):
            raise AssertionError(f"/registry/ answered {status}: {body!r}")
        size: int = body["connections"]
        return size

    def wait_registry_size(self, expected: int, timeout: float = TIMEOUT) -> int:
        """Poll the registry until it holds *expected* connections or *timeout* passes; return the last size.

        The server unregisters a connection in a ``finally`` after the TCP
        connection ended, a moment after the client saw the end.
        """
        deadline = time.monotonic() + timeout
        size = self.registry_size()
        while size != expected and time.monotonic() < deadline:
            time.sleep(0.01)
            size = self.registry_size()
        return size

    def connect(self, path: str = "/ws/echo/", *, deflate: bool = False) -> RawWebsocket:
        """Open a blocking raw websocket to *path*, offering permessage-deflate when *deflate* is true."""
        return RawWebsocket.connect_blocking(self.host, self.port, path, deflate=deflate)

    def new_log(self) -> str:
        """The server log written since the previous call."""
        self._log.flush()
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            data = log.read()
        self._log_offset += len(data)
        return data.decode(errors="replace")

    def stop(self) -> int:
        """Stop the server with SIGINT (graceful shutdown) and return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=_STARTUP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
