"""Process plumbing shared by the benchmark drivers: ports, core pinning, server start and stop, CPU time.

Everything here is Linux-only (``/proc``, ``taskset``), like the benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

__all__ = [
    "REDIS_MISSING",
    "cores",
    "cpu_seconds",
    "number",
    "free_port",
    "pinned",
    "redis_server",
    "stop",
    "uvloop_available",
    "wait_for_port",
]

REDIS_MISSING = (
    "redis-server is not installed: the cross-worker case starts a private one. "
    "Install it (apt-get install redis-server) or skip the case with --no-cross-worker."
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(command: list[str], core: int | None) -> list[str]:
    """*command* run through ``taskset -c core`` (children inherit the affinity); unchanged when *core* is None."""
    if core is None:
        return command
    return ["taskset", "-c", str(core), *command]


def cores() -> tuple[int | None, int | None]:
    """The server's core and the load generator's, or (None, None) when there are not two to pin to."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2 or shutil.which("taskset") is None:
        return None, None
    return available[0], available[1]


def uvloop_available() -> bool:
    """Whether uvloop can be imported (the ``speed`` and ``bench`` extras install it)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Return once 127.0.0.1:*port* accepts; raise RuntimeError if *process* exits first or *timeout* passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout} s")


def stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGINT, timeout: float = 15) -> None:
    """Send *sig*, wait up to *timeout* seconds, then kill."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process *pid* has used so far (``/proc/<pid>/stat``; 0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@contextlib.contextmanager
def redis_server(core: int | None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server on a free port (no persistence), pinned to *core*; yields its URL and process.

    Raises RuntimeError with :data:`REDIS_MISSING` when there is no ``redis-server``, or when it does not
    answer within 10 s.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(REDIS_MISSING)
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(pinned(command, core), stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port, process, timeout=10)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.kill()
        process.wait()


def number(value: float) -> str:
    """*value* for a results table: thousands separated, three significant figures below 1,000."""
    if abs(value) >= 999.5:  # 999.7 reads 1,000, not 1000
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
