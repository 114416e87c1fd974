"""Benchmark 8: what a sensor-triggered run costs on a staging database with years of history.

Five new attempts are synced by a real ``completion_sync_job`` run (in process, against the sandbox in its own OS
process) into a staging database holding ``attempts`` staged attempts, ``ledger`` acknowledged ledger and plan rows
and ``waiting`` records waiting for their learner (``bench/history_data.py``), on SQLite and on PostgreSQL. The
reference, measured in the same benchmark, is the same run on a database with no history: a run whose cost does
not depend on history shows ratios near 1 and the same statement count.

Each run is measured in its own fresh process (spawned after the database was built, so building it is not
counted): the plan and apply steps' durations (from Dagster's step events), the SQL statements the staging engine
sent during the run (``after_cursor_execute``), the process's peak RSS during the run (``VmHWM`` reset just before
it, ``/proc/self/clear_refs``; shown with the rise over the RSS at the start of the run), and the catch-up
schedule's question (``catch_up_work``: days to plan, due outstanding records of every day; best of 3).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import Result, quiet_warnings
from bench.sandbox_proc import SandboxProcess
from imocha_sandbox.runtime import SandboxConfig

LABEL = "8. run cost vs history"
NEW_ATTEMPTS = 5
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_PLAN_SECONDS = 1.0
TARGET_PEAK_MB = 200.0


def _status(field: str) -> float:
    """A ``/proc/self/status`` memory figure in MB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current RSS (Linux)


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        if event.event_type_value == "STEP_START":
            started[entry.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in started:
            seconds[entry.step_key] = entry.timestamp - started[entry.step_key]
    return seconds


def _measure(env: dict[str, str], url: str, conn) -> None:
    """In a fresh process: sync the assessments (not measured), then measure the five-attempt run."""
    try:
        conn.send(_measure_here(env, url))
    except BaseException as exc:  # the parent reports it as a failed row
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


def _measure_here(env: dict[str, str], url: str) -> dict[str, Any]:
    quiet_warnings()
    import dagster as dg
    import sqlalchemy as sa

    from imocha_pipeline import staging
    from imocha_pipeline.definitions import build_definitions
    from imocha_pipeline.defs.resources import resources_from_settings
    from imocha_pipeline.sync.catch_up import catch_up_work
    from imocha_pipeline.sync.entities import ATTEMPT_ENTITIES

    defs = build_definitions(resources_from_settings(env, url))
    today = datetime.now(UTC).date().isoformat()
    with dg.DagsterInstance.ephemeral() as instance:
        def run(job: str, **extra):
            result = defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False,
                                                                   run_config=QUIET_LOGS, **extra)
            if not result.success:
                raise RuntimeError(f"{job} failed")
            return result

        run("assessment_sync_job")
        engine = staging.get_engine(url)
        statements: list[str] = []

        def count(_conn, _cursor, statement, *_args):
            statements.append(statement)

        sa.event.listen(engine, "after_cursor_execute", count)
        _reset_peak()
        rss_before = _status("VmRSS")
        started = time.perf_counter()
        result = run("completion_sync_job", partition_key=today)
        elapsed = time.perf_counter() - started
        peak = _status("VmHWM")
        run_statements = len(statements)
        steps = _step_seconds(instance, result.run_id)
        questions = []
        for _ in range(3):
            statements.clear()
            begun = time.perf_counter()
            work = catch_up_work(engine, ATTEMPT_ENTITIES)
            questions.append(time.perf_counter() - begun)
        question_statements = len(statements)
        statements.clear()
        catch_up = run("catch_up_job")
        catch_up_steps = _step_seconds(instance, catch_up.run_id)
        sa.event.remove(engine, "after_cursor_execute", count)
        staging.dispose_engine(url)
    return {
        "extract": steps.get("imocha_attempts", float("nan")), "plan": steps.get("completion_sync_plan", float("nan")),
        "check": next((v for k, v in steps.items() if "payloads_valid" in k), float("nan")), "steps": steps,
        "apply": steps.get("completion_sync_apply", float("nan")), "run": elapsed, "statements": run_statements,
        "peak_mb": peak, "rss_before_mb": rss_before, "catch_up_question": min(questions),
        "catch_up_question_statements": question_statements, "catch_up_work": work,
        "catch_up_step": catch_up_steps.get("completion_catch_up", float("nan")),
        "catch_up_statements": len(statements),
    }


@contextmanager
def _database(kind: str, pg_url: str):
    """A new empty staging database: a SQLite file in a temporary folder, or an own schema (dropped after)."""
    from imocha_pipeline import staging
    from imocha_pipeline.staging import versions

    if kind == "sqlite":
        folder = tempfile.mkdtemp(prefix="bench_history_")
        url = f"sqlite:///{Path(folder) / 'staging.sqlite'}"
        try:
            versions.upgrade(url)
            yield url
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    import sqlalchemy as sa

    schema = f"bench_history_{uuid.uuid4().hex[:10]}"
    admin = staging.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"
    try:
        versions.upgrade(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def measure(kind: str, attempts: int, ledger: int, waiting: int, pg_url: str,
            log: Callable[[str], None]) -> dict[str, Any]:
    """One five-attempt run on a database of ``kind`` with this history (0, 0, 0: the reference)."""
    from bench.history_data import build_history
    from imocha_pipeline import staging

    config = SandboxConfig(seed=41, tests=3, learners=12, attempts=0, degreed_rate_limit=60_000)
    with SandboxProcess(config) as box, _database(kind, pg_url) as url:
        built = 0.0
        if attempts or ledger or waiting:
            engine = staging.create_engine(url)
            started = time.perf_counter()
            build_history(engine, attempts=attempts, ledger=ledger, waiting=waiting,
                          test_ids=[t["test_id"] for t in box.tests()], log=log)
            built = time.perf_counter() - started
            engine.dispose()
            log(f"{kind}: history built in {built:.0f} s")
        tests = box.tests()
        for i, learner in enumerate(box.learners(in_degreed=True)[:NEW_ATTEMPTS]):
            box.complete_attempt(tests[i % len(tests)]["test_id"], learner["email"], learner["name"],
                                 bank_scores=60.0)
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_measure, args=(box.env, url, child), name="bench-history-run")
        process.start()
        if not parent.poll(1800):
            process.kill()
            raise RuntimeError("the measured run did not finish within 30 min")
        found = parent.recv()
        process.join(60)
        if "error" in found:
            raise RuntimeError(found["error"])
        found["build_seconds"] = built
        return found


def _describe(m: dict[str, Any]) -> str:
    return (f"plan {m['plan']:.2f} s, apply {m['apply']:.2f} s, {m['statements']} SQL, peak "
            f"{m['peak_mb']:.0f} MB (+{m['peak_mb'] - m['rss_before_mb']:.0f}); catch-up query "
            f"{m['catch_up_question'] * 1000:.0f} ms")


def run(attempts: int = 1_000_000, ledger: int = 1_000_000, waiting: int = 100_000, pg_url: str | None = None,
        backends: tuple[str, ...] = ("sqlite", "postgresql"), log: Callable[[str], None] = print) -> list[Result]:
    pg_url = pg_url or os.environ.get("IMOCHA_PIPELINE_TEST_PG_URL", PG_DEFAULT)
    size = f"{attempts / 1e6:g}M attempts, {ledger / 1e6:g}M ledger, {waiting / 1e3:g}k waiting" \
        if attempts >= 1e6 else f"{attempts:,} attempts, {ledger:,} ledger, {waiting:,} waiting"
    results = []
    for kind in backends:
        name = "SQLite" if kind == "sqlite" else "PostgreSQL"
        label = f"{LABEL} ({name})"
        try:
            log(f"{kind}: reference run on an empty history")
            empty = measure(kind, 0, 0, 0, pg_url, log)
            log(f"{kind}: run on {size}")
            full = measure(kind, attempts, ledger, waiting, pg_url, log)
        except Exception as exc:
            results.append(Result.failed(label, exc))
            continue
        peak_rise = full["peak_mb"] - full["rss_before_mb"]
        same_sql = full["statements"] == empty["statements"]
        met = full["plan"] < TARGET_PLAN_SECONDS and same_sql and full["peak_mb"] < TARGET_PEAK_MB
        ratio = (f"plan {full['plan'] / empty['plan']:.1f}x, apply {full['apply'] / empty['apply']:.1f}x, SQL "
                 f"{full['statements']}/{empty['statements']} (target plan < 1 s, same SQL, < 200 MB)")
        notes = [
            f"{name}, {size}: history built in {full['build_seconds']:.0f} s (not counted); whole run "
            f"{full['run']:.2f} s (reference {empty['run']:.2f} s), extract {full['extract']:.2f} s, payload check "
            f"{full['check']:.2f} s; peak RSS {full['peak_mb']:.0f} MB, {peak_rise:.0f} MB over the run's start "
            f"(reference {empty['peak_mb']:.0f} MB, +{empty['peak_mb'] - empty['rss_before_mb']:.0f}); catch-up "
            f"question {full['catch_up_question_statements']} SQL, {full['catch_up_question'] * 1000:.0f} ms "
            f"(reference {empty['catch_up_question'] * 1000:.0f} ms), catch-up job step {full['catch_up_step']:.2f} s "
            f"with {full['catch_up_statements']} SQL (reference {empty['catch_up_step']:.2f} s, "
            f"{empty['catch_up_statements']} SQL)",
        ]
        results.append(Result(label, _describe(full), "empty history: " + _describe(empty), ratio, met, notes,
                              {"full": full, "empty": empty, "attempts": attempts, "ledger": ledger,
                               "waiting": waiting}))
    return results


if __name__ == "__main__":  # python -m bench.history_cost [attempts ledger waiting]
    import sys

    from bench.report import render

    numbers = [int(float(x)) for x in sys.argv[1:4]] or [1_000_000, 1_000_000, 100_000]
    print(render(run(*numbers), LABEL))
