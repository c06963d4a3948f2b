"""What every benchmark shares: ports, core pinning, gunicorn and Redis, CPU and memory readings,
statistics, the command line and the results files. Linux only (``/proc``, ``taskset``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

__all__ = ["REDIS_MISSING", "ROOT", "CpuMeter", "Gunicorn", "children", "commit", "cores", "cpu_seconds", "free_port"]
__all__ += ["gunicorn", "parser", "percentile", "pinned", "post", "raise_file_limit", "redis_cluster", "redis_server"]
__all__ += ["rss_kib"]
__all__ += ["run_loop", "stop", "summary", "uvloop_available", "wait_for_port", "worker_class", "write"]

ROOT = Path(__file__).resolve().parent.parent  # The repository root: every server and helper process runs from here.
REDIS_MISSING = "redis-server is not installed (apt-get install redis-server); or skip with --no-cross-worker."
T = TypeVar("T")


def parser(description: str, smoke: str) -> argparse.ArgumentParser:
    """The options every benchmark command has: ``--smoke`` (helped by *smoke*) and ``--results-dir``."""
    parsed = argparse.ArgumentParser(description=description)
    parsed.add_argument("--smoke", action="store_true", help=smoke)
    parsed.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    return parsed


def write(results_dir: Path, name: str, data: object, markdown: str) -> None:
    """Write ``name.json`` and ``name.md`` into *results_dir* (created if missing) and print the Markdown."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (results_dir / f"{name}.md").write_text(markdown)
    sys.stdout.write(markdown)


async def post(http: aiohttp.ClientSession, url: str, body: object = None) -> dict[str, Any]:
    """POST *body* as JSON to *url*; its JSON answer. Raises aiohttp.ClientResponseError for a status not 2xx."""
    async with http.post(url, json=body) as response:
        response.raise_for_status()
        answer: dict[str, Any] = await response.json()
        return answer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cores() -> tuple[int | None, int | None]:
    """The server's core and the load generator's, or (None, None) when there are not two to pin to."""
    available = sorted(os.sched_getaffinity(0))
    return (available[0], available[1]) if len(available) >= 2 and shutil.which("taskset") else (None, None)


def pinned(command: list[str], core: int | None) -> list[str]:
    """*command* run through ``taskset -c core`` (children inherit the affinity); unchanged when *core* is None."""
    return command if core is None else ["taskset", "-c", str(core), *command]


def uvloop_available() -> bool:
    """Whether uvloop can be imported (the ``speed`` and ``bench`` extras install it)."""
    return importlib.util.find_spec("uvloop") is not None


def run_loop(coro: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    """Run *coro* to completion on a new event loop: uvloop's when *use_uvloop*, else asyncio's."""
    if not use_uvloop:
        return asyncio.run(coro)
    import uvloop  # type: ignore[import-not-found,unused-ignore]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


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


def children(pid: int) -> list[int]:
    """The pids whose parent is *pid* (gunicorn's workers), sorted."""
    return sorted(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def raise_file_limit(needed: int = 0) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it); return it. Exits with a message naming
    ``ulimit -n`` when the limit stays below *needed*."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(
            f"benchmarks: need {needed} file descriptors but the limit is {soft} (ulimit -n {needed + 100})"
        )
    return soft


@contextlib.contextmanager
def redis_server(core: int | None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server on a free port (no persistence), pinned to *core*; yields its URL and process.
    RuntimeError with :data:`REDIS_MISSING` when there is none, or when it does not answer within 10 s."""
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


@contextlib.contextmanager
def redis_cluster(core: int | None, masters: int = 3) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """A private Redis Cluster of *masters* nodes, no replicas, no persistence, pinned to *core*; yields its
    ``redis+cluster://`` URL and the node processes. RuntimeError when redis-server or redis-cli is missing,
    or when the cluster is not ready within 30 s."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise RuntimeError(REDIS_MISSING)
    ports: list[int] = []
    while len(ports) < masters:  # below 55535: each node's cluster bus listens on its port + 10000
        port = free_port()
        if port < 55535 and port not in ports and _port_free(port + 10000):
            ports.append(port)
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as directory:
        try:
            for port in ports:
                command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                command += ["--cluster-enabled", "yes", "--cluster-config-file", f"{directory}/nodes-{port}.conf"]
                processes.append(subprocess.Popen(pinned(command, core), cwd=directory, stdout=subprocess.DEVNULL))
            for port, process in zip(ports, processes, strict=True):
                wait_for_port(port, process, timeout=10)
            nodes = [f"127.0.0.1:{port}" for port in ports]
            subprocess.run([cli, "--cluster", "create", *nodes, "--cluster-yes"], check=True, capture_output=True)
            deadline = time.monotonic() + 30
            while not all(_cluster_ok(cli, port) for port in ports):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Redis Cluster on ports {ports} did not become ready within 30 s")
                time.sleep(0.1)
            yield "redis+cluster://" + ",".join(nodes), processes
        finally:
            for process in processes:
                process.kill()
                process.wait()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ok(cli: str, port: int) -> bool:
    info = subprocess.run([cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True, check=False)
    return "cluster_state:ok" in info.stdout


def worker_class(use_uvloop: bool) -> str:
    """The gunicorn worker class: uvloop's when it is used, as the deployment docs recommend."""
    return "aiohttp.GunicornUVLoopWebWorker" if use_uvloop else "aiohttp.GunicornWebWorker"


@dataclass
class Gunicorn:
    """A running gunicorn: its master process, port and worker pids."""

    process: subprocess.Popen[bytes]
    port: int
    workers: list[int] = field(default_factory=list)


@contextlib.contextmanager
def gunicorn(
    app: str, *, workers: int, core: int | None, use_uvloop: bool, env: dict[str, str], args: tuple[str, ...]
) -> Iterator[Gunicorn]:
    """``gunicorn -w workers app`` pinned to *core*, its output on stderr; yields once every worker runs. Stops it with
    SIGTERM (SIGKILL to the whole process group after 45 s). Raises RuntimeError when the workers do not all start,
    or the port does not answer, within 30 s."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", worker_class(use_uvloop)]
    command += ["-b", f"127.0.0.1:{port}", "--no-control-socket", "--log-level", "warning", *args, app]
    # stdout may carry a JSON result; a process group of its own, so that its workers can be killed with it.
    line, env = pinned(command, core), {**os.environ, **env}
    process = subprocess.Popen(line, cwd=ROOT, env=env, stdout=sys.stderr, start_new_session=True)
    server = Gunicorn(process, port)
    try:
        wait_for_port(port, server.process, timeout=30)
        deadline = time.monotonic() + 30
        while len(server.workers) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn started {len(server.workers)} of {workers} workers within 30 s")
            time.sleep(0.1)
            server.workers = children(server.process.pid)
        yield server
    finally:
        stop(server.process, signal.SIGTERM, timeout=45)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)  # workers of a master that was killed


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, system_only: bool = False) -> float:
    """CPU seconds process *pid* has used so far (user + system, or system only); 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[12]) + (0 if system_only else int(fields[11]))) / _CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident memory of process *pid* in KiB; raises RuntimeError when ``/proc`` has none."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


class CpuMeter:
    """CPU use over a window, as fractions of one core: this process (``loadgen_cpu``) and named groups of pids."""

    def __init__(self, **groups: list[int]) -> None:
        self.groups = groups
        self._start: list[float] = []

    def _now(self) -> list[float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        own = usage.ru_utime + usage.ru_stime
        return [time.perf_counter(), own, *(sum(map(cpu_seconds, pids)) for pids in self.groups.values())]

    def start(self) -> None:
        self._start = self._now()

    def stop(self, prefix: str = "") -> dict[str, float]:  # {prefix}loadgen_cpu and {prefix}<group> for each group
        now = self._now()
        wall = now[0] - self._start[0]
        names = ["loadgen_cpu", *self.groups]
        return {f"{prefix}{name}": (now[i + 1] - self._start[i + 1]) / wall for i, name in enumerate(names)}


def percentile(ordered: list[T], fraction: float) -> T:
    """The nearest-rank *fraction* percentile of the sorted *ordered*; raises ValueError when it is empty."""
    if not ordered:
        raise ValueError("no samples")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def summary(samples: list[float]) -> dict[str, Any]:
    """Median, min, max and the samples themselves: how every figure is reported over repetitions."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": samples}


def commit() -> str:
    """The short commit of the checkout, ``+dirty`` when wsframe/ has uncommitted changes; ``unknown`` without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "wsframe"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return (head.stdout.strip() or "unknown") + ("+dirty" if dirty.stdout.strip() else "")
