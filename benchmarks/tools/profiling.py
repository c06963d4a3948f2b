"""Profile a benchmark server's echo path with py-spy and summarise where its time goes.

::

    python -m benchmarks.tools.profiling                           # echo, 100 connections, both servers
    python -m benchmarks.tools.profiling --case fanout --size 10000 --server wsframe

Starts the server pinned like ``benchmarks.run`` does, drives one case from
the load generator on the other core, attaches ``py-spy record`` (sampling,
``--nonblocking`` so the server is not paused, ``--gil`` so idle waits are
not counted) for the measured phase only, and prints for each server
the functions with the most samples, by self time and by inclusive time. The
collapsed stacks are kept in ``benchmarks/results/profile-<case>-<server>.txt`` for
a flame graph (``flamegraph.pl``, speedscope.app, or ``py-spy`` ``--format
speedscope``). py-spy is in the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..harness import ROOT, cores, free_port, pinned, stop, uvloop_available, wait_for_port
from ..servers import command

__all__ = ["main", "summarise", "profile_server"]

_LINE = re.compile(r":\d+\)$")


def _frame_name(frame: str) -> str:
    """``handle (wsframe/websocket.py:42)`` -> ``handle (wsframe/websocket.py)``: group a function's lines."""
    frame = _LINE.sub(")", frame)
    return frame.replace(str(ROOT) + "/", "").replace(sys.prefix + "/", "")


def summarise(collapsed: str, top: int = 25) -> str:
    """Return the *top* functions by self samples and by inclusive samples of py-spy's raw output."""
    self_counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        total += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return "no samples\n"
    out = [f"{total} samples", "", "self %  function"]
    out += [f"{100 * n / total:5.1f}  {name}" for name, n in self_counts.most_common(top)]
    out += ["", "incl %  function"]
    out += [f"{100 * n / total:5.1f}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out) + "\n"


def profile_server(
    kind: str, *, case: str, seconds: float, size: int, rate: int, output: Path, via: str = "fastest"
) -> dict[str, Any]:
    """Profile *kind*'s server during *case*'s measured phase; write collapsed stacks to *output*.

    Sampling starts when the load generator reports that measuring began, so
    connection set-up is not in the profile, and stops when it exits. Returns
    the load generator's figures for the case.
    """
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    server_core, loadgen_core = cores()
    port = free_port()
    use_uvloop = uvloop_available()
    if case == "echo":
        config: dict[str, Any] = {"echo_connections": [size], "echo_seconds": seconds, "warmup_seconds": 1}
    elif case == "open_close":
        config = {"open_close_seconds": seconds, "open_close_concurrency": size}
    else:
        # One fan-out kind (*via*: "fastest" or "id"), repeated for about *seconds*.
        config = {"fanout_sizes": [size], "fanout_triggers": max(5, int(seconds / 0.15)), "fanout_via": [via]}
    config["cases"] = [case]
    loadgen_command = [sys.executable, "-m", "benchmarks.loadgen", "--config", json.dumps(config)]
    if use_uvloop:
        loadgen_command.append("--uvloop")
    with tempfile.TemporaryFile() as server_log:
        server_command = pinned(command(kind, port, use_uvloop), server_core)
        server = subprocess.Popen(server_command, cwd=ROOT, stdout=server_log, stderr=server_log)
        recorder: subprocess.Popen[str] | None = None
        try:
            wait_for_port(port, server, timeout=30)
            loadgen = subprocess.Popen(
                pinned([*loadgen_command, "--target", f"{kind}:{port}:{server.pid}"], loadgen_core),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "WSFRAME_BENCH_VERBOSE": "1"},
            )
            if loadgen.stderr is None or loadgen.stdout is None:  # pragma: no cover - PIPE was asked for
                raise RuntimeError("no pipes to the load generator")
            errors = []
            for line in loadgen.stderr:
                errors.append(line)
                if line.rstrip().endswith(": measuring"):
                    # --gil: only samples where the server runs Python, not its idle waits in epoll.
                    recorder = subprocess.Popen(
                        [
                            py_spy,
                            "record",
                            "--pid",
                            str(server.pid),
                            "--format",
                            "raw",
                            "--rate",
                            str(rate),
                            "--gil",
                            "--nonblocking",
                            "--output",
                            str(output),
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                    break
            errors += loadgen.stderr.readlines()
            stdout = loadgen.stdout.read()
            loadgen.wait(timeout=seconds + 120)
            if loadgen.returncode != 0:
                raise SystemExit(f"load generator failed:\n{''.join(errors)[-3000:]}")
        finally:
            if recorder is not None:
                recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                recorder.wait(timeout=60)
            stop(server)
    if recorder is None or recorder.returncode not in (0, -signal.SIGINT):
        log = recorder.stdout.read() if recorder is not None and recorder.stdout else "py-spy did not start"
        raise SystemExit(f"py-spy failed: {log[-2000:]}")
    results: dict[str, Any] = json.loads(stdout)["results"][kind]
    figures: dict[str, Any] = results["open_close" if case == "open_close" else f"{case}_{size}"]
    return figures


def main(argv: list[str] | None = None) -> int:
    """Profile the chosen servers and print each one's summary."""
    parser = argparse.ArgumentParser(description="Profile the benchmark servers with py-spy.")
    parser.add_argument("--server", choices=["wsframe", "raw", "both"], default="both")
    parser.add_argument("--case", choices=["echo", "open_close", "fanout"], default="echo")
    parser.add_argument(
        "--size", type=int, help="connections (default: echo 100, open_close 16 at a time, fan-out 10000)"
    )
    parser.add_argument("--via", choices=["fastest", "id"], default="fastest", help="fan-out: group send or per id")
    parser.add_argument("--seconds", type=float, default=10.0, help="about how long to sample")
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    size = args.size or {"echo": 100, "open_close": 16, "fanout": 10000}[args.case]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    kinds = ["raw", "wsframe"] if args.server == "both" else [args.server]
    for kind in kinds:
        output = args.results_dir / f"profile-{args.case}-{kind}.txt"
        figures = profile_server(
            kind, case=args.case, seconds=args.seconds, size=size, rate=args.rate, output=output, via=args.via
        )
        if args.case == "echo":
            headline = f"{figures['msgs_per_s']:,.0f} round trips/s"
        elif args.case == "open_close":
            headline = f"{figures['per_s']:,.0f} connections opened and closed per second"
        else:
            times = figures["ms" if args.via == "fastest" else "ms_per_id"]
            headline = f"median {statistics.median(times):.1f} ms until the last client received it"
        print(
            f"=== {kind}, {args.case} with {size} connections under py-spy: {headline}, "
            f"server CPU {figures['server_cpu']:.2f}; stacks in {output}"
        )
        print(summarise(output.read_text(), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
