"""Every case against wsframe and raw aiohttp in the same run: a table, JSON and a chart (docs/benchmarks.md).
``python -m benchmarks.run`` (5 repetitions, about 10 minutes on 2 cores); ``--smoke``: seconds, checks it runs."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from typing import Any

from . import harness, peers, report
from .cases import CASES, Config
from .cases import cross_worker as cross
from .servers import KINDS, command

__all__ = ["SMOKE", "main", "run_repetition", "server_kinds"]

SMOKE: dict[str, Any] = {"warmup_seconds": 0.1, "echo_seconds": 0.3, "open_close_seconds": 0.3, "fanout_triggers": 1}
SMOKE |= {"idle_connections": 100, "settle_seconds": 0.1, "fanout_sizes": [100, 1000], "cross_worker": cross.SMOKE}
"""``--smoke``: the overrides of the full run's sizes (the defaults of both Config classes)."""


def server_kinds(*, with_peers: bool, like_for_like: bool = False) -> list[str]:
    """raw aiohttp, wsframe, then raw aiohttp with wsframe's heartbeat (when asked) and each installed peer."""
    return [*KINDS, *(["raw-matched"] if like_for_like else []), *(peers.available() if with_peers else [])]


def _json_of(line: list[str], timeout: float, what: str) -> Any:
    """Run *line*; return the JSON it printed. RuntimeError with its stderr when it fails or times out."""
    # Files, not pipes: a gunicorn that a driver failed to stop would hold a pipe open forever.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            returncode = subprocess.run(line, cwd=harness.ROOT, stdout=out, stderr=err, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            returncode = -1
        if returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{what} failed ({returncode}):\n{err.read().decode(errors='replace')[-4000:]}")
        out.seek(0)
        return json.loads(out.read())


def run_repetition(
    config: dict[str, Any], *, first: int, use_uvloop: bool, timeout: float, kinds: list[str]
) -> dict[str, dict[str, Any]]:
    """Start every server on the server core and one load generator on the other; return kind -> results. Raises
    RuntimeError, with the servers' output, when a server does not start or the load generator fails."""
    server_core, loadgen_core = harness.cores()
    servers: dict[str, subprocess.Popen[bytes]] = {}
    ports = {kind: harness.free_port() for kind in kinds}
    with tempfile.TemporaryFile() as log:
        try:
            for kind in kinds:
                line = harness.pinned(command(kind, ports[kind], use_uvloop), server_core)
                servers[kind] = subprocess.Popen(line, cwd=harness.ROOT, stdout=log, stderr=subprocess.STDOUT)
            for kind in kinds:
                harness.wait_for_port(ports[kind], servers[kind], timeout=30)
            line = [sys.executable, "-m", "benchmarks.loadgen", "--config", json.dumps(config), "--first", str(first)]
            line += [f"--target={kind}:{ports[kind]}:{servers[kind].pid}" for kind in kinds] + ["--uvloop"] * use_uvloop
            printed = _json_of(harness.pinned(line, loadgen_core), timeout, "load generator")
            results: dict[str, dict[str, Any]] = printed["results"]
        except RuntimeError as exc:
            log.seek(0)
            raise RuntimeError(f"{exc}\nservers:\n{log.read().decode(errors='replace')[-3000:]}") from None
        finally:
            for server in servers.values():
                harness.stop(server)
    return results


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return f"{os.cpu_count()} x {line.split(':', 1)[1].strip()}"
    return f"{os.cpu_count()} CPUs ({platform.machine()})"


def _loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the Markdown table; write the JSON, Markdown and (full run) chart files."""
    parser = harness.parser("Benchmark wsframe against raw aiohttp in one run.", "tiny sizes, one repetition")
    parser.add_argument("--repetitions", type=int, help="repetitions (default 5; smoke 1)")
    parser.add_argument("--no-chart", action="store_true", help="do not redraw docs/img/benchmarks.png")
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's loop even when uvloop is installed")
    parser.add_argument("--no-cross-worker", action="store_true", help="skip the cross-worker case (gunicorn, Redis)")
    parser.add_argument("--no-peers", action="store_true", help="leave out Starlette and Panther even when installed")
    parser.add_argument("--like-for-like", action="store_true", help="add raw aiohttp given wsframe's heartbeat")
    every = [*CASES, "cross_worker"]
    parser.add_argument("--config", default="{}", help=f"JSON: Config fields, cases (of {every}), cross_worker")
    args = parser.parse_args(argv)
    base, overrides = SMOKE if args.smoke else {}, json.loads(args.config)
    config = {**base, **overrides}
    cross_config = {**base.get("cross_worker", {}), **overrides.get("cross_worker", {})}
    config.pop("cross_worker", None)
    cases = [c for c in config.pop("cases", every) if c != "cross_worker" or not args.no_cross_worker]
    if unknown := sorted(set(cases) - set(every)):
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(every)}")
    if "cross_worker" in cases and shutil.which("redis-server") is None:
        parser.error(harness.REDIS_MISSING)
    loadgen = {**dataclasses.asdict(Config(**config)), "cases": [c for c in cases if c in CASES]}
    repetitions = args.repetitions or (1 if args.smoke else 5)
    if repetitions < 1:
        parser.error("--repetitions must be at least 1")
    use_uvloop = harness.uvloop_available() and not args.no_uvloop
    kinds = server_kinds(with_peers=not args.no_peers, like_for_like=args.like_for_like)
    harness.raise_file_limit()
    server_core, loadgen_core = harness.cores()
    loadavg_before, started = _loadavg(), time.monotonic()
    sessions: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    cross_runs: list[dict[str, Any]] = []
    timeout = 120 if args.smoke else 900
    for repetition in range(repetitions):
        print(f"repetition {repetition + 1}/{repetitions} ...", file=sys.stderr, flush=True)
        if loadgen["cases"]:
            results = run_repetition(loadgen, first=repetition, use_uvloop=use_uvloop, timeout=timeout, kinds=kinds)
            for kind in kinds:
                sessions[kind].append(results[kind])
        if "cross_worker" in cases:
            print("  cross-worker ...", file=sys.stderr, flush=True)
            line = [sys.executable, "-m", "benchmarks.cases.cross_worker", "--first", str(repetition)]
            line += ["--config", json.dumps(cross_config)] + ["--no-uvloop"] * (not use_uvloop)
            cross_runs.append(_json_of(line, timeout, "cross-worker driver"))
    meta = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "repetitions": repetitions}
    meta |= {"mode": "smoke" if args.smoke else "full", "seconds": round(time.monotonic() - started, 1)}
    meta |= {"commit": harness.commit(), "cpu": _cpu_model(), "python": platform.python_version()}
    meta |= {"aiohttp": version("aiohttp"), "wsframe": version("wsframe")}
    meta |= {"uvloop": version("uvloop") if use_uvloop else None, "server_core": server_core}
    meta |= {"loadgen_core": loadgen_core, "loadavg_before": loadavg_before, "loadavg_after": _loadavg()}
    meta |= {"config": {**loadgen, "cross_worker": cross_config}, "servers": kinds, "peers_skipped": args.no_peers}
    meta |= {"peers": {kind: peers.describe(kind) for kind in kinds if kind in peers.PEERS}}
    meta |= {"peers_missing": [kind for kind in peers.PEERS if kind not in kinds]}
    cases_run = report.loadgen_cases(loadgen["echo_connections"], loadgen["idle_connections"], loadgen["fanout_sizes"])
    measured = [case for case in cases_run if sessions["raw"] and all(case.id in s for s in sessions["raw"])]
    result: dict[str, Any] = {"meta": meta, "cases": report.aggregate(measured, sessions) if measured else []}
    runs, cross_meta = [run["results"] for run in cross_runs], cross_runs[-1]["meta"] if cross_runs else {}
    result["cross_worker"] = report.cross_worker_summary(runs, cross_meta) if cross_runs else None
    harness.write(args.results_dir, "latest", result, report.render_markdown(result))
    if not (args.smoke or args.no_chart):
        report.render_chart(result, harness.ROOT / "docs" / "img" / "benchmarks.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
