"""Every benchmark runs end to end in its ``--smoke`` mode: these check that it runs and reports what it
should, never how fast: ``benchmarks.run`` (memory, echo, open + close, fan-out, cross-worker), the scale
case, the flood case and the callgrind instruction counter."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import peers
from benchmarks.cases import ws_fanout
from benchmarks.cases.cross_worker import GROUPS, MODES, TARGET_P99_MS, paced_sends
from benchmarks.report import aggregate, loadgen_cases, render_markdown, scale_markdown
from benchmarks.run import server_kinds
from benchmarks.servers import command
from benchmarks.tools import gc_pauses, instructions

ROOT = Path(__file__).resolve().parent.parent
SMOKE_CASES = {"idle_memory", "echo_1", "echo_100", "open_close", "fanout_100", "fanout_1000"}
SERVERS = ("raw", "wsframe")

SCALE_N = 200

# The smoke run starts six servers and three gunicorns: about 20 s on an idle machine.
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``python -m benchmarks.run --smoke`` once as a subprocess and collect what it wrote."""
    results_dir = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--results-dir", str(results_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
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
    peer_rows = 4 if len(smoke["report"]["meta"]["servers"]) > len(SERVERS) else 0
    # round trips/s, per CPU-second, p50, p99 in the results table (and the peers' table); CPU table
    assert len(rows) == 5 + peer_rows


def test_smoke_run_is_labelled_smoke_with_one_repetition(smoke: dict[str, Any]) -> None:
    """The JSON says which mode produced it, so a smoke result is never mistaken for a full run."""
    meta = smoke["report"]["meta"]
    assert (meta["mode"], meta["repetitions"]) == ("smoke", 1)


def test_smoke_run_draws_no_chart_by_default(smoke: dict[str, Any]) -> None:
    """Smoke mode leaves the committed chart alone: it writes only latest.json and latest.md."""
    assert sorted(p.name for p in smoke["results_dir"].iterdir()) == ["latest.json", "latest.md"]


def test_chart_is_drawn_from_the_smoke_report(smoke: dict[str, Any], tmp_path: Path) -> None:
    """render_chart() turns a report, cross-worker panels included, into a PNG file (matplotlib: test extra)."""
    from benchmarks.report import render_chart

    path = tmp_path / "chart.png"
    render_chart(smoke["report"], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ peers


def test_every_peer_is_measured_or_named_as_not_installed(smoke: dict[str, Any]) -> None:
    """Starlette and Panther are columns when installed and a 'not installed' line when not, never an error."""
    meta = smoke["report"]["meta"]
    assert sorted(meta["peers_missing"] + [s for s in meta["servers"] if s not in SERVERS]) == sorted(peers.PEERS)
    for kind in meta["peers_missing"]:
        assert peers.label(kind) in smoke["markdown"].split("not installed, so not measured:")[1]


def test_installed_peers_have_a_figure_and_a_ratio_to_raw_in_every_row(smoke: dict[str, Any]) -> None:
    """A peer that ran has a median and a ratio to raw aiohttp for every figure (none when none ran)."""
    ran = [s for s in smoke["report"]["meta"]["servers"] if s not in SERVERS]
    for case in smoke["report"]["cases"]:
        for row in case["metrics"]:
            assert sorted(row["ratios"]) == sorted(["wsframe", *ran]), (case["id"], row["key"])
            for kind in ran:
                assert _is_number(row[kind]["median"]), (case["id"], row["key"], kind)


# ----------------------------------------------------------- cross-worker


def test_cross_worker_case_reports_every_mode(smoke: dict[str, Any]) -> None:
    """The one command also runs cross-worker delivery: same process, Redis, IPC and fan-out to every worker."""
    section = smoke["report"]["cross_worker"]
    assert [entry["mode"] for entry in section["modes"]] == list(MODES)


def test_cross_worker_times_every_paced_message(smoke: dict[str, Any]) -> None:
    """Every paced message arrives and is timed: as many latency samples as sends, times the members of a group."""
    section = smoke["report"]["cross_worker"]
    sends = section["meta"]["config"]["latency_sends"]
    for entry in section["modes"]:
        each = entry["metrics"]["targets"]["median"] if entry["mode"] in GROUPS else 1
        assert entry["metrics"]["samples"]["median"] == sends * each, entry["mode"]


def test_cross_worker_latency_percentiles_are_ordered_and_positive(smoke: dict[str, Any]) -> None:
    """In every mode 0 < p50 <= p99 <= max: the latencies are real receipt-minus-send times."""
    for entry in smoke["report"]["cross_worker"]["modes"]:
        m = {key: summary["median"] for key, summary in entry["metrics"].items()}
        assert 0 < m["p50_ms"] <= m["p99_ms"] <= m["max_ms"], entry["mode"]


def test_cross_worker_reports_achieved_paced_rate_and_throughput(smoke: dict[str, Any]) -> None:
    """Each mode reports the rate the paced sender achieved and the sends per second with every worker sending."""
    for entry in smoke["report"]["cross_worker"]["modes"]:
        assert entry["metrics"]["achieved_rate"]["median"] > 0, entry["mode"]
        assert entry["metrics"]["sends_per_s"]["median"] > 0, entry["mode"]


def test_cross_worker_reports_cpu_of_driver_workers_and_redis(smoke: dict[str, Any]) -> None:
    """Each mode has the load generator's and the workers' CPU for both phases; the Redis modes have Redis's."""
    for entry in smoke["report"]["cross_worker"]["modes"]:
        keys = set(entry["metrics"])
        for side in ("loadgen_cpu", "server_cpu"):
            assert {side, f"throughput_{side}"} <= keys, entry["mode"]
        assert ("redis_cpu" in keys) == (entry["mode"] != "ipc"), entry["mode"]


def test_cross_worker_judges_redis_p99_against_the_2_ms_target(smoke: dict[str, Any]) -> None:
    """The Redis row is judged against its absolute target (p99 under 2 ms), and Redis is set against same-process."""
    section = smoke["report"]["cross_worker"]
    target = section["target"]
    assert (target["mode"], target["metric"], target["limit_ms"]) == ("redis", "p99_ms", TARGET_P99_MS)
    redis_p99 = next(e for e in section["modes"] if e["mode"] == "redis")["metrics"]["p99_ms"]["median"]
    assert target["met"] == (redis_p99 < TARGET_P99_MS)
    assert sorted(section["ratios_redis_to_same_process"]) == ["p50_ms", "p99_ms", "sends_per_s"]


def test_cross_worker_table_is_in_the_markdown(smoke: dict[str, Any]) -> None:
    """latest.md has one cross-worker row per mode and names the gunicorn worker class it ran."""
    section = smoke["report"]["cross_worker"]
    for entry in section["modes"]:
        assert sum(line.startswith(f"| {entry['title']} |") for line in smoke["markdown"].splitlines()) == 1
    assert section["meta"]["worker_class"] in smoke["markdown"]


async def test_paced_sends_go_to_the_targets_in_turn_with_increasing_timestamps() -> None:
    """paced_sends() sends each message once, cycling over the targets, each carrying its monotonic send time."""
    sent: list[tuple[str, int]] = []

    async def send(target: str, text: str) -> None:
        sent.append((target, int(text)))

    result = await paced_sends(send, ["a", "b", "c"], 7, rate=10_000)
    assert [target for target, _ in sent] == ["a", "b", "c", "a", "b", "c", "a"]
    stamps = [stamp for _, stamp in sent]
    assert stamps == sorted(stamps)
    assert (result["sent"], result["errors"]) == (7, 0)


async def test_paced_sends_count_a_failed_send_and_go_on() -> None:
    """A send that raises is counted with its error; the sends after it still happen."""
    calls = 0

    async def send(target: str, text: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("gone")
        await asyncio.sleep(0)

    result = await paced_sends(send, ["a"], 4, rate=10_000)
    assert (calls, result["sent"], result["errors"]) == (4, 3, 1)
    assert result["first_error"] == "ConnectionError('gone')"


# ------------------------------------------------------- the like-for-like row


def test_raw_aiohttp_with_wsframes_heartbeat_is_an_extra_server_beside_the_headline_one() -> None:
    """--like-for-like adds raw aiohttp given wsframe's heartbeat after raw and wsframe; the headline raw server
    is started without it."""
    assert server_kinds(with_peers=False) == ["raw", "wsframe"]
    assert server_kinds(with_peers=False, like_for_like=True) == ["raw", "wsframe", "raw-matched"]
    assert "--matched" in command("raw-matched", 8000, use_uvloop=False)
    assert "--matched" not in command("raw", 8000, use_uvloop=False)


def test_like_for_like_ratio_stands_beside_the_ratio_to_raw_aiohttps_defaults() -> None:
    """With the matched server in the run, wsframe/raw stays the headline ratio and wsframe/matched is a column."""
    case = loadgen_cases([], 100, [])[0]  # memory per idle connection
    runs = {"raw": 10.0, "wsframe": 11.0, "raw-matched": 12.0}
    sessions = {kind: [{"idle_memory": {"kib_per_connection": kib}}] for kind, kib in runs.items()}
    (entry,) = aggregate([case], sessions)
    (row,) = entry["metrics"]
    assert (row["ratio"], row["like_for_like"]) == (pytest.approx(1.1), pytest.approx(11 / 12))
    meta = {
        "date": "d",
        "mode": "smoke",
        "repetitions": 1,
        "commit": "c",
        "cpu": "cpu",
        "python": "3",
        "aiohttp": "3",
        "uvloop": None,
        "server_core": 0,
        "loadgen_core": 1,
        "loadavg_before": "0",
        "loadavg_after": "0",
        "servers": list(runs),
    }
    markdown = render_markdown({"meta": meta, "cases": [entry]})
    assert "| wsframe / raw aiohttp with wsframe's heartbeat |" in markdown
    assert "| 10.0 (10.0-10.0) | 11.0 (11.0-11.0) | 1.10x |" in markdown


# -------------------------------------------------------------------- scale


@pytest.fixture(scope="module")
def scale_smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``python -m benchmarks.cases.scale --smoke`` once as a subprocess and collect what it wrote."""
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
def scale_row(scale_smoke: dict[str, Any]) -> dict[str, Any]:
    """The one result row of the scale smoke run."""
    rows: list[dict[str, Any]] = scale_smoke["report"]["results"]
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.timeout(60)
def test_scale_smoke_run_exits_zero(scale_smoke: dict[str, Any]) -> None:
    """Every connection opened, held and got its message, so the command exits 0."""
    assert scale_smoke["returncode"] == 0, scale_smoke["stderr"][-4000:]


def test_scale_opens_every_connection_and_holds_it_through_heartbeats(scale_row: dict[str, Any]) -> None:
    """All 200 open, none is dropped while the 1 s heartbeat pings them, and the pings were answered."""
    row = scale_row
    assert (row["n"], row["opened"], row["held"], row["lost_while_holding"]) == (SCALE_N, SCALE_N, SCALE_N, 0)
    assert row["pings_answered"] >= SCALE_N


def test_scale_delivers_the_group_message_to_every_client_exactly_once(scale_row: dict[str, Any]) -> None:
    """The one group send reaches all 200 clients once: none missed, none duplicated."""
    row = scale_row
    assert (row["delivered_exactly_once"], row["delivered_none"], row["delivered_more"]) == (SCALE_N, 0, 0)


def test_scale_connections_span_at_least_two_workers(scale_row: dict[str, Any]) -> None:
    """The group spans processes: each of the (two or more) workers holds some of the sockets."""
    assert scale_row["workers"] >= 2
    assert len(scale_row["sockets_per_worker"]) == scale_row["workers"]
    assert all(count > 0 for count in scale_row["sockets_per_worker"])


def test_scale_delivery_times_are_ordered_and_finite(scale_row: dict[str, Any]) -> None:
    """first <= median <= p99 <= last receipt, all finite and non-negative milliseconds."""
    keys = ("first_received_ms", "median_received_ms", "p99_received_ms", "last_received_ms")
    times = [scale_row[key] for key in keys]
    assert all(isinstance(t, int | float) and math.isfinite(t) and t >= 0 for t in times), times
    assert times == sorted(times)


def test_scale_memory_is_measured_with_zero_and_n_connections(scale_row: dict[str, Any]) -> None:
    """Server RSS is read with 0 and with N connections and the per-connection figure is an integer."""
    assert scale_row["server_rss_0_mb"] > 0
    assert scale_row["server_rss_n_mb"] > 0
    assert isinstance(scale_row["server_bytes_per_connection"], int)


def test_scale_markdown_table_has_one_row_per_size(scale_smoke: dict[str, Any], scale_row: dict[str, Any]) -> None:
    """scale.md is the table scale_markdown() renders from scale.json, with a row for N=200."""
    report = scale_smoke["report"]
    assert scale_smoke["markdown"] == scale_markdown(report["results"], report["meta"])
    assert f"\n| {SCALE_N} | ipc |" in scale_smoke["markdown"]


@pytest.mark.timeout(60)
def test_scale_n_below_one_is_rejected() -> None:
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


# -------------------------------------------------------------------- flood


@pytest.mark.functional
@pytest.mark.timeout(60)
def test_flood_smoke_run_measures_every_phase(tmp_path: Path) -> None:
    """The idle, flood and rate-limited phases each time the quiet clients' round trips, and both attackers ran."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.cases.flood", "--smoke", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "flood.json").read_text())
    assert list(data["phases"]) == ["idle", "flood", "flood, rate-limited"]
    for rows in data["phases"].values():
        assert rows[0]["round_trips"] > 0
        assert rows[0]["p99_ms"] >= rows[0]["p50_ms"] > 0
    assert data["attackers"]["flood"][0]["sent"] > 0
    assert data["attackers"]["flood, rate-limited"][0]["opened"] > 0
    assert "| flood, rate-limited |" in (tmp_path / "flood.md").read_text()


# ------------------------------------------------------- instruction counts


@pytest.mark.timeout(60)
def test_instruction_count_smoke_run_writes_a_row_per_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks.tools.instructions`` counts both servers' instructions for a case under callgrind."""
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is not installed: apt-get install valgrind (scripts/setup-machine installs it)")
    code = instructions.main(["--cases", "open_close", "--count", "5", "--warmup", "2", "--results-dir", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "instructions.json").read_text())
    (row,) = report["cases"]
    assert row["id"] == "open_close"
    # A server that did nothing while counted would report 0; one open+close is
    # hundreds of thousands of instructions in either server.
    assert row["raw"] > 10_000
    assert row["wsframe"] > 10_000
    assert "| connection open + close |" in (tmp_path / "instructions.md").read_text()
    assert "connection open + close" in capsys.readouterr().out


# ------------------------------------------------------- garbage-collection pauses


@pytest.mark.timeout(120)
def test_gc_pauses_smoke_run_times_collections_with_gc_freeze_on_and_off(tmp_path: Path) -> None:
    """``python -m benchmarks.tools.gc_pauses`` serves, opens and closes connections twice and reports the server's
    collections, timed by gc.callbacks in the server: a server that logged nothing would report 0 collections."""
    code = gc_pauses.main(["--smoke", "--results-dir", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "gc_pauses.json").read_text())["rows"]
    assert [(row["gc_freeze"], row["connections"]) for row in rows] == [(True, 200), (False, 200)]
    assert all(row["collections"] > 0 for row in rows)
    assert "| True | 200 |" in (tmp_path / "gc_pauses.md").read_text()


# ------------------------------------------------------- websocket-triggered fan-out


@pytest.mark.timeout(120)
def test_ws_fanout_smoke_run_times_a_fanout_triggered_by_a_websocket_message_on_both_servers(tmp_path: Path) -> None:
    """A message on ``/trigger/`` reaches every member of the group on raw aiohttp and on wsframe, and is timed."""
    code = ws_fanout.main(["--smoke", "--results-dir", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "ws_fanout.json").read_text())
    assert (report["meta"]["size"], report["meta"]["mode"]) == (20, "smoke")
    for kind in ("raw", "wsframe"):
        assert len(report["servers"][kind]["ms"]["samples"]) == 1
        assert report["servers"][kind]["ms"]["median"] > 0
    assert "| ms until the last member received it |" in (tmp_path / "ws_fanout.md").read_text()
