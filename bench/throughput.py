"""Benchmarks 1 and 2: how well the Degreed rate budget is spent, by one process and by two at once.

Writes are completions sent through the real apply path (``sync.apply.apply_plan`` with the
``CompletionWriter``, the ledger and quarantine in a SQLite staging database) by a ``DegreedClient`` built
by ``DegreedResource`` (so it draws on the ``SharedRateBudget`` kept in that staging database), against
the Degreed simulator (in its own process) with its limit raised to shorten the run.

The simulator counts every API request against the limit in fixed 60-second windows and answers 429
above it. The achieved rate is taken in the steady state, where the budget, not the client, sets the
pace: over each run of ``limit`` consecutive accepted requests, the time they took, so

    achieved / allowed = 60 s / mean(t[k] - t[k - limit])      for k = limit .. n - 1

(1.0 = the budget fully spent; the client's own margin of 1 s per 60 s window caps it at 60/61 = 0.98).
Timestamps are the simulator's (when it answered). A run needs more than ``limit`` writes, so it spans
at least one full window: the runs take over a minute by construction.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import Result, quiet_warnings, ratio_text
from bench.sandbox_proc import SandboxProcess
from imocha_sandbox.runtime import SandboxConfig

WINDOW = 60.0
TARGET_SINGLE = 0.95
TARGET_SHARED = 0.90


def steady_ratio(times: list[float], limit: int) -> float:
    """60 s / mean time of ``limit`` consecutive requests (NaN when there are not more than ``limit``)."""
    times = sorted(times)
    spans = [times[k] - times[k - limit] for k in range(limit, len(times))]
    return WINDOW / (sum(spans) / len(spans)) if spans else math.nan


def busiest_window(times: list[float], window: float = WINDOW) -> int:
    times = sorted(times)
    best, low = 0, 0
    for high, moment in enumerate(times):
        while moment - times[low] >= window:
            low += 1
        best = max(best, high - low + 1)
    return best


def completion_rows(learners: list[dict], tests: list[dict], count: int, offset: int = 0) -> list[dict[str, Any]]:
    """``count`` create rows of a completion plan, each a distinct (learner, assessment) pair."""
    from imocha_pipeline.sync.completions.records import completion_key

    pairs = [(learner, test) for test in tests for learner in learners]
    if count > len(pairs):
        raise ValueError(f"only {len(pairs)} distinct learner/assessment pairs for {count} writes")
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    rows = []
    for index, (learner, test) in enumerate(pairs[:count]):
        external_id = f"imocha-{test['test_id']}"
        rows.append({
            "record_key": completion_key(learner["email"], external_id), "action": "create",
            "reason": "not in Degreed yet", "changed_fields": [], "degreed_id": None, "payload_hash": "",
            "user_id": learner["email"], "user_identifier_type": "Email", "content_id": external_id,
            "content_id_type": "ExternalId", "content_type": "Assessment",
            "completed_at": (moment - timedelta(seconds=index)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "percentile": float(40 + index % 60), "test_invitation_id": 5_000_000 + offset + index,
        })
    return rows


def apply_writes(env: dict[str, str], staging_url: str, rows: list[dict[str, Any]], run_id: str,
                 start_at: float | None = None) -> dict[str, Any]:
    """Send ``rows`` through the real apply path; returns counts and timings (runs in any process)."""
    import pandas as pd

    from imocha_pipeline.defs.resources import DegreedResource
    from imocha_pipeline.staging import get_engine
    from imocha_pipeline.sync.completions.records import COMPLETION, COMPLETION_FIELDS, COMPLETION_PAYLOAD
    from imocha_pipeline.sync.completions.writers import CompletionWriter
    from imocha_pipeline.sync.core.apply import apply_plan
    from imocha_pipeline.sync.core.ledger import Ledger
    from imocha_pipeline.sync.core.quarantine import Quarantine

    quiet_warnings()
    engine = get_engine(staging_url)
    # The production resource (shared budget in the staging database), with plain values outside Dagster.
    degreed = DegreedResource(client_id=env["DEGREED_CLIENT_ID"], client_secret=env["DEGREED_CLIENT_SECRET"],
                              api_base_url=env["DEGREED_API_BASE_URL"], token_url=env["DEGREED_TOKEN_URL"],
                              rate_limit_per_minute=int(env["DEGREED_RATE_LIMIT_PER_MINUTE"]),
                              staging_db_url=staging_url)
    client = degreed.client()
    frame = pd.DataFrame(rows)
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    wall, cpu = time.perf_counter(), time.process_time()
    result = apply_plan(frame, CompletionWriter(client), Ledger(engine, COMPLETION, run_id),
                        Quarantine(engine, COMPLETION, run_id), fields=(*COMPLETION_FIELDS, *COMPLETION_PAYLOAD))
    elapsed, cpu = time.perf_counter() - wall, time.process_time() - cpu
    client.close()
    return {"counts": dict(result.counts), "errors": result.errors[:5], "elapsed": elapsed, "cpu": cpu,
            "budget": repr(client.session.rate_budget), "client_requests": client.metrics.snapshot()}


def _child(env, staging_url, rows, run_id, start_at, out) -> None:
    try:
        out.put(apply_writes(env, staging_url, rows, run_id, start_at))
    except BaseException as exc:  # report, do not hang the parent
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def _prepare(box: SandboxProcess, writes: int, learners_needed: int) -> tuple[list[dict], list[dict]]:
    learners = box.learners()[:learners_needed]
    tests_needed = math.ceil(writes / len(learners))
    tests = box.tests()[:tests_needed]
    for test in tests:  # the assessments exist in Degreed (as after an assessment sync)
        box.degreed("POST", "/assessments", {"external_id": f"imocha-{test['test_id']}", "title": test["name"]})
    return learners, tests


def _accepted(entries: list[dict]) -> tuple[list[dict], int]:
    api = [e for e in entries if e["path"].startswith("/api/")]
    return [e for e in api if e["status"] != 429], sum(1 for e in api if e["status"] == 429)


def _too_few(name: str, writes: int, limit: int) -> Result:
    return Result.failed(name, f"needs more writes than the limit ({writes} <= {limit}) to reach a steady state")


def _world(writes: int, limit: int, seed: int) -> tuple[int, SandboxConfig]:
    """Enough learners and tests for ``writes`` distinct completions, all learners in Degreed."""
    learners = min(200, writes)
    return learners, SandboxConfig(seed=seed, tests=max(1, math.ceil(writes / learners)), learners=learners,
                                   attempts=0, missing_in_degreed=0, degreed_rate_limit=limit)


def run_single(writes: int = 1000, limit: int = 600, log=print) -> list[Result]:
    name = "1. write throughput"
    if writes <= limit:
        return [_too_few(name, writes, limit)]
    learners, world = _world(writes, limit, seed=21)
    log(f"[throughput] {writes} completions at {limit}/min through the apply path (about "
        f"{60 * writes / limit / 60:.1f} min) ...")
    with SandboxProcess(world) as box, tempfile.TemporaryDirectory(prefix="bench-throughput-") as folder:
        learners_list, tests = _prepare(box, writes, learners)
        rows = completion_rows(learners_list, tests, writes)
        mark = box.last_seq()[1]
        outcome = apply_writes(box.env, f"sqlite:///{Path(folder) / 'staging.sqlite'}", rows, "bench-single")
        entries = box.degreed_requests(mark)
    accepted, rejected = _accepted(entries)
    times = [e["ts"] for e in accepted]
    ratio = steady_ratio(times, limit)
    sent = len(accepted) + rejected
    span = max(times) - min(times) if times else 0.0
    notes = [f"{len(accepted)} requests answered in {span:.0f} s ({outcome['counts']}); busiest 60 s window "
             f"{busiest_window(times)}/{limit}; apply step {outcome['elapsed']:.0f} s wall, "
             f"{outcome['cpu']:.0f} s CPU; "
             "achieved = 60 s / mean time of each run of `limit` consecutive requests (steady state); "
             f"budget {outcome['budget']}"]
    if outcome["errors"]:
        notes.append(f"errors: {outcome['errors']}")
    met = ratio >= TARGET_SINGLE and rejected == 0 and len(accepted) >= writes
    return [Result(name, f"{ratio * limit:.0f}/min achieved, {rejected} x 429 ({sent} requests)",
                   f"{limit}/min allowed", ratio_text(ratio, f"target >= {TARGET_SINGLE}, 0 x 429"), met, notes,
                   data={"ratio": ratio, "429": rejected, "requests": sent, "outcome": outcome})]


def run_shared(writes: int = 1000, limit: int = 600, processes: int = 2, log=print) -> list[Result]:
    name = "2. shared budget"
    if writes <= limit:
        return [_too_few(name, writes, limit)]
    learners, world = _world(writes, limit, seed=22)
    log(f"[shared] {processes} processes, one client id, {writes} completions in all at {limit}/min ...")
    with SandboxProcess(world) as box, tempfile.TemporaryDirectory(prefix="bench-shared-") as folder:
        staging_url = f"sqlite:///{Path(folder) / 'staging.sqlite'}"
        from imocha_pipeline.staging import dispose_engine, get_engine

        get_engine(staging_url)  # tables exist before the processes race
        dispose_engine(staging_url)
        learners_list, tests = _prepare(box, writes, learners)
        rows = completion_rows(learners_list, tests, writes)
        shares = [rows[i::processes] for i in range(processes)]
        owner = {row["record_key"]: i for i, part in enumerate(shares) for row in part}
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        mark = box.last_seq()[1]
        start_at = time.time() + 20  # both are ready (imports, token) before either sends
        children = [ctx.Process(target=_child, args=(box.env, staging_url, part, f"bench-shared-{i}", start_at, out),
                                name=f"bench-writer-{i}") for i, part in enumerate(shares)]
        for child in children:
            child.start()
        outcomes = _collect(out, children)
        entries = box.degreed_requests(mark)
    failures = [o["error"] for o in outcomes if "error" in o]
    if failures:
        return [Result.failed(name, "; ".join(failures))]
    accepted, rejected = _accepted(entries)
    times = [e["ts"] for e in accepted]
    ratio = steady_ratio(times, limit)
    by_process = Counter(_owner(e, owner) for e in accepted)
    total = sum(by_process.values()) or 1
    shares_text = ", ".join(f"{by_process.get(i, 0) / total:.0%}" for i in range(processes))
    # Fairness while both were sending: shares among the requests up to the first process finishing.
    ends = sorted(max((e["ts"] for e in accepted if _owner(e, owner) == i), default=0.0) for i in range(processes))
    contended = Counter(_owner(e, owner) for e in accepted if e["ts"] <= ends[0])
    contended_total = sum(contended.values()) or 1
    contended_text = ", ".join(f"{contended.get(i, 0) / contended_total:.0%}" for i in range(processes))
    notes = [f"{len(accepted)} requests; per process {dict(sorted(by_process.items()))}, shares while both were "
             f"sending {contended_text}; busiest 60 s window {busiest_window(times)}/{limit}; one SQLite staging "
             "database (budget row and ledger) shared by both; "
             + "; ".join(f"process {i}: {o['counts']} in {o['elapsed']:.0f} s" for i, o in enumerate(outcomes))]
    met = ratio >= TARGET_SHARED and rejected == 0
    return [Result(name, f"{ratio * limit:.0f}/min combined, {rejected} x 429, shares {shares_text}",
                   f"{limit}/min allowed", ratio_text(ratio, f"target >= {TARGET_SHARED}, 0 x 429"), met, notes,
                   data={"ratio": ratio, "429": rejected, "by_process": by_process, "outcomes": outcomes})]


def _collect(out, children, timeout: float = 3600.0) -> list[dict[str, Any]]:
    """Each child's outcome; a child that died without one counts as an error instead of hanging the run."""
    import queue

    outcomes: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(outcomes) < len(children) and time.monotonic() < deadline:
        try:
            outcomes.append(out.get(timeout=5))
        except queue.Empty:
            if all(not child.is_alive() for child in children) and out.empty():
                break
    for child in children:
        child.join(30)
        if child.is_alive():
            child.kill()
    missing = len(children) - len(outcomes)
    return outcomes + [{"error": "a writer process ended without an outcome"}] * missing


def _owner(entry: dict, owner: dict[str, int]) -> int:
    try:
        attributes = json.loads(entry.get("body") or "{}")["data"]["attributes"]
        return owner.get(f"{attributes['user-id'].strip().lower()}|{attributes['content-id']}", -1)
    except (KeyError, TypeError, ValueError):
        return -1
