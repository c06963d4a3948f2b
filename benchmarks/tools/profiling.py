"""Profile a benchmark server with py-spy during one case's measured phase; print where its time goes.

    python -m benchmarks.tools.profiling                           # echo, 100 connections, both servers
    python -m benchmarks.tools.profiling --case fanout --size 10000 --server wsframe [--via id]

The server is pinned as in ``benchmarks.run``; ``py-spy record --gil --nonblocking`` samples it from the
moment the load generator starts measuring until it exits. Prints the functions with the most samples,
by self and inclusive time, and keeps the collapsed stacks in ``benchmarks/results/profile-<case>-<server>.txt``
for a flame graph. py-spy is in the ``bench`` extra.
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

__all__ = ["main", "profile_server", "summarise"]


def summarise(collapsed: str, top: int = 25) -> str:
    """The *top* functions by self samples and by inclusive samples of py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        # "handle (wsframe/websocket.py:42)" -> "handle (wsframe/websocket.py)": a function's lines together
        frames = [re.sub(r":\d+\)$", ")", f).replace(f"{ROOT}/", "").replace(f"{sys.prefix}/", "")
                  for f in stack.split(";")]
        if stack:
            own[frames[-1]] += int(count)
            inclusive.update(dict.fromkeys(frames, int(count)))
    total = sum(own.values())
    if not total:
        return "no samples\n"
    out = [f"{total} samples", "", "self %  function"]
    out += [f"{100 * n / total:5.1f}  {f}" for f, n in own.most_common(top)]
    out += ["", "incl %  function", *(f"{100 * n / total:5.1f}  {f}" for f, n in inclusive.most_common(top))]
    return "\n".join(out) + "\n"


def profile_server(kind: str, *, case: str, seconds: float, size: int, rate: int, output: Path,
                   via: str = "fastest") -> dict[str, Any]:
    """Profile *kind*'s server during *case*'s measured phase into *output*; return the case's figures.

    Exits with the load generator's or py-spy's output when either fails.
    """
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    (server_core, loadgen_core), port, use_uvloop = cores(), free_port(), uvloop_available()
    configs: dict[str, dict[str, Any]] = {
        "echo": {"echo_connections": [size], "echo_seconds": seconds, "warmup_seconds": 1},
        "open_close": {"open_close_seconds": seconds, "open_close_concurrency": size},
        "fanout": {"fanout_sizes": [size], "fanout_triggers": max(5, int(seconds / 0.15)), "fanout_via": [via]},
    }
    config = {**configs[case], "cases": [case]}
    line = [sys.executable, "-m", "benchmarks.loadgen", "--config", json.dumps(config), *(["--uvloop"] * use_uvloop)]
    recorder: subprocess.Popen[str] | None = None
    with tempfile.TemporaryFile() as log:
        serve = pinned(command(kind, port, use_uvloop), server_core)
        server = subprocess.Popen(serve, cwd=ROOT, stdout=log, stderr=log)
        try:
            wait_for_port(port, server, timeout=30)
            target = pinned([*line, f"--target={kind}:{port}:{server.pid}"], loadgen_core)
            loadgen = subprocess.Popen(target, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       env={**os.environ, "WSFRAME_BENCH_VERBOSE": "1"})
            assert loadgen.stderr is not None
            assert loadgen.stdout is not None
            errors = []
            for progress in loadgen.stderr:
                errors.append(progress)
                if progress.rstrip().endswith(": measuring"):
                    # --gil: only samples where the server runs Python, not its idle waits in epoll.
                    record = [py_spy, "record", "--pid", str(server.pid), "--format", "raw", "--rate", str(rate),
                              "--gil", "--nonblocking", "--output", str(output)]
                    recorder = subprocess.Popen(record, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                    break
            errors += loadgen.stderr.readlines()
            stdout = loadgen.stdout.read()
            if loadgen.wait(timeout=seconds + 120) != 0:
                raise SystemExit(f"load generator failed:\n{''.join(errors)[-3000:]}")
        finally:
            if recorder is not None:
                recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                recorder.wait(timeout=60)
            stop(server)
    if recorder is None or recorder.returncode not in (0, -signal.SIGINT):
        log_text = recorder.stdout.read() if recorder is not None and recorder.stdout else "py-spy did not start"
        raise SystemExit(f"py-spy failed: {log_text[-2000:]}")
    results = json.loads(stdout)["results"][kind]
    figures: dict[str, Any] = results["open_close" if case == "open_close" else f"{case}_{size}"]
    return figures


def main(argv: list[str] | None = None) -> int:
    """Profile the chosen servers and print each one's summary."""
    parser = argparse.ArgumentParser(description="Profile the benchmark servers with py-spy.")
    parser.add_argument("--server", choices=["wsframe", "raw", "both"], default="both")
    parser.add_argument("--case", choices=["echo", "open_close", "fanout"], default="echo")
    parser.add_argument("--size", type=int, help="connections (default: echo 100, open_close 16, fan-out 10000)")
    parser.add_argument("--via", choices=["fastest", "id"], default="fastest", help="fan-out: group send or per id")
    parser.add_argument("--seconds", type=float, default=10.0, help="about how long to sample")
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    size = args.size or {"echo": 100, "open_close": 16, "fanout": 10000}[args.case]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    for kind in ["raw", "wsframe"] if args.server == "both" else [args.server]:
        output = args.results_dir / f"profile-{args.case}-{kind}.txt"
        settings = {"seconds": args.seconds, "size": size, "rate": args.rate, "via": args.via}
        figures = profile_server(kind, case=args.case, output=output, **settings)
        if args.case == "echo":
            headline = f"{figures['msgs_per_s']:,.0f} round trips/s"
        elif args.case == "open_close":
            headline = f"{figures['per_s']:,.0f} connections opened and closed per second"
        else:
            times = figures["ms" if args.via == "fastest" else "ms_per_id"]
            headline = f"median {statistics.median(times):.1f} ms until the last client received it"
        print(f"=== {kind}, {args.case} with {size} connections under py-spy: {headline}, server CPU "
              f"{figures['server_cpu']:.2f}; stacks in {output}")
        print(summarise(output.read_text(), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
