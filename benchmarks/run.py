"""Run every benchmark case against wsframe and raw aiohttp in the same run; write a table, JSON and a chart.

::

    python -m benchmarks.run            # full run (about 10 minutes on 2 cores; more with peers)
    python -m benchmarks.run --smoke    # seconds: tiny N, one repetition; checks that it runs
    python -m benchmarks.run --config '{"cases": ["cross_worker"]}' --repetitions 2   # one case
    python benchmarks/run.py --help

Each repetition starts a fresh server process per framework (all pinned to
one core with ``taskset``) and a fresh load generator (pinned to another),
which runs every case of :mod:`benchmarks.loadgen` against the servers in
turn, case by case, alternating which goes first; so a drift in machine load
hits all alike and each comparison is seconds apart. The servers are raw
aiohttp, wsframe and, when their packages are installed, the peers of
:mod:`benchmarks.peers` (Starlette, Panther; ``--no-peers`` leaves them out).
Then the repetition runs the cross-worker case (:mod:`benchmarks.cross_worker`:
gunicorn workers, Redis, local IPC) with a fresh driver process
(``--no-cross-worker`` skips it).
Every figure is the median over repetitions, with min-max, and the ratio
to raw aiohttp of the medians.

Writes ``benchmarks/results/latest.md`` and ``latest.json`` (``--results-dir``)
and, for a full run, the chart ``docs/img/benchmarks.png`` (``--chart``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from . import cross_worker, peers
from .processes import REDIS_MISSING, cores, free_port, pinned, stop, uvloop_available, wait_for_port
from .processes import number as _number

__all__ = [
    "CASES",
    "LOADGEN_CASES",
    "Metric",
    "Case",
    "main",
    "aggregate",
    "render_markdown",
    "render_chart",
    "SMOKE_CONFIG",
    "server_kinds",
    "server_label",
]

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("raw", "wsframe")
"""The two servers every run measures; peers come after them when installed."""
LABELS = {"raw": "raw aiohttp", "wsframe": "wsframe"}
LOADGEN_CASES = ["idle_memory", "echo", "open_close", "fanout"]
"""Kinds of case the load generator runs; ``cross_worker`` is the other kind in ``config["cases"]``."""

# benchmarks.profiling imports these under their old names.
_free_port, _pinned, _cores, _uvloop_available, _wait_for_port, _stop = (
    free_port,
    pinned,
    cores,
    uvloop_available,
    wait_for_port,
    stop,
)

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Metric:
    """One figure of a case: its key in the load generator's results, how it reads, and the issue's target."""

    key: str
    label: str
    better: Better
    target: float | None = None
    """The wsframe/raw ratio issue 7 asks for (at least, when higher is better; at most, when lower is)."""


@dataclass(frozen=True)
class Case:
    """A benchmark case and the metrics it reports."""

    id: str
    title: str
    metrics: tuple[Metric, ...]


def _cases(echo_connections: list[int], idle: int, fanout_sizes: list[int]) -> list[Case]:
    cases = [
        Case(
            "idle_memory",
            f"memory per idle connection ({idle:,} open)",
            (Metric("kib_per_connection", "KiB of server RSS", "lower", 1.15),),
        )
    ]
    for n in echo_connections:
        noun = "connection" if n == 1 else "connections"
        cases.append(
            Case(
                f"echo_{n}",
                f"echo, {n} {noun}, 64-byte text",
                (
                    Metric("msgs_per_s", "round trips/s", "higher", 0.95 if n >= 100 else None),
                    Metric("msgs_per_cpu_s", "round trips per server CPU-second", "higher"),
                    Metric("p50_ms", "p50 latency, ms", "lower"),
                    Metric("p99_ms", "p99 latency, ms", "lower", 1.1 if n >= 100 else None),
                ),
            )
        )
    cases.append(
        Case(
            "open_close",
            "connection open + close",
            (
                Metric("per_s", "connections/s", "higher", 0.9),
                Metric("per_cpu_s", "connections per server CPU-second", "higher"),
            ),
        )
    )
    for n in fanout_sizes:
        cases.append(
            Case(
                f"fanout_{n}",
                f"fan-out of one 64-byte message to {n:,} connections",
                (
                    Metric("ms", "ms until the last one received it", "lower", 0.8),
                    Metric("server_ms", "ms in the server's send call(s)", "lower"),
                    Metric("ms_per_id", "ms until the last one, one send per id", "lower"),
                ),
            )
        )
    return cases


FULL_CONFIG: dict[str, Any] = {
    "warmup_seconds": 0.5,
    "echo_seconds": 3.0,
    "echo_connections": [1, 100],
    "open_close_seconds": 3.0,
    "idle_connections": 5000,
    "settle_seconds": 1.0,
    "fanout_sizes": [1000, 10000],
    "fanout_triggers": 5,
    "cases": [*LOADGEN_CASES, "cross_worker"],
    "cross_worker": {},
}
SMOKE_CONFIG: dict[str, Any] = {
    "warmup_seconds": 0.1,
    "echo_seconds": 0.3,
    "echo_connections": [1, 100],
    "open_close_seconds": 0.3,
    "idle_connections": 100,
    "settle_seconds": 0.1,
    "fanout_sizes": [100, 1000],
    "fanout_triggers": 1,
    "cases": [*LOADGEN_CASES, "cross_worker"],
    "cross_worker": dict(cross_worker.SMOKE),
}
CASES = _cases(FULL_CONFIG["echo_connections"], FULL_CONFIG["idle_connections"], FULL_CONFIG["fanout_sizes"])
"""The cases of a full run."""


# ------------------------------------------------------------------ processes


def server_kinds(*, with_peers: bool) -> list[str]:
    """raw aiohttp, wsframe, then each installed peer (when *with_peers*)."""
    return [*KINDS, *(peers.available() if with_peers else [])]


def server_label(kind: str) -> str:
    """How a server is named in tables and charts."""
    return LABELS.get(kind) or peers.label(kind)


def _server_command(kind: str, port: int, use_uvloop: bool) -> list[str]:
    if kind == "wsframe":
        command = [sys.executable, "-m", "wsframe", "run", "benchmarks.servers:wsframe_app"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        return [*command, "--loop", "uvloop" if use_uvloop else "asyncio"]
    if kind == "raw":
        command = [sys.executable, "-m", "benchmarks.servers", "--host", "127.0.0.1", "--port", str(port)]
        return [*command, "--uvloop"] if use_uvloop else command
    return peers.command(kind, port, use_uvloop)


def run_repetition(
    config: dict[str, Any], *, first: int, use_uvloop: bool, timeout: float, kinds: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Start every server on the server core and one load generator on the other; return kind -> results.

    The servers take turns case by case (``first`` says which starts), so each
    comparison is seconds apart; the ones not being measured sit idle.
    """
    kinds = list(kinds or KINDS)
    server_core, loadgen_core = cores()
    servers: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    with tempfile.TemporaryFile() as server_log:
        try:
            for kind in kinds:
                ports[kind] = free_port()
                servers[kind] = subprocess.Popen(
                    pinned(_server_command(kind, ports[kind], use_uvloop), server_core),
                    cwd=ROOT,
                    stdout=server_log,
                    stderr=subprocess.STDOUT,
                )
            for kind in kinds:
                try:
                    wait_for_port(ports[kind], servers[kind], timeout=30)
                except RuntimeError as exc:
                    server_log.seek(0)
                    raise RuntimeError(
                        f"{kind}: {exc}:\n{server_log.read().decode(errors='replace')[-3000:]}"
                    ) from None
            loadgen_command = [sys.executable, "-m", "benchmarks.loadgen", "--config", json.dumps(config)]
            for kind in kinds:
                loadgen_command += ["--target", f"{kind}:{ports[kind]}:{servers[kind].pid}"]
            loadgen_command += ["--first", str(first)]
            if use_uvloop:
                loadgen_command.append("--uvloop")
            done = subprocess.run(
                pinned(loadgen_command, loadgen_core),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        finally:
            for server in servers.values():
                stop(server)
            server_log.seek(0)
            server_output = server_log.read().decode(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(
            f"load generator failed ({done.returncode}):\n{done.stderr[-3000:]}\n"
            f"server output:\n{server_output[-3000:]}"
        )
    results: dict[str, dict[str, Any]] = json.loads(done.stdout)["results"]
    return results


def run_cross_worker(
    sizes: dict[str, Any], *, first: int, use_uvloop: bool, timeout: float
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """One repetition of the cross-worker case in a fresh driver process; return mode -> figures, and its settings.

    The driver pins itself to the load generator's core and gunicorn and Redis
    to the server core. Raises RuntimeError with the driver's output when it fails.
    """
    server_core, loadgen_core = cores()
    command = [sys.executable, "-m", "benchmarks.cross_worker", "--json", "--first", str(first)]
    command += ["--config", json.dumps(sizes)]
    if server_core is None or loadgen_core is None:
        command.append("--no-pin")
    else:
        command += ["--server-core", str(server_core), "--driver-core", str(loadgen_core)]
    if not use_uvloop:
        command.append("--no-uvloop")
    # Files, not pipes: a gunicorn the driver failed to stop would hold a pipe
    # open, and reading it to the end would then never return.
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        try:
            returncode = subprocess.run(
                command, cwd=ROOT, stdout=stdout, stderr=stderr, timeout=timeout, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            returncode = -1
        stdout.seek(0)
        stderr.seek(0)
        output, errors = stdout.read().decode(), stderr.read().decode(errors="replace")
    if returncode != 0:
        raise RuntimeError(f"cross-worker driver failed ({returncode}):\n{errors[-4000:]}")
    out = json.loads(output)
    return out["results"], out["meta"]


# ---------------------------------------------------------------- aggregation


def _summary(samples: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": samples}


def _as_list(value: Any) -> list[float]:
    return [float(v) for v in value] if isinstance(value, list) else [float(value)]


def aggregate(cases: list[Case], sessions: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Turn each server's per-session results into medians, ranges and ratios to raw aiohttp.

    *sessions* maps each server (``raw``, ``wsframe``, then any peers) to its
    results per repetition. ``ratio`` is wsframe/raw; ``ratios`` has every
    server's ratio to raw.
    """
    kinds = list(sessions)
    out = []
    for case in cases:
        entry: dict[str, Any] = {"id": case.id, "title": case.title, "metrics": [], "cpu": {}}
        for metric in case.metrics:
            row: dict[str, Any] = {
                "key": metric.key,
                "label": metric.label,
                "better": metric.better,
                "target": metric.target,
            }
            for kind in kinds:
                values = [v for s in sessions[kind] for v in _as_list(s[case.id][metric.key])]
                row[kind] = _summary(values)
            raw_median = row["raw"]["median"]
            row["ratio"] = row["wsframe"]["median"] / raw_median if raw_median else None
            row["ratios"] = {k: row[k]["median"] / raw_median for k in kinds if k != "raw" and raw_median}
            # Each wsframe sample was taken seconds after (or before) its raw aiohttp twin, so the
            # ratios of twins show how much of the spread is the machine rather than the framework.
            pairs = zip(row["wsframe"]["samples"], row["raw"]["samples"], strict=True)
            paired = [w / r for w, r in pairs if r]
            row["paired_ratio"] = _summary(paired) if paired else None
            row["target_met"] = _target_met(metric, row["ratio"])
            entry["metrics"].append(row)
        for kind in kinds:
            entry["cpu"][kind] = {
                side: _summary([v for s in sessions[kind] for v in _as_list(s[case.id][side])])
                for side in ("loadgen_cpu", "server_cpu")
                if side in sessions[kind][0][case.id]
            }
        out.append(entry)
    return out


def _target_met(metric: Metric, ratio: float | None) -> bool | None:
    if metric.target is None or ratio is None:
        return None
    return ratio >= metric.target if metric.better == "higher" else ratio <= metric.target


# ------------------------------------------------------------------ rendering


def _cell(summary: dict[str, Any]) -> str:
    return f"{_number(summary['median'])} ({_number(summary['min'])}-{_number(summary['max'])})"


def _target_cell(row: dict[str, Any]) -> str:
    if row["target"] is None:
        return ""
    sign = "≥" if row["better"] == "higher" else "≤"
    verdict = "met" if row["target_met"] else "missed"
    return f"{sign} {row['target']:.2f}x: {verdict}"


def _ratio_cell(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}x"


def _peers_lines(report: dict[str, Any]) -> list[str]:
    """The peers' table (when any ran) and a line naming those that did not."""
    meta = report["meta"]
    ran = [kind for kind in meta.get("servers", KINDS) if kind not in KINDS]
    lines: list[str] = []
    if ran and report["cases"]:
        lines += [
            "",
            "Peers, measured in the same run: "
            + "; ".join(meta["peers"][kind] for kind in ran)
            + ". They have no group send: both of their fan-out rows loop over the connections.",
            "",
            "| case | metric | better | raw aiohttp | wsframe/raw | "
            + " | ".join(f"{server_label(kind)} | {server_label(kind)}/raw" for kind in ran)
            + " |",
            "|---|---|---|---|---|" + "---|---|" * len(ran),
        ]
        for case in report["cases"]:
            for row in case["metrics"]:
                cells = [f"{_cell(row[kind])} | {_ratio_cell(row['ratios'].get(kind))}" for kind in ran]
                lines.append(
                    f"| {case['title']} | {row['label']} | {row['better']} | {_cell(row['raw'])} | "
                    f"{_ratio_cell(row['ratio'])} | " + " | ".join(cells) + " |"
                )
    absent = meta.get("peers_missing", [])
    if absent and report["cases"]:
        why = "left out (--no-peers)" if meta.get("peers_skipped") else "not installed"
        names = ", ".join(f"{peers.label(kind)} ({' + '.join(peers.PEERS[kind][1])})" for kind in absent)
        lines += ["", f"Peers {why}, so not measured: {names}."]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """The results as Markdown: the comparison table, the peers, CPU use of both sides, then cross-worker."""
    meta = report["meta"]
    kinds = list(meta.get("servers", KINDS))
    lines = [
        f"Run {meta['date']} ({meta['mode']}, {meta['repetitions']} repetition(s), commit {meta['commit']}): "
        f"{meta['cpu']}, Python {meta['python']}, aiohttp {meta['aiohttp']}, "
        f"uvloop {meta['uvloop'] or 'off (asyncio loop)'}; server pinned to core {meta['server_core']}, "
        f"load generator to core {meta['loadgen_core']}; load average {meta['loadavg_before']} before, "
        f"{meta['loadavg_after']} after.",
    ]
    if report["cases"]:
        lines += [
            "",
            "Median (min-max) over repetitions; wsframe/raw = wsframe median / raw aiohttp median; paired ratios ="
            " median (min-max) of wsframe/raw for measurements taken back to back.",
            "",
            "| case | metric | better | raw aiohttp | wsframe | wsframe/raw | paired ratios | issue 7 target |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for case in report["cases"]:
        for row in case["metrics"]:
            paired = row.get("paired_ratio")
            paired_cell = "" if paired is None else f"{paired['median']:.2f}x ({paired['min']:.2f}-{paired['max']:.2f})"
            lines.append(
                f"| {case['title']} | {row['label']} | {row['better']} | {_cell(row['raw'])} | "
                f"{_cell(row['wsframe'])} | {_ratio_cell(row['ratio'])} | {paired_cell} | {_target_cell(row)} |"
            )
    lines += _peers_lines(report)
    if report["cases"]:
        lines += [
            "",
            "CPU use during each case, in fractions of one core (median): the load generator must stay below 1.0",
            "(and below the server) for the figures to measure the server.",
            "",
            "| case | "
            + " | ".join(f"load generator vs {server_label(kind)}" for kind in kinds)
            + " | "
            + " | ".join(f"{server_label(kind)} server" for kind in kinds)
            + " |",
            "|---|" + "---|" * (2 * len(kinds)),
        ]
    for case in report["cases"]:
        cpu = case["cpu"]
        cells = [
            f"{cpu[kind][side]['median']:.2f}" if side in cpu[kind] else "-"
            for side in ("loadgen_cpu", "server_cpu")
            for kind in kinds
        ]
        if any(cell != "-" for cell in cells):
            lines.append(f"| {case['title']} | " + " | ".join(cells) + " |")
    busy = [
        case["title"]
        for case in report["cases"]
        for kind in kinds
        if case["cpu"][kind].get("loadgen_cpu", {}).get("median", 0) > 0.8
    ]
    if busy:
        lines += ["", f"Warning: the load generator used over 0.8 of its core in: {', '.join(sorted(set(busy)))}."]
    section = report.get("cross_worker")
    if section is not None:
        lines += ["", cross_worker.render_markdown(section).rstrip("\n")]
    return "\n".join(lines) + "\n"


CHARTED = {
    ("idle_memory", "kib_per_connection"),
    ("echo_1", "msgs_per_s"),
    ("echo_1", "p99_ms"),
    ("echo_100", "msgs_per_s"),
    ("echo_100", "p99_ms"),
    ("echo_100", "msgs_per_cpu_s"),
    ("open_close", "per_s"),
}
"""(case, metric) pairs the chart shows, besides the fan-out times and the cross-worker panels."""

COLOURS = {"raw": "#7f7f7f", "wsframe": "#2b6cb0", "starlette": "#d69e2e", "panther": "#c05621"}

Panel = tuple[str, list[tuple[str, dict[str, Any], str]], float | None]
"""A chart panel: title, bars as (label, min/median/max summary, colour), and a reference line (or None)."""


def _panels(report: dict[str, Any]) -> list[Panel]:
    import textwrap

    kinds = report["meta"].get("servers", KINDS)
    panels: list[Panel] = []
    for case in report["cases"]:
        rows = {row["key"]: row for row in case["metrics"]}
        for row in case["metrics"]:
            fanout = case["id"].startswith("fanout_") and row["key"] == "ms"
            if (case["id"], row["key"]) not in CHARTED and not fanout:
                continue
            bars = [(server_label(kind).replace(" ", "\n"), row[kind], COLOURS.get(kind, "#555555")) for kind in kinds]
            if fanout and "ms_per_id" in rows:
                bars[1] = ("wsframe\ngroup send", row["wsframe"], COLOURS["wsframe"])
                bars.insert(2, ("wsframe\nsend per id", rows["ms_per_id"]["wsframe"], "#90b4e0"))
            ratio = "" if row["ratio"] is None else f": {row['ratio']:.2f}x"
            title = "\n".join(textwrap.wrap(case["title"], 34))
            panels.append((f"{title}\n{row['label']} ({row['better']} is better){ratio}", bars, None))
    if report.get("cross_worker") is not None:
        panels += cross_worker.chart_panels(report["cross_worker"])
    return panels


def render_chart(report: dict[str, Any], path: Path) -> None:
    """Draw one panel per headline figure: each server's median with min-max error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(report)
    columns = 3
    rows_count = max(1, (len(panels) + columns - 1) // columns)
    fig, axes = plt.subplots(rows_count, columns, figsize=(13, 3.4 * rows_count), squeeze=False)
    for ax, (title, bars, line) in zip(axes.flat, panels, strict=False):
        medians = [summary["median"] for _, summary, _ in bars]
        errors = [
            [summary["median"] - summary["min"] for _, summary, _ in bars],
            [summary["max"] - summary["median"] for _, summary, _ in bars],
        ]
        # The median goes in the tick label, clear of the min-max error bar.
        labels = [f"{text}\n{_number(value)}" for (text, _, _), value in zip(bars, medians, strict=True)]
        ax.bar(labels, medians, yerr=errors, capsize=4, color=[c for _, _, c in bars])
        if line is not None:
            ax.axhline(line, color="#c53030", linestyle="--", linewidth=1)
        # One outlier (another process took the core for a moment) must not flatten the panel:
        # the axis stops at 2.5x the largest median and says when a range goes past it.
        top = max(summary["max"] for _, summary, _ in bars)
        limit = max(2.5 * max(medians), 1.2 * (line or 0))
        if top > limit:
            ax.set_ylim(0, limit)
            ax.text(
                0.99,
                0.97,
                f"ranges cut at {_number(limit)}",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                color="#555555",
            )
        ax.set_title(title, fontsize=8.5)
        ax.tick_params(labelsize=7 if len(bars) > 3 else 8)
        if top <= limit:
            ax.margins(y=0.2)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    meta = report["meta"]
    fig.suptitle(
        f"wsframe vs raw aiohttp in one run ({meta['date']}, median and min-max of {meta['repetitions']} "
        f"repetitions; ratio = wsframe/raw)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------- main


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return f"{os.cpu_count()} x {line.split(':', 1)[1].strip()}"
    return f"{os.cpu_count()} CPUs ({platform.machine()})"


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "wsframe"], cwd=ROOT, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty.stdout.strip() else "")


def _loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _raise_file_limit() -> None:
    # The servers and load generators are children: they inherit this limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _merge_config(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """*base* with *overrides*; the ``cross_worker`` sizes merge key by key."""
    config = {**base, **overrides}
    config["cross_worker"] = {**base.get("cross_worker", {}), **overrides.get("cross_worker", {})}
    return config


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the Markdown table; write the JSON, Markdown and (full run) chart files."""
    parser = argparse.ArgumentParser(description="Benchmark wsframe against raw aiohttp in one run.")
    parser.add_argument("--smoke", action="store_true", help="tiny N, one repetition: checks that it runs (seconds)")
    parser.add_argument("--repetitions", type=int, help="repetitions per framework (default 5; smoke 1)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--chart", type=Path, help="PNG to draw (default docs/img/benchmarks.png; smoke: none)")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's loop even when uvloop is installed")
    parser.add_argument("--no-cross-worker", action="store_true", help="skip the cross-worker case (gunicorn, Redis)")
    parser.add_argument("--no-peers", action="store_true", help="leave out Starlette and Panther even when installed")
    parser.add_argument(
        "--config",
        default="{}",
        help='JSON overrides: Config fields of benchmarks.loadgen, "cases" (of '
        + ", ".join([*LOADGEN_CASES, "cross_worker"])
        + '), "cross_worker": Config fields of benchmarks.cross_worker',
    )
    args = parser.parse_args(argv)

    config = _merge_config(SMOKE_CONFIG if args.smoke else FULL_CONFIG, json.loads(args.config))
    if args.no_cross_worker:
        config["cases"] = [case for case in config["cases"] if case != "cross_worker"]
    unknown = sorted(set(config["cases"]) - {*LOADGEN_CASES, "cross_worker"})
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join([*LOADGEN_CASES, 'cross_worker'])}")
    run_cross = "cross_worker" in config["cases"]
    if run_cross and shutil.which("redis-server") is None:
        parser.error(REDIS_MISSING)
    loadgen_config = {k: v for k, v in config.items() if k != "cross_worker"}
    loadgen_config["cases"] = [case for case in config["cases"] if case in LOADGEN_CASES]
    repetitions = args.repetitions or (1 if args.smoke else 5)
    if repetitions < 1:
        parser.error("--repetitions must be at least 1")
    use_uvloop = uvloop_available() and not args.no_uvloop
    default_chart = None if args.smoke else ROOT / "docs" / "img" / "benchmarks.png"
    chart = None if args.no_chart else (args.chart or default_chart)
    kinds = server_kinds(with_peers=not args.no_peers)
    cases = _cases(config["echo_connections"], config["idle_connections"], config["fanout_sizes"])
    _raise_file_limit()
    server_core, loadgen_core = cores()
    loadavg_before = _loadavg()
    started = time.monotonic()
    sessions: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    cross_runs: list[dict[str, dict[str, Any]]] = []
    cross_meta: dict[str, Any] = {}
    for repetition in range(repetitions):
        print(f"repetition {repetition + 1}/{repetitions} ...", file=sys.stderr, flush=True)
        if loadgen_config["cases"]:
            results = run_repetition(
                loadgen_config,
                first=repetition,
                use_uvloop=use_uvloop,
                timeout=120 if args.smoke else 900,
                kinds=kinds,
            )
            for kind in kinds:
                sessions[kind].append(results[kind])
        if run_cross:
            print("  cross-worker ...", file=sys.stderr, flush=True)
            cross, cross_meta = run_cross_worker(
                config["cross_worker"], first=repetition, use_uvloop=use_uvloop, timeout=120 if args.smoke else 900
            )
            cross_runs.append(cross)
    peers_missing = [kind for kind in peers.PEERS if kind not in kinds]
    report: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": "smoke" if args.smoke else "full",
            "repetitions": repetitions,
            "seconds": round(time.monotonic() - started, 1),
            "commit": _commit(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "aiohttp": _version("aiohttp"),
            "wsframe": _version("wsframe"),
            "uvloop": _version("uvloop") if use_uvloop else None,
            "server_core": server_core,
            "loadgen_core": loadgen_core,
            "loadavg_before": loadavg_before,
            "loadavg_after": _loadavg(),
            "config": config,
            "servers": kinds,
            "peers": {kind: peers.describe(kind) for kind in kinds if kind not in KINDS},
            "peers_missing": peers_missing,
            "peers_skipped": args.no_peers,
            "fanout_api": (
                "wsframe: send_message_to_group() (ms), send_message_to_websocket() per id (ms_per_id); "
                "raw aiohttp and peers: one send per connection in both"
            ),
        },
        # --config '{"cases": [...]}' may have run only some of them.
        "cases": aggregate([case for case in cases if all(case.id in s for s in sessions["raw"])], sessions)
        if sessions["raw"]
        else [],
        "cross_worker": cross_worker.summarise(cross_runs, cross_meta) if cross_runs else None,
    }
    markdown = render_markdown(report)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.results_dir / "latest.md").write_text(markdown)
    if chart is not None:
        render_chart(report, chart)
    sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
