"""The benchmark harness runs end to end in ``--smoke`` mode: it checks that it runs, not how fast."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE_CASES = {"idle_memory", "echo_1", "echo_100", "open_close", "fanout_100", "fanout_1000"}
SERVERS = ("raw", "wsframe")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``python -m benchmarks.run --smoke`` once as a subprocess and collect what it wrote."""
    results_dir = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--results-dir", str(results_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return {
        "report": json.loads((results_dir / "latest.json").read_text()),
        "markdown": (results_dir / "latest.md").read_text(),
        "stdout": done.stdout,
        "results_dir": results_dir,
    }


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_smoke_run_reports_every_case(smoke: dict[str, Any]) -> None:
    """The smoke run has memory, echo (1 and 100 connections), open+close and two fan-out sizes."""
    assert {case["id"] for case in smoke["report"]["cases"]} == SMOKE_CASES


def test_every_metric_has_a_numeric_median_min_and_max_for_both_servers(smoke: dict[str, Any]) -> None:
    """Each figure is a finite number for raw aiohttp and for wsframe, with min <= median <= max."""
    for case in smoke["report"]["cases"]:
        assert case["metrics"], case["id"]
        for row in case["metrics"]:
            for server in SERVERS:
                summary = row[server]
                assert all(_is_number(summary[k]) for k in ("median", "min", "max")), (case["id"], row["key"])
                assert summary["min"] <= summary["median"] <= summary["max"], (case["id"], row["key"])


def test_every_rate_and_time_is_positive(smoke: dict[str, Any]) -> None:
    """Throughputs, latencies and fan-out times are above zero: the case really exchanged messages."""
    for case in smoke["report"]["cases"]:
        if case["id"] == "idle_memory":
            continue  # RSS can move by less than a page per connection at smoke sizes
        for row in case["metrics"]:
            for server in SERVERS:
                assert row[server]["median"] > 0, (case["id"], row["key"], server)


def test_every_metric_has_a_wsframe_to_raw_ratio(smoke: dict[str, Any]) -> None:
    """The ratio wsframe/raw is a number for every figure (both measured in the same run)."""
    ratios = [row["ratio"] for case in smoke["report"]["cases"] for row in case["metrics"]]
    assert ratios
    assert all(_is_number(ratio) for ratio in ratios)


def test_load_generator_cpu_is_reported_for_every_timed_case(smoke: dict[str, Any]) -> None:
    """Every case except memory reports the load generator's and the server's CPU use, as fractions of a core."""
    for case in smoke["report"]["cases"]:
        if case["id"] == "idle_memory":
            continue
        for server in SERVERS:
            cpu = case["cpu"][server]
            assert _is_number(cpu["loadgen_cpu"]["median"]), (case["id"], server)
            assert _is_number(cpu["server_cpu"]["median"]), (case["id"], server)


def test_markdown_table_is_printed_and_written(smoke: dict[str, Any]) -> None:
    """The Markdown table goes to stdout and to latest.md, one row per figure."""
    assert smoke["stdout"] == smoke["markdown"]
    rows = [line for line in smoke["markdown"].splitlines() if line.startswith("| echo, 100 connections")]
    assert len(rows) == 5  # round trips/s, per CPU-second, p50, p99 in the results table; CPU table


def test_smoke_run_is_labelled_smoke_with_one_repetition(smoke: dict[str, Any]) -> None:
    """The JSON says which mode produced it, so a smoke result is never mistaken for a full run."""
    meta = smoke["report"]["meta"]
    assert (meta["mode"], meta["repetitions"]) == ("smoke", 1)


def test_smoke_run_draws_no_chart_by_default(smoke: dict[str, Any]) -> None:
    """Smoke mode leaves the committed chart alone: it writes only latest.json and latest.md."""
    assert sorted(p.name for p in smoke["results_dir"].iterdir()) == ["latest.json", "latest.md"]


def test_chart_is_drawn_from_the_smoke_report(smoke: dict[str, Any], tmp_path: Path) -> None:
    """render_chart() turns a report into a PNG file (matplotlib is in the bench extra)."""
    pytest.importorskip("matplotlib", reason="matplotlib comes with pip install -e '.[bench]'")
    from benchmarks.run import render_chart

    path = tmp_path / "chart.png"
    render_chart(smoke["report"], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
