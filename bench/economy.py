"""Benchmark 3: request economy of a first sync, an incremental run with 1% changes, and a no-change run.

A "run" is what the schedules and sensors start: ``assessment_sync_job`` and then ``completion_sync_job``
(the whole history as one range run for the first sync; today's partition afterwards), executed in
process against the sandbox (in its own process). Requests are counted from the simulators' request
logs; the Degreed token endpoint is not rate limited and is listed apart.

The minimum possible is computed independently of the pipeline's plan:

- Degreed: one write per record that the run created or changed in Degreed (diff of the simulator's
  state before and after, ignoring ``modified_at``) + the read pages the snapshot of our assessments
  needs (ceil(visible / 1000), at least 1). Completions and ratings are planned against the ledger: no
  reads needed.
- iMocha: the test list pages (ceil(tests / 100)) + one detail and one link list per test (the API has no
  bulk or change feed) + one Retrieve-Invites call per day of the run (the only way to learn the day an
  attempt belongs to) + one report per attempt not staged before.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import Result, quiet_warnings, ratio_text
from bench.sandbox_proc import SandboxProcess
from imocha_sandbox.runtime import SandboxConfig

DEGREED_PAGE = 1000
IMOCHA_TEST_PAGE = 100
PROVIDER_CODE = "IMOCHA"
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _state_records(state: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    records = {}
    for kind in ("assessments", "completions", "skill_ratings"):
        for record in state[kind]:
            records[(kind, record["id"])] = {k: v for k, v in record.items() if k != "modified_at"}
    return records


def writes_needed(before: dict[str, Any], after: dict[str, Any]) -> Counter:
    """Records created or changed in Degreed between two states, by kind: each needed one write."""
    old, new = _state_records(before), _state_records(after)
    needed: Counter = Counter()
    for key, record in new.items():
        if old.get(key) != record:
            needed[key[0]] += 1
    return needed


def _visible_assessments(state: dict[str, Any]) -> int:
    return sum(1 for a in state["assessments"] if a.get("provider_code") == PROVIDER_CODE)


class Scenario:
    """Runs the jobs against the sandbox and counts what they sent."""

    def __init__(self, box: SandboxProcess, folder: str):
        quiet_warnings()
        import dagster as dg

        from imocha_pipeline.definitions import build_definitions
        from imocha_pipeline.defs.resources import resources_from_settings

        self.box = box
        self.staging_url = f"sqlite:///{Path(folder) / 'staging.sqlite'}"
        self.defs = build_definitions(resources_from_settings(box.env, self.staging_url))
        home = Path(folder) / "dagster_home"
        home.mkdir()
        self._instance_cm = dg.DagsterInstance.local_temp(str(home))
        self.instance = self._instance_cm.__enter__()
        self.failures: list[str] = []

    def close(self) -> None:
        self._instance_cm.__exit__(None, None, None)
        from imocha_pipeline.staging import dispose_engine

        dispose_engine(self.staging_url)

    def run(self, label: str, completion_days: list, new_reports: int) -> dict[str, Any]:
        box = self.box
        before = box.degreed_state()
        imocha_mark, degreed_mark = box.last_seq()
        started = time.monotonic()
        jobs = [("assessment_sync_job", {}),
                ("completion_sync_job", {"partition_key": str(completion_days[0])} if len(completion_days) == 1
                 else {"tags": {"dagster/asset_partition_range_start": str(completion_days[0]),
                                "dagster/asset_partition_range_end": str(completion_days[-1])}})]
        for job_name, extra in jobs:
            result = self.defs.resolve_job_def(job_name).execute_in_process(
                instance=self.instance, raise_on_error=False, run_config=QUIET_LOGS, **extra)
            if not result.success:
                self.failures.append(f"{label}: {job_name} failed")
        elapsed = time.monotonic() - started
        after = box.degreed_state()
        degreed = box.degreed_requests(degreed_mark)
        imocha = box.imocha_requests(imocha_mark)
        tests = len(box.tests())
        api = [e for e in degreed if e["path"].startswith("/api/")]
        needed = writes_needed(before, after)
        pages = max(1, math.ceil(_visible_assessments(before) / DEGREED_PAGE))
        imocha_min = (max(1, math.ceil(tests / IMOCHA_TEST_PAGE)) + 2 * tests + len(completion_days) + new_reports)
        return {
            "label": label, "elapsed": elapsed,
            "degreed": len(api), "degreed_min": sum(needed.values()) + pages,
            "degreed_writes": sum(1 for e in api if e["method"] != "GET"),
            "degreed_reads": sum(1 for e in api if e["method"] == "GET"),
            "writes_needed": dict(needed), "read_pages": pages,
            "degreed_429": sum(1 for e in api if e["status"] == 429),
            "degreed_by_endpoint": dict(Counter(f"{e['method']} {_template(e['path'])} {e['status']}" for e in api)),
            "tokens": sum(1 for e in degreed if e["path"] == "/oauth/token"),
            "imocha": len(imocha), "imocha_min": imocha_min,
            "imocha_by_endpoint": dict(Counter(f"{e['method']} {_template(e['path'])}" for e in imocha)),
        }


def _template(path: str) -> str:
    return "/".join("{id}" if part and (part[0].isdigit() or (len(part) >= 6 and any(c.isdigit() for c in part)))
                    else part for part in path.split("/"))


def run(tests: int = 250, learners: int = 200, attempts: int = 400, change_share: float = 0.01,
        log=print) -> list[Result]:
    world = SandboxConfig(seed=3, tests=tests, learners=learners, attempts=attempts, missing_in_degreed=0,
                          degreed_rate_limit=100_000)
    log(f"[economy] sandbox: {tests} tests, {learners} learners, {attempts} finished attempts ...")
    with SandboxProcess(world) as box, tempfile.TemporaryDirectory(prefix="bench-economy-") as folder:
        scenario = Scenario(box, folder)
        try:
            today = datetime.now(UTC).date()
            first_day = min(datetime.fromisoformat(a["attempted_on"]).date() for a in box.info["attempts"])
            days = [first_day.fromordinal(d) for d in range(first_day.toordinal(), today.toordinal() + 1)]
            log(f"[economy] first sync ({len(days)} days of history) ...")
            first = scenario.run("first sync", days, new_reports=len(box.info["attempts"]))

            rng = random.Random(17)
            changed_tests = max(1, round(tests * change_share))
            for test in rng.sample(box.tests(), changed_tests):
                box.imocha("PATCH", f"/tests/{test['test_id']}", {"name": f"{test['name']} (2026 edition)"})
            new_attempts = max(1, round(attempts * change_share))
            learners_in = box.learners()
            for _ in range(new_attempts):
                learner, test = rng.choice(learners_in), rng.choice(box.tests())
                box.complete_attempt(test["test_id"], learner["email"], learner["name"],
                                     bank_scores=rng.uniform(30, 95))
            time.sleep(1.1)  # the attempts' finish times are whole seconds before "now"
            log(f"[economy] incremental run ({changed_tests} tests renamed, {new_attempts} new attempts) ...")
            incremental = scenario.run("incremental 1%", [today], new_reports=new_attempts)
            log("[economy] no-change run ...")
            unchanged = scenario.run("no change", [today], new_reports=0)
        finally:
            scenario.close()
    results = [_row(first, target=None), _row(incremental, target=True), _row(unchanged, target=True)]
    if scenario.failures:
        results[-1].notes.append("job failures: " + "; ".join(scenario.failures))
        for result in results:
            result.met = False if result.met is not None else None
    return results


def _row(m: dict[str, Any], target: bool | None) -> Result:
    total, minimum = m["degreed"] + m["imocha"], m["degreed_min"] + m["imocha_min"]
    ratio = total / minimum if minimum else math.nan
    equal = m["degreed"] == m["degreed_min"] and m["imocha"] == m["imocha_min"] and m["degreed_429"] == 0
    figure = f"Degreed {m['degreed']} + iMocha {m['imocha']} requests"
    reference = f"min {m['degreed_min']} + {m['imocha_min']}"
    writes = ", ".join(f"{v} {k}" for k, v in sorted(m["writes_needed"].items())) or "none"
    notes = [f"Degreed {m['degreed_writes']} writes + {m['degreed_reads']} reads (needed: {writes}; "
             f"{m['read_pages']} snapshot page(s)), {m['degreed_429']} x 429, {m['tokens']} token requests "
             f"(not rate limited, not counted); {m['elapsed']:.0f} s"]
    if not equal:
        notes.append(f"by endpoint: Degreed {m['degreed_by_endpoint']}; iMocha {m['imocha_by_endpoint']}")
    return Result(f"3. economy: {m['label']}", figure, reference,
                  ratio_text(ratio, "target = 1.00" if target else "min = 1.00"),
                  equal if target else None, notes, data=m)
