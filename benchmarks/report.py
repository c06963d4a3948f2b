"""The results: medians and ratios over repetitions, the Markdown tables of every case, and the chart."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .harness import number, summary
from .servers import KINDS, label

__all__ = ["Case", "Metric", "aggregate", "cross_worker_summary", "loadgen_cases", "render_chart", "render_markdown"]


@dataclass(frozen=True)
class Metric:
    """One figure of a case: its key in the load generator's results, how it reads, and its target ratio."""

    key: str
    label: str
    better: Literal["higher", "lower"]
    target: float | None = None
    """The wsframe/raw ratio aimed for (at least, when higher is better; at most, when lower is)."""


@dataclass(frozen=True)
class Case:
    """A benchmark case and the metrics it reports."""

    id: str
    title: str
    metrics: tuple[Metric, ...]


def loadgen_cases(echo_connections: list[int], idle: int, fanout_sizes: list[int]) -> list[Case]:
    """The cases the load generator measures, for these sizes."""
    cases = [
        Case(
            "idle_memory",
            f"memory per idle connection ({idle:,} open)",
            (Metric("kib_per_connection", "KiB of server RSS", "lower", 1.15),),
        )
    ]
    for n in echo_connections:
        big = n >= 100
        cases.append(
            Case(
                f"echo_{n}",
                f"echo, {n} connection{'s' * (n != 1)}, 64-byte text",
                (
                    Metric("msgs_per_s", "round trips/s", "higher", 0.95 if big else None),
                    Metric("msgs_per_cpu_s", "round trips per server CPU-second", "higher"),
                    Metric("p50_ms", "p50 latency, ms", "lower"),
                    Metric("p99_ms", "p99 latency, ms", "lower", 1.1 if big else None),
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


def _values(sessions: list[dict[str, Any]], case: str, key: str) -> list[float]:
    return [float(v) for s in sessions for v in (s[case][key] if isinstance(s[case][key], list) else [s[case][key]])]


def aggregate(cases: list[Case], sessions: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each server's per-repetition results as medians (min-max) and ratios to raw aiohttp's median.

    *sessions* maps each server (``raw``, ``wsframe``, then any others) to its results per repetition.
    ``ratio`` is wsframe/raw, ``ratios`` every server's ratio to raw, ``paired_ratio`` the spread of
    wsframe/raw over samples taken back to back, and ``like_for_like`` wsframe/``raw-matched``.
    """
    out = []
    for case in cases:
        entry: dict[str, Any] = {"id": case.id, "title": case.title, "metrics": [], "cpu": {}}
        for metric in case.metrics:
            row: dict[str, Any] = {"key": metric.key, "label": metric.label, "better": metric.better}
            row["target"] = metric.target
            for kind, runs in sessions.items():
                row[kind] = summary(_values(runs, case.id, metric.key))
            raw = row["raw"]["median"]
            row["ratio"] = row["wsframe"]["median"] / raw if raw else None
            row["ratios"] = {k: row[k]["median"] / raw for k in sessions if k != "raw" and raw}
            matched = row.get("raw-matched", {}).get("median")
            row["like_for_like"] = row["wsframe"]["median"] / matched if matched else None
            paired = [w / r for w, r in zip(row["wsframe"]["samples"], row["raw"]["samples"], strict=True) if r]
            row["paired_ratio"] = summary(paired) if paired else None
            ratio, target = row["ratio"], metric.target
            met = (
                None
                if target is None or ratio is None
                else ratio >= target
                if metric.better == "higher"
                else ratio <= target
            )
            row["target_met"] = met
            entry["metrics"].append(row)
        for kind, runs in sessions.items():
            sides = [side for side in ("loadgen_cpu", "server_cpu") if side in runs[0][case.id]]
            entry["cpu"][kind] = {side: summary(_values(runs, case.id, side)) for side in sides}
        out.append(entry)
    return out


def cross_worker_summary(runs: list[dict[str, dict[str, Any]]], meta: dict[str, Any]) -> dict[str, Any]:
    """The cross-worker repetitions as medians (min-max) per mode, Redis/same-process ratios, and the p99 target."""
    from .cases.cross_worker import MODES, TARGET_P99_MS, TITLES

    modes = []
    for mode in [m for m in MODES if all(m in run for run in runs)]:
        keys = [k for k, v in runs[0][mode].items() if isinstance(v, int | float) and not k.endswith("_pid")]
        metrics = {key: summary([float(run[mode][key]) for run in runs]) for key in keys}
        modes.append({"mode": mode, "title": TITLES[mode], "metrics": metrics})
    by_mode = {entry["mode"]: entry["metrics"] for entry in modes}
    ratios, target = {}, None
    if "redis" in by_mode and "same-process" in by_mode:
        for key in ("p50_ms", "p99_ms", "sends_per_s"):
            if floor := by_mode["same-process"][key]["median"]:
                ratios[key] = by_mode["redis"][key]["median"] / floor
    if "redis" in by_mode:
        p99 = by_mode["redis"]["p99_ms"]
        target = {"mode": "redis", "metric": "p99_ms", "limit_ms": TARGET_P99_MS, "met": p99["median"] < TARGET_P99_MS}
        target |= {
            "repetitions_under": sum(v < TARGET_P99_MS for v in p99["samples"]),
            "repetitions": len(p99["samples"]),
        }
    return {
        "id": "cross_worker",
        "meta": meta,
        "modes": modes,
        "ratios_redis_to_same_process": ratios,
        "target": target,
    }


# ------------------------------------------------------------------ tables


def _cell(s: dict[str, Any] | None) -> str:
    return "-" if s is None else f"{number(s['median'])} ({number(s['min'])}-{number(s['max'])})"


def _ratio(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}x"


def _target(row: dict[str, Any]) -> str:
    if row["target"] is None:
        return ""
    sign = "≥" if row["better"] == "higher" else "≤"
    return f"{sign} {row['target']:.2f}x: {'met' if row['target_met'] else 'missed'}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def render_markdown(report: dict[str, Any]) -> str:
    """The results as Markdown: wsframe against raw aiohttp, the other servers, CPU use, then cross-worker."""
    meta, cases = report["meta"], report["cases"]
    kinds = list(meta.get("servers", KINDS))
    others = [kind for kind in kinds if kind not in KINDS]
    matched = "raw-matched" in others
    lines = [
        f"Run {meta['date']} ({meta['mode']}, {meta['repetitions']} repetition(s), commit {meta['commit']}): "
        f"{meta['cpu']}, Python {meta['python']}, aiohttp {meta['aiohttp']}, "
        f"uvloop {meta['uvloop'] or 'off (asyncio loop)'}; server pinned to core {meta['server_core']}, "
        f"load generator to core {meta['loadgen_core']}; load average {meta['loadavg_before']} before, "
        f"{meta['loadavg_after']} after."
    ]
    if not cases:
        lines = [*lines, "", cross_worker_markdown(report["cross_worker"])] if report.get("cross_worker") else lines
        return "\n".join(lines).rstrip("\n") + "\n"
    rows = [(case["title"], row) for case in cases for row in case["metrics"]]
    header = ["case", "metric", "better", "raw aiohttp", "wsframe", "wsframe/raw", "paired ratios", "target"]
    body = []
    for title, row in rows:
        p = row["paired_ratio"]
        paired = "" if p is None else f"{p['median']:.2f}x ({p['min']:.2f}-{p['max']:.2f})"
        body.append(
            [title, row["label"], row["better"], _cell(row["raw"]), _cell(row["wsframe"]), _ratio(row["ratio"])]
        )
        body[-1] += [paired, _target(row)]
    lines += [
        "",
        "Each server with its own defaults. Median (min-max) over repetitions; wsframe/raw = wsframe median "
        "/ raw aiohttp median; paired ratios = median (min-max) of wsframe/raw for measurements taken back to "
        "back.",
        "",
        *table(header, body),
    ]
    if others:
        described = "; ".join(meta.get("peers", {}).get(kind, label(kind)) for kind in others)
        header = ["case", "metric", "raw aiohttp", "wsframe/raw"] + [
            f"{label(k)}{t}" for k in others for t in ("", "/raw")
        ]
        header += ["wsframe / raw aiohttp with wsframe's heartbeat"] if matched else []
        body = []
        for title, row in rows:
            body.append([title, row["label"], _cell(row["raw"]), _ratio(row["ratio"])])
            body[-1] += [c for k in others for c in (_cell(row[k]), _ratio(row["ratios"].get(k)))]
            body[-1] += [_ratio(row["like_for_like"])] if matched else []
        lines += [
            "",
            f"Other servers in the same run: {described}. The peers have no group send: both of their "
            "fan-out rows loop over the connections.",
            "",
            *table(header, body),
        ]
    if absent := meta.get("peers_missing", []):
        why = "left out (--no-peers)" if meta.get("peers_skipped") else "not installed"
        lines += ["", f"Peers {why}, so not measured: {', '.join(label(kind) for kind in absent)}."]
    sides = ("loadgen_cpu", "server_cpu")
    header = ["case"] + [f"load generator vs {label(k)}" for k in kinds] + [f"{label(k)} server" for k in kinds]
    body = [
        [case["title"]]
        + [f"{case['cpu'][k][s]['median']:.2f}" if s in case["cpu"][k] else "-" for s in sides for k in kinds]
        for case in cases
        if case["cpu"][kinds[0]]
    ]
    busy = sorted(
        {case["title"] for case in cases for k in kinds if case["cpu"][k].get(sides[0], {}).get("median", 0) > 0.8}
    )
    lines += [
        "",
        "CPU use during each case, in fractions of one core (median): the load generator must stay below 1.0 "
        "(and below the server) for the figures to measure the server.",
        "",
        *table(header, body),
    ]
    if busy:
        lines += ["", f"Warning: the load generator used over 0.8 of its core in: {', '.join(busy)}."]
    if report.get("cross_worker") is not None:
        lines += ["", cross_worker_markdown(report["cross_worker"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def cross_worker_markdown(section: dict[str, Any]) -> str:
    """The cross-worker table: one row per mode, absolute figures, the 2 ms target and Redis/same-process."""
    meta, cfg = section["meta"], section["meta"]["config"]
    own = cfg["clients"] // cfg["workers"]
    lines = [
        f"Cross-worker send: `gunicorn -w {cfg['workers']} -k {meta['worker_class']}` serving wsframe, its processes "
        f"pinned to core {meta['server_core']}; a private redis-server {meta['redis'] or ''} on core "
        f"{meta['redis_core']}; the driver ({meta['client_loop']}) on core {meta['driver_core']}. One worker sends to "
        f"the {cfg['clients'] - own} connections the other {cfg['workers'] - 1} worker(s) own (to its own {own} in "
        f"`same-process`), paced at {cfg['rate']:,.0f} messages/s, {cfg['latency_sends']:,} per repetition; latency = "
        "client receipt minus the CLOCK_MONOTONIC send timestamp in the message. Throughput: every worker sends "
        f"{cfg['sends_per_worker']:,} with {cfg['concurrency']} concurrent senders. Median (min-max) over "
        "repetitions; CPU in fractions of one core (median), paced phase / throughput phase.",
        "",
    ]
    target, body = section["target"], []
    for entry in section["modes"]:
        m = entry["metrics"]
        body.append(
            [entry["title"]] + [_cell(m[k]) for k in ("p50_ms", "p99_ms", "max_ms", "achieved_rate", "sends_per_s")]
        )
        body[-1] += [
            f"{m[k]['median']:.2f} / {m['throughput_' + k]['median']:.2f}" if k in m else "-"
            for k in ("loadgen_cpu", "server_cpu", "redis_cpu")
        ]
        if target is not None and entry["mode"] == target["mode"]:
            body[-1].append(
                f"p99 < {target['limit_ms']:g} ms: {'met' if target['met'] else 'missed'} "
                f"({target['repetitions_under']} of {target['repetitions']} repetitions under)"
            )
        else:
            body[-1].append("")
    header = ["mode", "p50 ms", "p99 ms", "max ms", "paced rate achieved, /s", "throughput, sends/s"]
    lines += table([*header, "load generator CPU", "workers' CPU", "Redis CPU", "target"], body)
    if ratios := section["ratios_redis_to_same_process"]:
        named = [
            (k, n) for k, n in (("p50_ms", "p50"), ("p99_ms", "p99"), ("sends_per_s", "throughput")) if k in ratios
        ]
        lines += [
            "",
            "Redis / same process (no raw aiohttp equivalent exists): "
            + ", ".join(f"{n} {ratios[k]:.2f}x" for k, n in named)
            + ".",
        ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ chart

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
COLOURS = {
    "raw": "#7f7f7f",
    "raw-matched": "#b0b0b0",
    "wsframe": "#2b6cb0",
    "starlette": "#d69e2e",
    "panther": "#c05621",
}
MODE_BARS = {
    "same-process": ("same\nprocess", "#90b4e0"),
    "redis": ("Redis", "#2b6cb0"),
    "ipc": ("IPC", "#4a9a5b"),
    "fanout": ("Redis\nfan-out", "#7f7f7f"),
}
Panel = tuple[str, list[tuple[str, dict[str, Any], str]], float | None]
"""A chart panel: title, bars as (label, min/median/max summary, colour), and a reference line (or None)."""


def _panels(report: dict[str, Any]) -> list[Panel]:
    kinds = report["meta"].get("servers", KINDS)
    panels: list[Panel] = []
    for case in report["cases"]:
        rows = {row["key"]: row for row in case["metrics"]}
        for row in case["metrics"]:
            fanout = case["id"].startswith("fanout_") and row["key"] == "ms"
            if (case["id"], row["key"]) not in CHARTED and not fanout:
                continue
            bars = [(label(kind).replace(" ", "\n"), row[kind], COLOURS.get(kind, "#555555")) for kind in kinds]
            if fanout and "ms_per_id" in rows:
                bars[1] = ("wsframe\ngroup send", row["wsframe"], COLOURS["wsframe"])
                bars.insert(2, ("wsframe\nsend per id", rows["ms_per_id"]["wsframe"], "#90b4e0"))
            title = "\n".join(textwrap.wrap(case["title"], 34))
            panels.append(
                (
                    f"{title}\n{row['label']} ({row['better']} is better){_ratio(row['ratio']) and ': '}"
                    f"{_ratio(row['ratio'])}",
                    bars,
                    None,
                )
            )
    section = report.get("cross_worker")
    if section is not None:
        cfg = section["meta"]["config"]
        for key, title, line in (
            ("p99_ms", f"cross-worker send, {cfg['rate']:,.0f} messages/s paced\np99 latency, ms (target < 2 ms)", 2.0),
            (
                "sends_per_s",
                f"cross-worker send, all {cfg['workers']} workers sending\nsends/s (higher is better)",
                None,
            ),
        ):
            bars = [(*MODE_BARS[e["mode"]][:1], e["metrics"][key], MODE_BARS[e["mode"]][1]) for e in section["modes"]]
            if bars:
                panels.append((title, bars, line))
    return panels


def render_chart(report: dict[str, Any], path: Path) -> None:
    """Draw one panel per headline figure into the PNG *path*: each server's median with min-max error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(report)
    columns = 3
    fig, axes = plt.subplots(
        max(1, -(-len(panels) // columns)),
        columns,
        figsize=(13, 3.4 * max(1, -(-len(panels) // columns))),
        squeeze=False,
    )
    for ax, (title, bars, line) in zip(axes.flat, panels, strict=False):
        medians = [s["median"] for _, s, _ in bars]
        errors = [[s["median"] - s["min"] for _, s, _ in bars], [s["max"] - s["median"] for _, s, _ in bars]]
        # The median goes in the tick label, clear of the min-max error bar.
        labels = [f"{text}\n{number(value)}" for (text, _, _), value in zip(bars, medians, strict=True)]
        ax.bar(labels, medians, yerr=errors, capsize=4, color=[c for _, _, c in bars])
        if line is not None:
            ax.axhline(line, color="#c53030", linestyle="--", linewidth=1)
        # One outlier (another process took the core for a moment) must not flatten the panel:
        # the axis stops at 2.5x the largest median and says when a range goes past it.
        top, limit = max(s["max"] for _, s, _ in bars), max(2.5 * max(medians), 1.2 * (line or 0))
        if top > limit:
            ax.set_ylim(0, limit)
            ax.text(
                0.99,
                0.97,
                f"ranges cut at {number(limit)}",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                color="#555555",
            )
        else:
            ax.margins(y=0.2)
        ax.set_title(title, fontsize=8.5)
        ax.tick_params(labelsize=7 if len(bars) > 3 else 8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    meta = report["meta"]
    fig.suptitle(
        f"wsframe vs raw aiohttp in one run ({meta['date']}, median and min-max of {meta['repetitions']} "
        "repetitions; ratio = wsframe/raw)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
