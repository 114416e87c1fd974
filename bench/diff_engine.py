"""Benchmark 4: the diff/plan engine (``sync/diff.py``) at 10k, 100k and 1M completions, beside DuckDB.

The input is what ``completion_plan`` gives the engine: the desired completions (record key,
``completed_at`` text, ``percentile``) and the ledger's acknowledged ones (plus ``degreed_id``), in no
particular order; 1% of the records are new and 1% changed. The same plan is computed by DuckDB (a
full join with the same classification, normalisation, a hash and the same row order: the rows to write
first, by key), fetched back into a DataFrame, as the reference point for "how close to the machine's limit".

Each engine runs in a fresh subprocess that loads the pickled input, then resets the kernel's peak-RSS
mark (``/proc/self/clear_refs``), so "peak" is the process's high-water mark while planning, inputs
included ("+x" is what planning added). Time is the best of ``repeat`` runs (wall clock; CPU time beside
it shows how much of the wall time was waiting for a busy machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report import Result

TARGET_SECONDS = 3.0
TARGET_PEAK_MB = 1536.0
TARGET_ROWS = 1_000_000
FIRST = ["amelia", "jose", "zoe", "ngoc", "lukasz", "soren", "aicha", "chen", "priya", "mateo", "ingrid",
         "hiroshi", "fatima", "liam", "noa", "ravi", "elodie", "kwame", "sofia", "dmitri"]
LAST = ["obrien", "garcia", "nguyen", "kowalski", "odegaard", "diallo", "wang", "sharma", "adeyemi", "muller",
        "tanaka", "smith", "cohen", "iyer", "dubois", "mensah", "ivanov", "zhang", "rao", "kim"]

DUCKDB_PLAN = """
SELECT d.record_key,
       CASE WHEN a.record_key IS NULL THEN 'create'
            WHEN trim(d.completed_at) IS DISTINCT FROM trim(a.completed_at)
              OR round(d.percentile, 6) IS DISTINCT FROM round(a.percentile, 6) THEN 'update'
            ELSE 'unchanged' END AS action,
       a.degreed_id,
       hash(trim(d.completed_at), round(d.percentile, 6)) AS payload_hash,
       d.completed_at, d.percentile
FROM desired d LEFT JOIN actual a ON a.record_key = d.record_key
ORDER BY action = 'unchanged', CASE WHEN action <> 'unchanged' THEN d.record_key END
"""


def make_frames(rows: int, seed: int = 11, new_share: float = 0.01,
                changed_share: float = 0.01) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Desired completions and the ledger's view of Degreed, shuffled independently."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(FIRST), rows)
    last = rng.integers(0, len(LAST), rows)
    tests = 300_000 + 17 * rng.integers(0, 400, rows)
    keys = [f"{FIRST[f]}.{LAST[la]}{i}@example.com|imocha-{t}"
            for i, (f, la, t) in enumerate(zip(first.tolist(), last.tolist(), tests.tolist(), strict=True))]
    seconds = rng.integers(0, 365 * 86400, rows).astype("timedelta64[s]")
    completed = pd.Series(np.datetime64("2025-01-01T00:00:00") + seconds).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    percentile = np.round(rng.uniform(0, 100, rows), 2)
    desired = pd.DataFrame({"record_key": keys, "completed_at": completed, "percentile": percentile})
    known = rng.permutation(rows)[: rows - int(rows * new_share)]
    actual = desired.iloc[known].reset_index(drop=True)
    actual.insert(1, "degreed_id", [f"c{i:09x}" for i in range(len(actual))])
    changed = rng.choice(len(actual), int(rows * changed_share), replace=False)
    actual.loc[changed, "percentile"] = actual.loc[changed, "percentile"] + 1.0
    actual = actual.iloc[rng.permutation(len(actual))].reset_index(drop=True)
    desired = desired.iloc[rng.permutation(rows)].reset_index(drop=True)
    return desired, actual


# ---------------------------------------------------------------------------------------------- worker


def _rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _run_pandas(desired: pd.DataFrame, actual: pd.DataFrame) -> dict[str, int]:
    from imocha_pipeline.sync.completions.entity import COMPLETIONS
    from imocha_pipeline.sync.core.diff import plan

    result = plan(desired, actual, COMPLETIONS)
    return {k: int(v) for k, v in result["action"].value_counts().items()}


def _run_duckdb(desired: pd.DataFrame, actual: pd.DataFrame) -> dict[str, int]:
    import duckdb

    con = duckdb.connect()
    con.register("desired", desired)
    con.register("actual", actual)
    result = con.execute(DUCKDB_PLAN).df()
    con.close()
    return {k: int(v) for k, v in result["action"].value_counts().items()}


def worker(engine: str, data: str, repeat: int) -> dict:
    with open(data, "rb") as handle:
        desired, actual = pickle.load(handle)
    run = _run_pandas if engine == "pandas" else _run_duckdb
    if engine == "duckdb":
        import duckdb
    else:
        import imocha_pipeline.sync.core.diff  # noqa: F401
    run(desired.head(1000), actual.head(1000))  # warm up (first-call imports and caches), before the peak reset
    gc.collect()
    base_kb = _rss_kb("VmRSS")
    exact = _reset_peak()
    walls, cpus, counts = [], [], {}
    for _ in range(repeat):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        counts = run(desired, actual)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    peak_kb = _rss_kb("VmHWM") if exact else None
    if peak_kb is None:
        import resource
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    threads = None
    if engine == "duckdb":
        import duckdb
        threads = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
    best = int(np.argmin(walls))
    return {"engine": engine, "rows": len(desired), "wall": walls[best], "cpu": cpus[best], "walls": walls,
            "peak_mb": peak_kb / 1024, "base_mb": (base_kb or 0) / 1024, "exact_peak": exact, "counts": counts,
            "threads": threads}


# ---------------------------------------------------------------------------------------------- driver


def _measure(engine: str, data: Path, repeat: int) -> dict:
    command = [sys.executable, "-m", "bench.diff_engine", "--worker", engine, "--data", str(data),
               "--repeat", str(repeat)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
                          timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} worker failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _size_label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else (f"{rows // 1000}k" if rows % 1000 == 0
                                                                  else str(rows))


def run(sizes: list[int], repeat: int = 3, log=print) -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-diff-") as folder:
        for rows in sizes:
            label = _size_label(rows)
            try:
                log(f"[diff] generating {label} completions ...")
                data = Path(folder) / f"frames-{rows}.pkl"
                with open(data, "wb") as handle:
                    pickle.dump(make_frames(rows), handle, protocol=pickle.HIGHEST_PROTOCOL)
                times = repeat if rows < TARGET_ROWS else max(1, min(repeat, 2))
                log(f"[diff] {label}: sync/diff.plan (best of {times}) ...")
                ours = _measure("pandas", data, times)
                log(f"[diff] {label}: DuckDB (best of {times}) ...")
                ref = _measure("duckdb", data, times)
                data.unlink()
            except Exception as exc:  # one size failing must not hide the others
                results.append(Result.failed(f"4. diff/plan {label}", exc))
                continue
            results.append(_row(label, rows, ours, ref))
    return results


def _row(label: str, rows: int, ours: dict, ref: dict) -> Result:
    figure = (f"{ours['wall']:.2f} s (cpu {ours['cpu']:.2f}), peak {ours['peak_mb']:.0f} MB "
              f"(+{ours['peak_mb'] - ours['base_mb']:.0f})")
    reference = (f"DuckDB {ref['wall']:.2f} s (cpu {ref['cpu']:.2f}), peak {ref['peak_mb']:.0f} MB "
                 f"(+{ref['peak_mb'] - ref['base_mb']:.0f})")
    vs = ours["wall"] / ref["wall"] if ref["wall"] else float("nan")
    notes = []
    if rows == TARGET_ROWS:
        met = ours["wall"] < TARGET_SECONDS and ours["peak_mb"] < TARGET_PEAK_MB
        ratio = f"{vs:.1f}x DuckDB (target < {TARGET_SECONDS:.0f} s, < {TARGET_PEAK_MB / 1024:.1f} GB)"
    else:
        met = None
        ratio = f"{vs:.1f}x DuckDB"
    if ours["counts"] != ref["counts"]:
        notes.append(f"plans differ at {label}: ours {ours['counts']}, DuckDB {ref['counts']}")
    if rows == TARGET_ROWS:
        notes.append(f"plan counts {ours['counts']}; DuckDB uses {ref['threads']} threads, the engine one; "
                     "time = best of the runs, wall clock; peak = process high-water mark while planning, inputs "
                     "included (+ = added by planning)" + ("" if ours["exact_peak"] else
                                                             "; peak RSS could not be reset: it includes loading"))
    return Result(f"4. diff/plan {label}", figure, reference, ratio, met, notes,
                  data={"ours": ours, "duckdb": ref})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["pandas", "duckdb"], required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    print(json.dumps(worker(args.worker, args.data, args.repeat)))


if __name__ == "__main__":
    main()
