"""The results: medians and ratios over repetitions, the Markdown tables of every case, and the chart."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .harness import summary
from .servers import KINDS, label

__all__ = ["Case", "Metric", "aggregate", "cell", "cross_worker_markdown", "cross_worker_summary", "loadgen_cases"]
__all__ += ["number", "render_chart", "render_markdown", "scale_markdown", "table"]


@dataclass(frozen=True)
class Metric:
    """One figure of a case: its key in the results, its label, and the wsframe/raw ratio it should reach."""

    key: str
    label: str
    better: Literal["higher", "lower"]
    target: float | None = None


@dataclass(frozen=True)
class Case:
    """A benchmark case and the metrics it reports."""

    id: str
    title: str
    metrics: tuple[Metric, ...]


def loadgen_cases(echo_connections: list[int], idle: int, fanout_sizes: list[int]) -> list[Case]:
    """The cases the load generator measures, for these sizes."""
    memory = Metric("kib_per_connection", "KiB of server RSS", "lower", 1.15)
    cases = [Case("idle_memory", f"memory per idle connection ({idle:,} open)", (memory,))]
    rates: tuple[Metric, ...]
    latency: tuple[Metric, ...]
    metrics: tuple[Metric, ...]
    for n in echo_connections:
        rates = (Metric("msgs_per_s", "round trips/s", "higher", 0.95 if n >= 100 else None),)
        rates += (Metric("msgs_per_cpu_s", "round trips per server CPU-second", "higher"),)
        latency = (Metric("p50_ms", "p50 latency, ms", "lower"),)
        latency += (Metric("p99_ms", "p99 latency, ms", "lower", 1.1 if n >= 100 else None),)
        cases.append(Case(f"echo_{n}", f"echo, {n} connection{'s' * (n != 1)}, 64-byte text", rates + latency))
    per_cpu = Metric("per_cpu_s", "connections per server CPU-second", "higher")
    cases.append(
        Case("open_close", "connection open + close", (Metric("per_s", "connections/s", "higher", 0.9), per_cpu))
    )
    for n in fanout_sizes:
        metrics = (Metric("ms", "ms until the last one received it", "lower", 0.8),)
        metrics += (Metric("server_ms", "ms in the server's send call(s)", "lower"),)
        metrics += (Metric("ms_per_id", "ms until the last one, one send per id", "lower"),)
        cases.append(Case(f"fanout_{n}", f"fan-out of one 64-byte message to {n:,} connections", metrics))
    return cases


def _values(sessions: list[dict[str, Any]], case: str, key: str) -> list[float]:
    return [float(v) for s in sessions for v in (s[case][key] if isinstance(s[case][key], list) else [s[case][key]])]


def aggregate(cases: list[Case], sessions: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each server's per-repetition results as medians (min-max) and ratios to raw aiohttp's median. *sessions* maps
    each server (``raw``, ``wsframe``, then any others) to its results per repetition. ``ratio`` is wsframe/raw,
    ``ratios`` every server's ratio to raw and ``like_for_like`` wsframe/``raw-matched``."""
    out = []
    for case in cases:
        entry: dict[str, Any] = {"id": case.id, "title": case.title, "metrics": [], "cpu": {}}
        for metric in case.metrics:
            row: dict[str, Any] = {"key": metric.key, "label": metric.label, "better": metric.better}
            row |= {kind: summary(_values(runs, case.id, metric.key)) for kind, runs in sessions.items()}
            raw, target = row["raw"]["median"], metric.target
            row["target"], row["ratio"] = target, row["wsframe"]["median"] / raw if raw else None
            row["ratios"] = {k: row[k]["median"] / raw for k in sessions if k != "raw" and raw}
            matched = row.get("raw-matched", {}).get("median")
            row["like_for_like"] = row["wsframe"]["median"] / matched if matched else None
            known = target is not None and row["ratio"] is not None
            row["target_met"] = (row["ratio"] >= target) == (metric.better == "higher") if known else None
            entry["metrics"].append(row)
        for kind, runs in sessions.items():
            sides = [side for side in ("loadgen_cpu", "server_cpu") if side in runs[0][case.id]]
            entry["cpu"][kind] = {side: summary(_values(runs, case.id, side)) for side in sides}
        out.append(entry)
    return out


CROSS_WORKER_TITLES = {"same-process": "same process (no hop)", "redis": "Redis, targeted (wsframe)"}
CROSS_WORKER_TITLES["redis-cluster"] = "Redis Cluster, 3 masters, sharded pub/sub (wsframe)"
CROSS_WORKER_TITLES["ipc"] = "local IPC, targeted (wsframe, no Redis)"
CROSS_WORKER_TITLES["redis-group"] = "Redis, group of one member on each other worker (wsframe)"
CROSS_WORKER_TITLES["redis-history"] = "Redis, the same group with history (wsframe)"
CROSS_WORKER_TITLES["fanout"] = "Redis, fan-out to every worker (Panther / python-socketio design)"
"""How the cross-worker table names each mode."""


def cross_worker_summary(runs: list[dict[str, dict[str, Any]]], meta: dict[str, Any]) -> dict[str, Any]:
    """The cross-worker repetitions as medians (min-max) per mode, Redis/same-process ratios, and the p99 target."""
    from .cases.cross_worker import MODES, TARGET_P99_MS

    modes: list[dict[str, Any]] = []
    for mode in (m for m in MODES if m in runs[0]):  # results from before a mode existed lack it
        keys = [k for k, v in runs[0][mode].items() if isinstance(v, int | float) and not k.endswith("_pid")]
        metrics = {key: summary([float(run[mode][key]) for run in runs]) for key in keys}
        modes.append({"mode": mode, "title": CROSS_WORKER_TITLES[mode], "metrics": metrics})
    redis, alone = (next(e["metrics"] for e in modes if e["mode"] == m) for m in ("redis", "same-process"))
    floors = {key: alone[key]["median"] for key in ("p50_ms", "p99_ms", "sends_per_s")}
    ratios = {key: redis[key]["median"] / floor for key, floor in floors.items() if floor}
    p99 = redis["p99_ms"]
    target = {"mode": "redis", "metric": "p99_ms", "limit_ms": TARGET_P99_MS, "met": p99["median"] < TARGET_P99_MS}
    target |= {"repetitions_under": sum(v < TARGET_P99_MS for v in p99["samples"]), "repetitions": len(runs)}
    section = {"id": "cross_worker", "meta": meta, "modes": modes, "target": target}
    return section | {"ratios_redis_to_same_process": ratios}


def number(value: float) -> str:
    """*value* for a results table: thousands separated, three significant figures below 1,000."""
    for least, style in ((999.5, ",.0f"), (100, ".0f"), (10, ".1f"), (0.1, ".2f")):  # 999.7 reads 1,000, not 1000
        if abs(value) >= least:
            return format(value, style)
    return f"{value:.3f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def cell(s: dict[str, Any] | None) -> str:
    """A summary as ``median (min-max)``; ``-`` for None."""
    return "-" if s is None else f"{number(s['median'])} ({number(s['min'])}-{number(s['max'])})"


def _ratio(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}x"


def _target(row: dict[str, Any]) -> str:
    if row["target"] is None:
        return ""
    return (
        f"{'≥' if row['better'] == 'higher' else '≤'} {row['target']:.2f}x: {'met' if row['target_met'] else 'missed'}"
    )


def render_markdown(report: dict[str, Any]) -> str:
    """The results as Markdown: wsframe against raw aiohttp, the other servers, CPU use, then cross-worker."""
    meta, cases = report["meta"], report["cases"]
    kinds = list(meta.get("servers", KINDS))
    others = [kind for kind in kinds if kind not in KINDS]
    run = f"Run {meta['date']} ({meta['mode']}, {meta['repetitions']} repetition(s), commit {meta['commit']}): "
    run += f"{meta['cpu']}, Python {meta['python']}, aiohttp {meta['aiohttp']}, uvloop "
    run += f"{meta['uvloop'] or 'off (asyncio loop)'}; server pinned to core {meta['server_core']}, load generator "
    run += f"to core {meta['loadgen_core']}; load average {meta['loadavg_before']} before, "
    lines = [f"{run}{meta['loadavg_after']} after."]
    rows = [(case["title"], row) for case in cases for row in case["metrics"]]
    if rows:
        body = [[t, r["label"], r["better"], cell(r["raw"]), cell(r["wsframe"])] for t, r in rows]
        body = [[*line, _ratio(r["ratio"]), _target(r)] for line, (_, r) in zip(body, rows, strict=True)]
        header = ["case", "metric", "better", "raw aiohttp", "wsframe", "wsframe/raw", "target"]
        intro = "Each server with its own defaults. Median (min-max) over repetitions; wsframe/raw: ratio of medians."
        lines += ["", intro, "", *table(header, body)]
    if others and rows:
        matched = ["wsframe / raw aiohttp with wsframe's heartbeat"] if "raw-matched" in others else []
        header = ["case", "metric", "raw aiohttp", "wsframe/raw"]
        header += [f"{label(k)}{t}" for k in others for t in ("", "/raw")]
        body = [[t, r["label"], cell(r["raw"]), _ratio(r["ratio"])] for t, r in rows]
        for line, (_, row) in zip(body, rows, strict=True):
            line += [c for k in others for c in (cell(row[k]), _ratio(row["ratios"].get(k)))]
            line += [_ratio(row["like_for_like"])] if matched else []
        described = "; ".join(meta.get("peers", {}).get(kind, label(kind)) for kind in others)
        ran = any(kind in meta.get("peers", {}) for kind in others)
        note = " The peers have no group send: both their fan-out rows loop over the connections." if ran else ""
        lines += ["", f"Other servers in the same run: {described}.{note}", "", *table(header + matched, body)]
    if (absent := meta.get("peers_missing", [])) and rows:
        why = "left out (--no-peers)" if meta.get("peers_skipped") else "not installed"
        lines += ["", f"Peers {why}, so not measured: {', '.join(label(kind) for kind in absent)}."]
    if rows:
        sides = ("loadgen_cpu", "server_cpu")
        header = ["case", *(f"load generator vs {label(k)}" for k in kinds), *(f"{label(k)} server" for k in kinds)]
        cpu = [(c["title"], c["cpu"]) for c in cases if c["cpu"][kinds[0]]]
        body = [[t, *(f"{u[k][s]['median']:.2f}" if s in u[k] else "-" for s in sides for k in kinds)] for t, u in cpu]
        lines += ["", "CPU use during each case, in fractions of one core (median): the load generator must stay "]
        lines[-1] += "below 1.0 (and below the server) for the figures to measure the server."
        lines += ["", *table(header, body)]
        busy = {t for t, u in cpu for k in kinds if u[k].get(sides[0], {}).get("median", 0) > 0.8}
        if busy:
            lines += ["", f"Warning: the load generator used over 0.8 of its core in: {', '.join(sorted(busy))}."]
    if report.get("cross_worker") is not None:
        lines += ["", cross_worker_markdown(report["cross_worker"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def cross_worker_markdown(section: dict[str, Any]) -> str:
    """The cross-worker table: one row per mode, absolute figures, the 2 ms target and Redis/same-process."""
    meta, cfg = section["meta"], section["meta"]["config"]
    own = cfg["clients"] // cfg["workers"]
    intro = f"Cross-worker send: `gunicorn -w {cfg['workers']} -k {meta['worker_class']}` and redis-server "
    intro += f"{meta['redis'] or ''} on core {meta['server_core']}, the driver ({meta['client_loop']}) on core "
    intro += (
        f"{meta['driver_core']}. One worker sends to the {cfg['clients'] - own} connections the others own (to its "
    )
    intro += f"own {own} in `same-process`) at {cfg['rate']:,.0f}/s, {cfg['latency_sends']:,} per repetition; latency "
    intro += "= receipt minus the send's CLOCK_MONOTONIC timestamp. Throughput: every worker sends "
    intro += (
        f"{cfg['sends_per_worker']:,} with {cfg['concurrency']} senders. Median (min-max) over repetitions; CPU in "
    )
    intro += "fractions of one core (median), paced / throughput phase."
    target, body = section["target"], []
    for entry in section["modes"]:
        m = entry["metrics"]
        body.append([entry["title"], *(cell(m[k]) for k in ("p50_ms", "p99_ms", "max_ms", "achieved_rate"))])
        body[-1].append(cell(m["sends_per_s"]))
        sides = ("loadgen_cpu", "server_cpu", "redis_cpu")
        body[-1] += [f"{m[k]['median']:.2f} / {m['throughput_' + k]['median']:.2f}" if k in m else "-" for k in sides]
        verdict = ""
        if target is not None and entry["mode"] == target["mode"]:
            verdict = f"p99 < {target['limit_ms']:g} ms: {'met' if target['met'] else 'missed'} "
            verdict += f"({target['repetitions_under']} of {target['repetitions']} repetitions under)"
        body[-1].append(verdict)
    header = ["mode", "p50 ms", "p99 ms", "max ms", "paced rate achieved, /s", "throughput, sends/s"]
    lines = [intro, "", *table([*header, "load generator CPU", "workers' CPU", "Redis CPU", "target"], body)]
    if ratios := section["ratios_redis_to_same_process"]:
        named = [
            (k, n) for k, n in (("p50_ms", "p50"), ("p99_ms", "p99"), ("sends_per_s", "throughput")) if k in ratios
        ]
        lines += ["", "Redis / same process (no raw aiohttp equivalent exists): "]
        lines[-1] += ", ".join(f"{n} {ratios[k]:.2f}x" for k, n in named) + "."
    return "\n".join(lines) + "\n"


SCALE_COLUMNS: tuple[str, ...] = ("n", "backend", "workers", "gc_freeze_every_s", "opened", "open_seconds")
SCALE_COLUMNS += ("opens_per_s", "held")
SCALE_COLUMNS += ("server_rss_0_mb", "server_rss_n_mb", "server_bytes_per_connection", "send_call_ms")
SCALE_COLUMNS += ("median_received_ms", "p99_received_ms", "last_received_ms", "delivered_exactly_once")
SCALE_COLUMNS += ("server_cpu_delivery_s", "server_cpu_per_s_holding", "gc_full_count_hold", "gc_longest_ms_hold")
SCALE_COLUMNS += ("gc_full_s_delivery", "loadgen_cpu_open_s", "loadgen_cpu_delivery_s")
"""The columns of the scale table, named as in scale.json."""


def scale_markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The scale results as a Markdown table (one row per N and backend) with how they were measured."""
    lines = ["# Scale: N open websockets, one group message to all", ""]
    lines += [f"Command: `{meta['command']}`; {meta['when']}; heartbeat {meta['heartbeat']}; hold {meta['hold']} s; "]
    lines[-1] += "pinned: server on core 0, load generators on core 1 (taskset)."
    lines += ["", *table(list(SCALE_COLUMNS), [[str(r.get(k, "")) for k in SCALE_COLUMNS] for r in results])]
    lines += ["", "Times are from the POST that triggers `send_message_to_group` to each client's receipt. GC figures "]
    lines[-1] += "are wall-clock seconds inside generation-2 collections, summed over the workers that wrote a GC log."
    notes = ("ok", "connect_errors_retried", "failed", "lost_while_holding", "delivered_none", "delivered_more")
    for row in (r for r in results if r.get("connect_errors_retried") or not r.get("ok", False)):
        lines.append(
            f"- N={row['n']} {row['backend']}: " + ", ".join(f"{k} {row[k]}" for k in (*notes, "error") if k in row)
        )
    return "\n".join(lines) + "\n"


CHARTED = {("idle_memory", "kib_per_connection"), ("echo_1", "msgs_per_s"), ("echo_1", "p99_ms")}
CHARTED |= {("echo_100", "msgs_per_s"), ("echo_100", "p99_ms"), ("echo_100", "msgs_per_cpu_s"), ("open_close", "per_s")}
"""(case, metric) pairs the chart shows, besides the fan-out times and the cross-worker panels."""
COLOURS = {"raw": "#7f7f7f", "raw-matched": "#b0b0b0", "wsframe": "#2b6cb0", "starlette": "#d69e2e"}
COLOURS["panther"] = "#c05621"
MODE_BARS = {"same-process": ("same\nprocess", "#90b4e0"), "redis": ("Redis", "#2b6cb0"), "ipc": ("IPC", "#4a9a5b")}
MODE_BARS["fanout"] = ("Redis\nfan-out", "#7f7f7f")
MODE_BARS["redis-cluster"] = ("Redis\nCluster", "#1a4480")
MODE_BARS["redis-group"] = ("Redis\ngroup", "#3d7cc9")
MODE_BARS["redis-history"] = ("Redis group,\nhistory", "#5b8fd0")
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
            ratio = "" if row["ratio"] is None else f": {row['ratio']:.2f}x"
            title = "\n".join(textwrap.wrap(case["title"], 34))
            panels.append((f"{title}\n{row['label']} ({row['better']} is better){ratio}", bars, None))
    if (section := report.get("cross_worker")) is not None:
        cfg = section["meta"]["config"]
        p99 = f"cross-worker send, {cfg['rate']:,.0f} messages/s paced\np99 latency, ms (target < 2 ms)"
        sends = f"cross-worker send, all {cfg['workers']} workers sending\nsends/s (higher is better)"
        for key, title, line in (("p99_ms", p99, 2.0), ("sends_per_s", sends, None)):
            bars = [(MODE_BARS[e["mode"]][0], e["metrics"][key], MODE_BARS[e["mode"]][1]) for e in section["modes"]]
            panels += [(title, bars, line)] if bars else []
    return panels


def render_chart(report: dict[str, Any], path: Path) -> None:
    """Draw one panel per headline figure into the PNG *path*: each server's median with min-max error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(report)
    rows = max(1, -(-len(panels) // 3))
    fig, axes = plt.subplots(rows, 3, figsize=(13, 3.4 * rows), squeeze=False)
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
        limit = max(2.5 * max(medians), 1.2 * (line or 0))
        if max(s["max"] for _, s, _ in bars) > limit:
            ax.set_ylim(0, limit)
            cut = {"transform": ax.transAxes, "ha": "right", "va": "top", "fontsize": 7, "color": "#555555"}
            ax.text(0.99, 0.97, f"ranges cut at {number(limit)}", **cut)
        else:
            ax.margins(y=0.2)
        ax.set_title(title, fontsize=8.5)
        ax.tick_params(labelsize=7 if len(bars) > 3 else 8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    meta = report["meta"]
    title = (
        f"wsframe vs raw aiohttp in one run ({meta['date']}, median and min-max of {meta['repetitions']} repetitions"
    )
    fig.suptitle(f"{title}; ratio = wsframe/raw)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
