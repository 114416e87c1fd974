"""Benchmark 4: the diff/plan engine (``sync/core/diff.py``) at 10k, 100k and 1M records of two shapes, beside
DuckDB on its own native tables.

Shapes (``make_assessments``, ``make_completions``):

- **assessments**, as ``assessment_plan`` gives them: the desired content (``imocha-{testId}``, title 60-100
  characters, summary 100-200 (1% missing), URL about 100, duration, duration unit, language) against Degreed's
  snapshot (plus ``degreed_id`` and ``obsolete``): 5% changed (one field each: title, summary, URL or duration),
  2% new, 2% removed (active in Degreed, gone from iMocha: retired), 0.5% retired long ago, 0.2% back after
  being retired, 1% with a stray space that normalises away;
- **completions**, as ``completion_plan`` gives them: desired (``email|imocha-{testId}``, ``completed_at`` as
  UTC text, ``percentile``) against the ledger's acknowledged payloads (only those keys): 5% changed, 2% new.

Both sides are shuffled independently and built as separate objects (as two database reads give them).

The reference is DuckDB computing the same plan (full join, the same classification with trimming and rounding,
the changed fields, a row hash of each row to write, the rows to write first by key, then the rest in the desired
order) from its own native tables into a native table: the inputs are loaded into DuckDB before the clock starts,
nothing is converted to or from pandas while timed. A second DuckDB figure, "DuckDB as the engine", is what the
engine would cost if it were DuckDB: pandas frames in, the plan frame out (still without pandas' payload hash of
the rows to write, which the ledger keeps and DuckDB cannot compute).

Each measurement runs in a fresh subprocess that loads the pickled input, then resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), so "peak" is the process's high-water mark while planning, inputs included ("+x" is
what planning added). Time is the best of ``repeat`` runs (wall clock; CPU time beside it).
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

TARGET_SECONDS = 1.5
TARGET_VS_DUCKDB = 1.5
TARGET_ADDED_MB = 1024.0
TARGET_ROWS = 1_000_000
SHAPES = ("assessments", "completions")
WORDS = ("python", "java", "sql", "cloud", "data", "analysis", "advanced", "fundamentals", "assessment", "skills",
         "developer", "senior", "junior", "engineering", "management", "leadership", "communication", "excel",
         "react", "kubernetes", "docker", "security", "network", "design", "testing", "agile", "scrum", "machine",
         "learning", "statistics", "finance", "accounting", "marketing", "sales", "support", "writing", "english",
         "reasoning", "aptitude", "numerical", "verbal", "logical", "coding", "challenge", "practical", "theory",
         "über", "données", "naïve")
FIRST = ["amelia", "jose", "zoe", "ngoc", "lukasz", "soren", "aicha", "chen", "priya", "mateo", "ingrid",
         "hiroshi", "fatima", "liam", "noa", "ravi", "elodie", "kwame", "sofia", "dmitri"]
LAST = ["obrien", "garcia", "nguyen", "kowalski", "odegaard", "diallo", "wang", "sharma", "adeyemi", "muller",
        "tanaka", "smith", "cohen", "iyer", "dubois", "mensah", "ivanov", "zhang", "rao", "kim"]


# ---------------------------------------------------------------------------------------------- the inputs


def _texts(rng: np.random.Generator, count: int, low: int, high: int) -> list[str]:
    """``count`` distinct-looking sentences of ``low``..``high`` characters (slices of a long random text)."""
    corpus = " ".join(rng.choice(WORDS, 400_000).tolist())
    starts = rng.integers(0, len(corpus) - high - 1, count).tolist()
    lengths = rng.integers(low, high + 1, count).tolist()
    return [corpus[s:s + n].strip().capitalize() for s, n in zip(starts, lengths, strict=True)]


def _fresh(frame: pd.DataFrame) -> pd.DataFrame:
    """The same frame with its own string objects (as a second database read gives them)."""
    return pickle.loads(pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL))


def make_assessments(rows: int, seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    tests = rng.permutation(np.arange(100_000, 100_000 + 3 * rows))
    keys = [f"imocha-{t}" for t in tests[:rows].tolist()]
    summary = _texts(rng, rows, 100, 200)
    for i in rng.choice(rows, rows // 100, replace=False).tolist():
        summary[i] = None
    desired = pd.DataFrame({
        "external_id": keys, "title": _texts(rng, rows, 60, 100), "summary": summary,
        "url": [f"https://app.imocha.io/assessments/{k[7:]}/take?source=degreed&lang=en&campaign=lxp-{i % 97:02d}"
                f"&token={t:012x}" for i, (k, t) in enumerate(zip(keys, rng.integers(0, 2**47, rows).tolist(),
                                                                 strict=True))],
        "duration": rng.choice([15.0, 20.0, 30.0, 45.0, 60.0, 90.0], rows),
        "duration_type": "Minutes", "language": rng.choice(["en", "fr", "de", "es", "ja"], rows)})
    new, removed, old_retired, revived = (int(rows * share) for share in (0.02, 0.02, 0.005, 0.002))
    actual = desired.iloc[new:].reset_index(drop=True)
    actual.insert(1, "degreed_id", [f"{i:08x}-4c1d-9e2a-{i:012x}" for i in range(len(actual))])
    actual["obsolete"] = False
    picks = rng.permutation(len(actual))
    changed, spaced, back = np.split(picks[: int(rows * 0.05) + rows // 100 + revived],
                                     [int(rows * 0.05), int(rows * 0.05) + rows // 100])
    for field, part in zip(("title", "summary", "url", "duration"), np.array_split(changed, 4), strict=True):
        if field == "duration":
            actual.loc[part, field] = actual.loc[part, field] + 5.0
        else:
            actual.loc[part, field] = [f"{v or ''} (v2)" for v in actual.loc[part, field]]
    desired_title = desired["title"].to_numpy(dtype=object).copy()
    desired_title[spaced + new] = [f"{t} " for t in desired_title[spaced + new]]  # stray space: no change
    desired["title"] = desired_title
    actual.loc[back, "obsolete"] = True
    gone = removed + old_retired
    extra = pd.DataFrame({"external_id": [f"imocha-{t}" for t in tests[rows:rows + gone].tolist()],
                          "degreed_id": [f"{i:08x}-0000-9e2a-{i:012x}" for i in range(gone)],
                          "title": _texts(rng, gone, 60, 100), "summary": _texts(rng, gone, 100, 200),
                          "url": "https://app.imocha.io/assessments/0/take", "duration": 30.0,
                          "duration_type": "Minutes", "language": "en", "obsolete": [False] * removed + [True] *
                          old_retired})
    actual = pd.concat([actual, extra], ignore_index=True)
    actual = actual.iloc[rng.permutation(len(actual))].reset_index(drop=True)
    desired = desired.iloc[rng.permutation(rows)].reset_index(drop=True)
    return _fresh(desired), _fresh(actual)


def make_completions(rows: int, seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    first, last = rng.integers(0, len(FIRST), rows).tolist(), rng.integers(0, len(LAST), rows).tolist()
    tests = (300_000 + 17 * rng.integers(0, 400, rows)).tolist()
    keys = [f"{FIRST[f]}.{LAST[la]}{i}@example.com|imocha-{t}"
            for i, (f, la, t) in enumerate(zip(first, last, tests, strict=True))]
    seconds = rng.integers(0, 365 * 86400, rows).astype("timedelta64[s]")
    completed = (np.datetime64("2025-01-01T00:00:00") + seconds).astype(str)
    desired = pd.DataFrame({"record_key": keys, "completed_at": [f"{t}Z" for t in completed.tolist()],
                            "percentile": np.round(rng.uniform(0, 100, rows), 2)})
    known = rng.permutation(rows)[: rows - int(rows * 0.02)]
    actual = desired.iloc[known].reset_index(drop=True)
    actual.insert(1, "degreed_id", [f"c{i:09x}" for i in range(len(actual))])
    changed = rng.choice(len(actual), int(rows * 0.05), replace=False)
    half = len(changed) // 2
    actual.loc[changed[:half], "percentile"] = actual.loc[changed[:half], "percentile"] + 1.0
    actual.loc[changed[half:], "completed_at"] = [f"2024{t[4:]}" for t in actual.loc[changed[half:], "completed_at"]]
    actual = actual.iloc[rng.permutation(len(actual))].reset_index(drop=True)
    desired = desired.iloc[rng.permutation(rows)].reset_index(drop=True)
    return _fresh(desired), _fresh(actual)


MAKERS = {"assessments": make_assessments, "completions": make_completions}


def spec_of(shape: str):
    if shape == "assessments":
        from imocha_pipeline.sync.assessments.entity import ASSESSMENTS
        return ASSESSMENTS
    from imocha_pipeline.sync.completions.entity import COMPLETIONS
    return COMPLETIONS


# ---------------------------------------------------------------------------------------------- DuckDB's plan


def duckdb_plan_sql(spec, numeric: set[str], source_desired: str = "desired", source_actual: str = "actual") -> str:
    """The plan as one DuckDB query: the same classification, changed fields, a row hash and row order."""
    key, fields, retire = spec.key, spec.fields, spec.retire_missing

    def norm(side: str, field: str) -> str:
        column = {"d": f"d.{field}", "a": f"a.{field}", "k": field, "ka": f"a_{field}"}[side]
        if field in numeric:
            return f"round({column}, {spec.float_places})"
        # trim only what needs it (trimming every value would cost DuckDB more than the whole join)
        return (f"CASE WHEN {column} IS NULL THEN '' WHEN starts_with({column}, ' ') OR ends_with({column}, ' ') "
                f"THEN trim({column}) ELSE {column} END")

    def differs(field: str) -> str:
        if field in numeric:
            return f"{norm('d', field)} IS DISTINCT FROM {norm('a', field)}"
        return f"CASE WHEN d.{field} = a.{field} THEN false ELSE {norm('d', field)} <> {norm('a', field)} END"

    obsolete = "coalesce(a.obsolete, false)" if retire else "false"
    flags = ", ".join(f"{differs(f)} AS c{i}" for i, f in enumerate(fields))
    any_changed = " OR ".join(f"c{i}" for i in range(len(fields)))
    changed_list = ", ".join([f"CASE WHEN c{i} THEN '{f}' END" for i, f in enumerate(fields)]
                             + ["CASE WHEN obsolete THEN 'obsolete' END"])
    # the payload hash of the rows to write only, as the engine computes it (from the columns k carries)
    d_hash = f"hash({', '.join(norm('k', f) for f in fields)})"
    a_hash = f"hash({', '.join(norm('ka', f) for f in fields)})"
    join = "FULL OUTER JOIN" if retire else "LEFT JOIN"
    return f"""
CREATE OR REPLACE TABLE plan AS
WITH j AS (
  SELECT d.{key} AS dkey, a.{key} AS akey, d._pos, a.degreed_id, {obsolete} AS obsolete, {flags},
         {", ".join(f"d.{f}" for f in fields)}, {", ".join(f"a.{f} AS a_{f}" for f in fields)}
  FROM {source_desired} d {join} {source_actual} a ON a.{key} = d.{key}
  {"WHERE d." + key + " IS NOT NULL OR NOT coalesce(a.obsolete, false)" if retire else ""}
), k AS (
  SELECT *, CASE WHEN dkey IS NULL THEN 'retire' WHEN akey IS NULL THEN 'create'
                 WHEN obsolete OR {any_changed} THEN 'update' ELSE 'unchanged' END AS action
  FROM j
)
SELECT coalesce(dkey, akey) AS record_key, action,
       CASE action WHEN 'retire' THEN ['obsolete'] WHEN 'update' THEN [x FOR x IN [{changed_list}] IF x IS NOT NULL]
                   ELSE [] END AS changed_fields,
       degreed_id, CASE WHEN action = 'unchanged' THEN NULL WHEN dkey IS NULL THEN {a_hash} ELSE {d_hash} END
       AS payload_hash, {", ".join(fields)}
FROM k
ORDER BY action = 'unchanged', CASE WHEN action <> 'unchanged' THEN coalesce(dkey, akey) END, _pos
"""


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


def _counts(actions) -> dict[str, int]:
    return {str(k): int(v) for k, v in pd.Series(actions).value_counts().items()}


class _Engine:
    """Our engine: ``sync/core/diff.plan`` on the DataFrames."""

    def __init__(self, desired, actual, spec):
        self.desired, self.actual, self.spec = desired, actual, spec

    def run(self) -> dict[str, int]:
        from imocha_pipeline.sync.core.diff import plan

        return _counts(plan(self.desired, self.actual, self.spec)["action"])


class _DuckNative:
    """DuckDB on its own tables: the inputs are loaded before the clock starts; the plan becomes a table."""

    threads: int | None = None  # DuckDB's own default: one thread per core

    def __init__(self, desired, actual, spec):
        import duckdb

        self.con = duckdb.connect()
        if self.threads is not None:
            self.con.execute(f"SET threads = {self.threads}")
        numeric = {f for f in spec.fields if pd.api.types.is_numeric_dtype(desired[f])}
        self.con.register("desired_df", desired.assign(_pos=np.arange(len(desired))))
        self.con.register("actual_df", actual)
        self.con.execute("CREATE TABLE desired AS SELECT * FROM desired_df")
        self.con.execute("CREATE TABLE actual AS SELECT * FROM actual_df")
        self.con.unregister("desired_df")
        self.con.unregister("actual_df")
        self.sql = duckdb_plan_sql(spec, numeric)

    def run(self) -> dict[str, int]:
        self.con.execute(self.sql)
        return dict(self.con.execute("SELECT action, count(*) FROM plan GROUP BY 1").fetchall())


class _DuckNativeOneThread(_DuckNative):
    """DuckDB on its own tables on one thread: how the two engines compare per core."""

    threads = 1


class _DuckPandas:
    """DuckDB as the engine: pandas frames in, the plan as a pandas frame out."""

    def __init__(self, desired, actual, spec):
        import duckdb

        self.duckdb, self.desired, self.actual = duckdb, desired, actual
        numeric = {f for f in spec.fields if pd.api.types.is_numeric_dtype(desired[f])}
        self.sql = duckdb_plan_sql(spec, numeric, "desired_df", "actual_df").replace(
            "CREATE OR REPLACE TABLE plan AS", "")

    def run(self) -> dict[str, int]:
        con = self.duckdb.connect()
        con.register("desired_df", self.desired.assign(_pos=np.arange(len(self.desired))))
        con.register("actual_df", self.actual)
        frame = con.execute(self.sql).df()
        con.close()
        return _counts(frame["action"])


ENGINES = {"engine": _Engine, "duckdb": _DuckNative, "duckdb-1thread": _DuckNativeOneThread,
           "duckdb-pandas": _DuckPandas}


def worker(engine: str, shape: str, data: str, repeat: int) -> dict:
    with open(data, "rb") as handle:
        desired, actual = pickle.load(handle), pickle.load(handle)
    spec = spec_of(shape)
    ENGINES[engine](desired.head(1000), actual.head(1000), spec).run()  # warm up: imports, first-call caches
    runner = ENGINES[engine](desired, actual, spec)  # DuckDB native: the load into its tables happens here
    gc.collect()
    base_kb = _rss_kb("VmRSS")
    exact = _reset_peak()
    walls, cpus, counts = [], [], {}
    for _ in range(repeat):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        counts = runner.run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    peak_kb = _rss_kb("VmHWM") if exact else None
    if peak_kb is None:
        import resource
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    threads = None
    if engine == "engine":
        from imocha_pipeline.sync.core import text_native
        threads = text_native.threads(len(desired)) if text_native.available() else 1
    else:
        import duckdb
        con = getattr(runner, "con", None) or duckdb.connect()
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    best = int(np.argmin(walls))
    return {"engine": engine, "shape": shape, "rows": len(desired), "wall": walls[best], "cpu": cpus[best],
            "walls": walls, "peak_mb": peak_kb / 1024, "base_mb": (base_kb or 0) / 1024, "exact_peak": exact,
            "counts": {k: counts[k] for k in sorted(counts)}, "threads": threads}


# ---------------------------------------------------------------------------------------------- driver


def _measure(engine: str, shape: str, data: Path, repeat: int) -> dict:
    command = [sys.executable, "-m", "bench.diff_engine", "--worker", engine, "--shape", shape, "--data", str(data),
               "--repeat", str(repeat)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
                          timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} worker failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _size_label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else (f"{rows // 1000}k" if rows % 1000 == 0
                                                                  else str(rows))


def run(sizes: list[int], repeat: int = 5, shapes: tuple[str, ...] = SHAPES, log=print) -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-diff-") as folder:
        for shape in shapes:
            for rows in sizes:
                name = f"4. diff/plan {_size_label(rows)} {shape}"
                try:
                    log(f"[diff] generating {_size_label(rows)} {shape} ...")
                    data = Path(folder) / f"{shape}-{rows}.pkl"
                    desired, actual = MAKERS[shape](rows)
                    with open(data, "wb") as handle:  # two dumps: the sides share no objects
                        pickle.dump(desired, handle, protocol=pickle.HIGHEST_PROTOCOL)
                        pickle.dump(actual, handle, protocol=pickle.HIGHEST_PROTOCOL)
                    del desired, actual
                    times = max(1, repeat)
                    measured = {}
                    for engine in ("engine", "duckdb", "duckdb-1thread", "duckdb-pandas"):
                        runs = times if engine != "duckdb-pandas" else 1  # a note's figure: one run is enough
                        log(f"[diff] {name}: {engine}" + (f" (best of {runs})" if runs > 1 else "") + " ...")
                        measured[engine] = _measure(engine, shape, data, runs)
                    data.unlink()
                except Exception as exc:  # one size failing must not hide the others
                    results.append(Result.failed(name, exc))
                    continue
                results.append(_row(name, rows, measured))
    return results


def _mb(run: dict) -> str:
    return f"peak {run['peak_mb']:.0f} MB (+{run['peak_mb'] - run['base_mb']:.0f})"


def _engine_threads(run: dict) -> str:
    if run["threads"] and run["threads"] > 1:
        return f"{run['threads']} for its text hashing and comparisons (the compiled part), one for the rest"
    return "one (the compiled part is not built or is switched off)"


def _row(name: str, rows: int, measured: dict) -> Result:
    ours, ref, as_engine = measured["engine"], measured["duckdb"], measured["duckdb-pandas"]
    figure = f"{ours['wall']:.2f} s (cpu {ours['cpu']:.2f}), {_mb(ours)}"
    reference = f"DuckDB native {ref['wall']:.2f} s (cpu {ref['cpu']:.2f}), {_mb(ref)}"
    vs = ours["wall"] / ref["wall"] if ref["wall"] else float("nan")
    added = ours["peak_mb"] - ours["base_mb"]
    one = measured["duckdb-1thread"]
    per_core = ours["wall"] / one["wall"] if one["wall"] else float("nan")
    notes = [f"DuckDB native on one thread: {one['wall']:.2f} s (cpu {one['cpu']:.2f}); the engine takes "
             f"{per_core:.2f}x that (not the target's reference, which is DuckDB as it runs by default)",
             f"DuckDB as the engine (pandas in and out): {as_engine['wall']:.2f} s (cpu {as_engine['cpu']:.2f}), "
             f"{_mb(as_engine)}, before the pandas payload hash it would still need"]
    if rows == TARGET_ROWS:
        met = ours["wall"] < TARGET_SECONDS and vs <= TARGET_VS_DUCKDB and added < TARGET_ADDED_MB
        ratio = (f"{vs:.2f}x DuckDB (target < {TARGET_SECONDS} s, <= {TARGET_VS_DUCKDB}x, "
                 f"+< {TARGET_ADDED_MB / 1024:.0f} GB)")
    else:
        met = None
        ratio = f"{vs:.2f}x DuckDB"
    if not (ours["counts"] == ref["counts"] == one["counts"] == as_engine["counts"]):
        notes.append(f"plans differ: ours {ours['counts']}, DuckDB {ref['counts']}, on one thread {one['counts']}, "
                     f"as engine {as_engine['counts']}")
        met = False if met is not None else None
    if rows == TARGET_ROWS:
        notes.append(f"plan counts {ours['counts']}; DuckDB uses {ref['threads']} threads, the engine "
                     f"{_engine_threads(ours)}; time = "
                     "best of the runs, wall clock; peak = process high-water mark while planning, inputs included "
                     "(+ = added by planning)" + ("" if ours["exact_peak"] else
                                                  "; peak RSS could not be reset: it includes loading"))
    return Result(name, figure, reference, ratio, met, notes, data=measured)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=sorted(ENGINES), required=True)
    parser.add_argument("--shape", choices=SHAPES, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    print(json.dumps(worker(args.worker, args.shape, args.data, args.repeat)))


if __name__ == "__main__":
    main()
