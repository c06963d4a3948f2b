"""Real servers for the tests: free ports, server processes, and the type of the ``serve`` fixture."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

__all__ = ["ROOT", "Serve", "free_port", "wait_for_port", "run_process", "wsframe_run"]

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root, where server processes run."""

Serve = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
"""The ``serve`` fixture: starts an app on a real localhost port and returns pytest-aiohttp's TestClient."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Block until *port* accepts connections; fail with the process's output if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read().decode() if process.stdout else ""
            raise RuntimeError(f"server exited with {process.returncode} before listening:\n{out}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout} s")


@contextlib.contextmanager
def run_process(args: Sequence[str], port: int, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run *args* (a server listening on *port*) for the duration of the block, then stop it."""
    process = subprocess.Popen(
        list(args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        wait_for_port(port, process)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout:
            process.stdout.close()


def wsframe_run(app: str, port: int) -> list[str]:
    """The command line of `python -m wsframe run APP --port PORT`."""
    return [sys.executable, "-m", "wsframe", "run", app, "--port", str(port)]
