"""The scale benchmark runs end to end in ``--smoke`` mode (N=200): it checks that it works, not how fast."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import scale_markdown as markdown

ROOT = Path(__file__).resolve().parent.parent
SMOKE_N = 200


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``python -m benchmarks.scale --smoke`` once as a subprocess and collect what it wrote."""
    results_dir = tmp_path_factory.mktemp("scale")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.cases.scale", "--smoke", "--results-dir", str(results_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    report = json.loads((results_dir / "scale.json").read_text()) if (results_dir / "scale.json").exists() else {}
    return {
        "returncode": done.returncode,
        "stderr": done.stderr,
        "report": report,
        "markdown": (results_dir / "scale.md").read_text() if (results_dir / "scale.md").exists() else "",
    }


@pytest.fixture(scope="module")
def row(smoke: dict[str, Any]) -> dict[str, Any]:
    """The one result row of the smoke run."""
    rows: list[dict[str, Any]] = smoke["report"]["results"]
    assert len(rows) == 1, rows
    return rows[0]


def test_smoke_run_exits_zero(smoke: dict[str, Any]) -> None:
    """Every connection opened, held and got its message, so the command exits 0."""
    assert smoke["returncode"] == 0, smoke["stderr"][-4000:]


def test_every_connection_is_opened_and_held_through_heartbeats(row: dict[str, Any]) -> None:
    """All 200 open, none is dropped while the 1 s heartbeat pings them, and the pings were answered."""
    assert (row["n"], row["opened"], row["held"], row["lost_while_holding"]) == (SMOKE_N, SMOKE_N, SMOKE_N, 0)
    assert row["pings_answered"] >= SMOKE_N


def test_every_client_receives_the_group_message_exactly_once(row: dict[str, Any]) -> None:
    """The one group send reaches all 200 clients once: none missed, none duplicated."""
    assert (row["delivered_exactly_once"], row["delivered_none"], row["delivered_more"]) == (SMOKE_N, 0, 0)


def test_connections_span_at_least_two_workers(row: dict[str, Any]) -> None:
    """The group spans processes: each of the (two or more) workers holds some of the sockets."""
    assert row["workers"] >= 2
    assert len(row["sockets_per_worker"]) == row["workers"]
    assert all(count > 0 for count in row["sockets_per_worker"])


def test_delivery_times_are_ordered_and_finite(row: dict[str, Any]) -> None:
    """first <= median <= p99 <= last receipt, all finite and non-negative milliseconds."""
    times = [row[key] for key in ("first_received_ms", "median_received_ms", "p99_received_ms", "last_received_ms")]
    assert all(isinstance(t, int | float) and math.isfinite(t) and t >= 0 for t in times), times
    assert times == sorted(times)


def test_memory_is_measured_with_zero_and_n_connections(row: dict[str, Any]) -> None:
    """Server RSS is read with 0 and with N connections and the per-connection figure is an integer."""
    assert row["server_rss_0_mb"] > 0
    assert row["server_rss_n_mb"] > 0
    assert isinstance(row["server_bytes_per_connection"], int)


def test_markdown_table_has_one_row_per_size(smoke: dict[str, Any], row: dict[str, Any]) -> None:
    """scale.md is the table markdown() renders from scale.json, with a row for N=200."""
    report = smoke["report"]
    assert smoke["markdown"] == markdown(report["results"], report["meta"])
    assert f"\n| {SMOKE_N} | ipc |" in smoke["markdown"]


def test_n_below_one_is_rejected() -> None:
    """``--n 0`` is a usage error (exit 2) naming the option, before anything starts."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.cases.scale", "--n", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "--n must be at least 1" in done.stderr
