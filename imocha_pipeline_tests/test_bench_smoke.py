"""Smoke test of ``make bench``: the cheap benchmarks run end to end in their quick form and produce figures.

No timing is asserted (benchmarks print figures, they never pass or fail on time); only that each row
was measured, and that the economy rows count requests against a minimum.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmarks_produce_figures(tmp_path):
    only = ["economy", "extraction"] + (["diff"] if importlib.util.find_spec("duckdb") else [])
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench", "--quick", "--only", ",".join(only), "--json", str(out),
               "--economy-tests", "12", "--economy-learners", "15", "--economy-attempts", "20",
               "--diff-sizes", "2000,5000", "--diff-repeat", "1", "--reports", "24", "--latency-ms", "20"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]

    table = done.stdout
    assert "| benchmark" in table and "met?" in table
    results = json.loads(out.read_text())
    names = [r["benchmark"] for r in results]
    assert names[:3] == ["3. economy: first sync", "3. economy: incremental 1%", "3. economy: no change"]
    assert "5. extraction" in names
    if "diff" in only:
        assert {f"4. diff/plan {size} {shape}" for size in ("2k", "5k") for shape in ("assessments", "completions")
                } <= set(names)
        for diff in (r for r in results if r["benchmark"].startswith("4. ")):
            engines = diff["data"]
            assert int(engines["duckdb-1thread"]["threads"]) == 1, engines["duckdb-1thread"]
            assert int(engines["duckdb"]["threads"]) >= 1 and int(engines["engine"]["threads"]) >= 1, engines
            assert engines["duckdb-1thread"]["counts"] == engines["engine"]["counts"] == engines["duckdb"]["counts"]
            assert "DuckDB native on one thread" in " ".join(diff["notes"])
    for result in results:
        assert result["figure"] != "(not measured)", result
        assert result["benchmark"] in table
    economy = {r["benchmark"]: r["data"] for r in results if r["benchmark"].startswith("3.")}
    for data in economy.values():
        assert data["degreed"] > 0 and data["imocha"] > 0 and data["degreed_min"] > 0
    first = economy["3. economy: first sync"]
    assert sum(first["writes_needed"].values()) > 0  # the first sync created content and completions
    extraction = next(r["data"] for r in results if r["benchmark"] == "5. extraction")
    assert extraction["reports"] == 24 and extraction["ideal"] > 0


@pytest.mark.slow
def test_quick_throughput_counts_on_a_sliding_window_server(tmp_path):
    """Benchmark 1 in its quick form: counted from the simulator's log and limiter in sliding-window mode, the
    budget never puts more than the limit into any rolling minute and draws no 429 (no time is asserted)."""
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench", "--quick", "--only", "throughput", "--writes", "45",
               "--rate-limit", "30", "--json", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(out.read_text())
    assert result["benchmark"] == "1. write throughput" and result["figure"] != "(not measured)", result
    assert "sliding window" in result["reference"]
    data = result["data"]
    assert data["requests"] == 45 and data["429"] == 0
    assert data["busiest"] <= 30 and data["limiter_max"] <= 30
    assert data["busiest"] == data["limiter_max"] == 30, "the first window is spent in full"
    assert data["outcome"]["counts"] == {"created": 45}


@pytest.mark.slow
def test_quick_history_cost_counts_the_same_statements_on_a_small_history(tmp_path):
    """Benchmark 8 at a tiny size on SQLite: both runs are measured, and the five-attempt run sends the same
    number of SQL statements with a history as without one (no time is asserted)."""
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench", "--quick", "--only", "history", "--history-attempts", "2000",
               "--history-ledger", "2000", "--history-waiting", "200", "--history-backends", "sqlite",
               "--json", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(out.read_text())
    assert result["benchmark"] == "8. run cost vs history (SQLite)"
    full, empty = result["data"]["full"], result["data"]["empty"]
    assert result["data"]["attempts"] == 2000
    assert full["statements"] == empty["statements"] > 0
    assert full["peak_mb"] > 0 and full["plan"] > 0
