"""Benchmarks 1 and 2: how well the Degreed rate budget is spent, by one process and by two at once.

Writes are completions sent through the real apply path (``sync.apply.apply_plan`` with the
``CompletionWriter``, the ledger and quarantine in a SQLite staging database) by a ``DegreedClient`` built
by ``DegreedResource`` (so it draws on the ``SharedRateBudget`` kept in that staging database), against
the Degreed simulator (in its own process) at the real limit, 70 requests a minute, in its sliding-window
mode: the server accepts a request only while fewer than the limit were accepted in the 60 s before it, so
no rolling minute ever holds more, and answers 429 above it.

Every figure is counted on the server, from the simulator's request log (the time it answered each request):

- **achieved / allowed** in the steady state, where the budget, not the client, sets the pace: over each run
  of ``limit`` consecutive accepted requests, the time they took, so

      achieved / allowed = 60 s / mean(t[k] - t[k - limit])      for k = limit .. n - 1

  (1.0 = the budget fully spent, whether the client sends in bursts or evenly);
- **the most requests in any rolling 60 s** (half-open windows, as the server's limiter counts them), from the
  log, and the simulator's limiter's own count of the same (``/_sandbox/rate-limit/max-in-any-minute``);
- **429s**: every API request the server refused.

By default a run sends ``6 × limit`` writes, so its requests span at least five full windows after the first
one (over five minutes of sending at 70/min); ``--quick`` sends fewer at a higher limit, a smoke run.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import Result, quiet_warnings, ratio_text
from bench.sandbox_proc import SandboxProcess
from imocha_sandbox.runtime import SandboxConfig

WINDOW = 60.0
TARGET_SINGLE = 0.97
TARGET_SHARED = 0.97
DEFAULT_LIMIT = 70  # Degreed's real limit per client id
DEFAULT_WINDOWS = 6  # writes = windows x limit: the requests span at least five full windows after the first
MIN_WINDOWS = 5


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


def default_writes(limit: int) -> int:
    """Enough writes for the requests to span at least ``MIN_WINDOWS`` full windows after the first."""
    return DEFAULT_WINDOWS * limit


def _world(writes: int, limit: int, seed: int) -> tuple[int, SandboxConfig]:
    """Enough learners and tests for ``writes`` distinct completions, all learners in Degreed."""
    learners = min(200, writes)
    return learners, SandboxConfig(seed=seed, tests=max(1, math.ceil(writes / learners)), learners=learners,
                                   attempts=0, missing_in_degreed=0, degreed_rate_limit=limit)


def _sliding(box: SandboxProcess) -> None:
    """The simulator in its sliding-window mode (no rolling minute may hold more than the limit)."""
    settings = box.degreed("PUT", "/settings", {"rate_window": "sliding"})
    if settings["rate_window"] != "sliding":
        raise RuntimeError(f"the simulator did not switch to sliding windows: {settings}")


@dataclass
class ServerCount:
    """What the server counted for one run: accepted API requests (answer times), 429s, and the limiter's own
    most-in-any-minute."""

    times: list[float]
    rejected: int
    limiter_max: int
    limit: int

    @property
    def ratio(self) -> float:
        return steady_ratio(self.times, self.limit)

    @property
    def busiest(self) -> int:
        return busiest_window(self.times)

    @property
    def span(self) -> float:
        return max(self.times) - min(self.times) if self.times else 0.0

    @property
    def windows(self) -> float:
        return self.span / WINDOW

    def met(self, target: float, min_windows: float) -> bool:
        return (self.ratio >= target and self.rejected == 0 and max(self.busiest, self.limiter_max) <= self.limit
                and self.windows >= min_windows)

    def figure(self, what: str) -> str:
        return (f"{self.ratio * self.limit:.1f}/min {what} over {self.windows:.1f} windows ({len(self.times)} "
                f"requests); most in any 60 s {self.busiest}; {self.rejected} x 429")

    def reference(self) -> str:
        return f"{self.limit}/min allowed (sliding window)"

    def ratio_text(self, target: float, min_windows: float) -> str:
        return ratio_text(self.ratio, f"target >= {target}, <= {self.limit} in any 60 s, 0 x 429, "
                                      f">= {min_windows:g} windows")

    def note(self) -> str:
        """The same run read two more ways: the limiter's own count, and the whole run against the fastest
        schedule the server allows (bursts of ``limit`` 60 s apart; this one undersells even pacing)."""
        fastest = WINDOW * (math.ceil(len(self.times) / self.limit) - 1)
        whole = fastest / self.span if self.span else math.nan
        return (f"counted on the server (simulator request log, sliding-window limiter at {self.limit}/min): "
                f"{len(self.times)} accepted API requests in {self.span:.1f} s; most in any rolling 60 s: "
                f"{self.busiest} by the log, {self.limiter_max} by the limiter; {self.rejected} x 429; "
                f"achieved = 60 s / mean time of each run of {self.limit} consecutive requests; whole run: the "
                f"fastest schedule the limit allows for {len(self.times)} requests takes {fastest:.0f} s, this "
                f"one took {self.span:.1f} s ({whole:.3f})")


def _server_count(box: SandboxProcess, mark: int, since: float, limit: int) -> ServerCount:
    accepted, rejected = _accepted(box.degreed_requests(mark))
    client_id = box.env["DEGREED_CLIENT_ID"]
    limiter = box.degreed("GET", f"/rate-limit/max-in-any-minute/{client_id}?since={since}")
    return ServerCount([e["ts"] for e in accepted], rejected, int(limiter["max_requests_in_any_minute"]), limit)


def run_single(writes: int | None = None, limit: int = DEFAULT_LIMIT, log=print,
               min_windows: float = MIN_WINDOWS) -> list[Result]:
    name = "1. write throughput"
    writes = writes or default_writes(limit)
    if writes <= limit:
        return [_too_few(name, writes, limit)]
    learners, world = _world(writes, limit, seed=21)
    log(f"[throughput] {writes} completions at {limit}/min (sliding window) through the apply path (about "
        f"{(math.ceil(writes / limit) - 1) * 61 / 60:.1f} min) ...")
    with SandboxProcess(world) as box, tempfile.TemporaryDirectory(prefix="bench-throughput-") as folder:
        _sliding(box)
        learners_list, tests = _prepare(box, writes, learners)
        rows = completion_rows(learners_list, tests, writes)
        mark, since = box.last_seq()[1], time.time()
        outcome = apply_writes(box.env, f"sqlite:///{Path(folder) / 'staging.sqlite'}", rows, "bench-single")
        count = _server_count(box, mark, since, limit)
    notes = [count.note(),
             f"apply step {outcome['counts']} in {outcome['elapsed']:.0f} s wall, {outcome['cpu']:.0f} s CPU; "
             f"budget {outcome['budget']}"]
    if outcome["errors"]:
        notes.append(f"errors: {outcome['errors']}")
    met = count.met(TARGET_SINGLE, min_windows) and len(count.times) >= writes
    return [Result(name, count.figure("achieved"), count.reference(),
                   count.ratio_text(TARGET_SINGLE, min_windows), met, notes,
                   data={"ratio": count.ratio, "429": count.rejected, "requests": len(count.times) + count.rejected,
                         "busiest": count.busiest, "limiter_max": count.limiter_max, "span": count.span,
                         "outcome": outcome})]


def run_shared(writes: int | None = None, limit: int = DEFAULT_LIMIT, processes: int = 2, log=print,
               min_windows: float = MIN_WINDOWS) -> list[Result]:
    name = "2. shared budget"
    writes = writes or default_writes(limit)
    if writes <= limit:
        return [_too_few(name, writes, limit)]
    learners, world = _world(writes, limit, seed=22)
    log(f"[shared] {processes} processes, one client id, {writes} completions in all at {limit}/min "
        "(sliding window) ...")
    with SandboxProcess(world) as box, tempfile.TemporaryDirectory(prefix="bench-shared-") as folder:
        _sliding(box)
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
        mark, since = box.last_seq()[1], time.time()
        start_at = time.time() + 20  # both are ready (imports, token) before either sends
        children = [ctx.Process(target=_child, args=(box.env, staging_url, part, f"bench-shared-{i}", start_at, out),
                                name=f"bench-writer-{i}") for i, part in enumerate(shares)]
        for child in children:
            child.start()
        outcomes = _collect(out, children)
        entries = box.degreed_requests(mark)
        count = _server_count(box, mark, since, limit)
    failures = [o["error"] for o in outcomes if "error" in o]
    if failures:
        return [Result.failed(name, "; ".join(failures))]
    accepted, _ = _accepted(entries)
    by_process = Counter(_owner(e, owner) for e in accepted)
    total = sum(by_process.values()) or 1
    shares_text = ", ".join(f"{by_process.get(i, 0) / total:.0%}" for i in range(processes))
    # Fairness while both were sending: shares among the requests up to the first process finishing.
    ends = sorted(max((e["ts"] for e in accepted if _owner(e, owner) == i), default=0.0) for i in range(processes))
    contended = Counter(_owner(e, owner) for e in accepted if e["ts"] <= ends[0])
    contended_total = sum(contended.values()) or 1
    contended_text = ", ".join(f"{contended.get(i, 0) / contended_total:.0%}" for i in range(processes))
    notes = [count.note(),
             f"per process {dict(sorted(by_process.items()))}, shares while both were sending {contended_text}; "
             "one SQLite staging database (budget row and ledger) shared by both; "
             + "; ".join(f"process {i}: {o['counts']} in {o['elapsed']:.0f} s" for i, o in enumerate(outcomes))]
    met = count.met(TARGET_SHARED, min_windows) and len(count.times) >= writes
    return [Result(name, f"{count.figure('combined')}; shares {shares_text}", count.reference(),
                   count.ratio_text(TARGET_SHARED, min_windows), met, notes,
                   data={"ratio": count.ratio, "429": count.rejected, "busiest": count.busiest,
                         "limiter_max": count.limiter_max, "span": count.span, "by_process": by_process,
                         "outcomes": outcomes})]


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
