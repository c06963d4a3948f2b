"""The flood benchmark runs end to end (it checks that it runs, not how fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.functional


def test_flood_smoke_run_measures_every_phase(tmp_path: Path) -> None:
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
