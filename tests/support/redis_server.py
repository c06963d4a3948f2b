"""A private ``redis-server`` on a free port, for tests that kill, pause and restart Redis."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

from tests.support.servers import free_port

__all__ = ["RedisServer", "own_redis", "SHARED_REDIS_URL", "require_shared_redis"]

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"


def require_shared_redis() -> None:
    """Fail (never skip) with how to start Redis when the shared server on 6379 is missing."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return
    except OSError:
        raise AssertionError(
            "These tests need Redis on 127.0.0.1:6379. Start it with `redis-server --daemonize yes` "
            "(or `docker run -p 6379:6379 redis`)."
        ) from None


class RedisServer:
    """One ``redis-server`` process, without persistence, that a test can kill and bring back on the same port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed; `apt-get install redis-server` to run these tests")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL the server: every connection drops at once, nothing is saved."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing answers (a hung Redis)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def own_redis() -> Iterator[RedisServer]:
    """Run a private Redis for the block; it is killed afterwards whatever state it is in."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.resume()
        server.kill()
