"""The callgrind benchmark runs end to end (a smoke run: it checks that it works, not the counts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.tools import instructions


def test_instruction_count_smoke_run_writes_a_row_per_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
