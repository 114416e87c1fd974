"""Convergence drills (issue 11): what Dagster and ordinary operations do to runs, with no person re-running a
partition afterwards. Each ends by comparing Degreed with the truth computed from iMocha (``Drill.compare``).

10. Dagster's run retry (re-execution from the failed step, a new run id) after a Degreed outage on completion
    writes, then on skill-rating writes; the failed run is red, naming what was not delivered.
11. A retake finishing while a backfill of older days is between plan and apply, in both orders, with other
    scores: the newest attempt is what Degreed holds, completions and skill ratings alike.
12. The polling sensor with a run that fails before staging, a report iMocha keeps preparing for a while, and
    attempts longer than the re-read overlap under ``attempt_window_field="started"``.
13. Records of past days that waited for their assessment, and ledger rows left ``failed``: sent by the catch-up
    schedule, with no partition run.
14. A blocked assessment plan: "Materialize selected" on the apply step alone, the job launched again and a
    Dagster retry each write nothing until a person confirms.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from imocha_drills import dagster_runs
from imocha_drills.gate import GateRule
from imocha_drills.harness import Drill, history_tags, processed_creates, today_tags
from imocha_drills.outcome import DrillOutcome
from imocha_drills.scenarios import finish_today
from imocha_sandbox.server import FaultConfig

WRITES = ("POST", "PATCH", "PUT", "DELETE")


def degreed_writes(drill: Drill, since: int, prefix: str = "/api/") -> list:
    return [e for e in drill.sandbox.degreed.log.entries(since) if e.method in WRITES and e.path.startswith(prefix)]


# ---------------------------------------------------------------------------------------------------------
# Drill 10: Dagster's run retry after a Degreed outage


def drill_run_retry(drill: Drill, outage_path: str = "/api/v2/completions") -> DrillOutcome:
    """Degreed answers 503 to every write under ``outage_path`` while the history backfill runs: the run ends red,
    naming the writes that failed. The outage ends; Dagster re-executes the run from the failed step under a new
    run id (what run retries do); the retry sends everything that was outstanding."""
    assert drill.run("assessment_sync_job").success
    drill.sandbox.degreed.faults.set(FaultConfig(error_5xx_share=1.0, retry_after_seconds=0, path_prefix=outage_path,
                                                 methods=["POST", "PATCH"]))
    try:
        failed = dagster_runs.execute(drill, "completion_sync_job", tags=history_tags(drill.size.history_days))
    finally:
        drill.sandbox.degreed.faults.clear()
    mark = drill.sandbox.degreed.log.last_seq
    retried = dagster_runs.execute(drill, "completion_sync_job", retry_of=failed.run_id)
    comparison = drill.compare()
    creates = processed_creates(drill.sandbox)
    outcome = DrillOutcome(f"10 run retry after a Degreed outage ({outage_path.rsplit('/', 1)[-1]})", comparison)
    outcome.facts = {
        "failed_run_red": not failed.success, "failures": failed.failures,
        "retry_succeeded": retried.success, "retry_is_new_run": retried.run_id != failed.run_id,
        "retry_parent": retried.parent_run_id == failed.run_id,
        "retry_steps": retried.materialized, "writes_in_retry": len(degreed_writes(drill, mark)),
        "created_twice": [key for key, count in creates.items() if count > 1],
    }
    outcome.ok = (not failed.success and retried.success and outcome.facts["retry_is_new_run"]
                  and outcome.facts["retry_parent"] and outcome.facts["writes_in_retry"] > 0
                  and "imocha_completions" not in retried.materialized and not outcome.facts["created_twice"])
    return outcome


# ---------------------------------------------------------------------------------------------------------
# Drill 11: a retake while a backfill of older days is between plan and apply


def _retake_candidate(drill: Drill):
    """The learner (in Degreed) whose latest attempt of a test is oldest-but-one in the history, and that test."""
    sim = drill.sandbox.imocha
    known = {x.email.lower() for x in drill.sandbox.world.learners if x.in_degreed}
    latest: dict[tuple[str, int], tuple] = {}
    for inv in sim.invitations.values():
        if inv.status == "Complete" and inv.email.lower() in known:
            key = (inv.email, inv.test_id)
            if key not in latest or latest[key][0] < inv.completed_at:
                latest[key] = (inv.completed_at, inv)
    # The record sorted last is sent last: the retake lands while the backfill is still busy with others.
    email, test_id = max(latest, key=lambda key: (key[0].lower(), key[1]))
    learner = next(x for x in drill.sandbox.world.learners if x.email == email)
    return learner, next(t for t in drill.sandbox.world.tests if t.test_id == test_id), latest[(email, test_id)][1]


def _other_scores(test, old) -> dict[int, float]:
    """Bank scores that give every skill another level than ``old`` had."""
    scores = {}
    for bank in test.banks:
        before = (old.bank_scores or {}).get(bank.qb_id, 0.0) / bank.max_score if bank.max_score else 0.0
        scores[bank.qb_id] = round(bank.max_score * (0.05 if before > 0.5 else 0.95), 2)
    return scores


def _hold_until_paused(gate, child, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.process.is_alive():
        if gate.wait(0.05):
            return True
    return False


RETAKE_ORDERS = ("backfill-holds-completions", "backfill-holds-ratings", "today-holds")


def drill_retake_during_backfill(drill: Drill, order: str, timeout: float = 180) -> DrillOutcome:
    """A learner retakes a test while the history backfill runs, in one of three orders (each on a fresh world):

    - ``backfill-holds-completions``: the backfill has loaded what to send and holds its first completion write;
      the retake finishes and today's run sends it; the backfill goes on with the old attempt in hand;
    - ``backfill-holds-ratings``: the same, the backfill holding its first skill-rating write (its completions,
      the old attempt's among them, are out);
    - ``today-holds``: today's run has planned the retake and holds its first write; a backfill of the older
      days plans and applies meanwhile; today's run goes on.
    Degreed must end with the retake's score and skill levels (other than the old attempt's).
    """
    drill.env["IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS"] = "120"  # a held write is not a lost one
    gate = drill.sandbox.degreed_gate
    assert drill.run("assessment_sync_job").success
    learner, test, old = _retake_candidate(drill)

    def retake() -> int:
        return drill.sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name,
                                                     bank_scores=_other_scores(test, old), time_taken_seconds=60)

    if order in RETAKE_ORDERS[:2]:
        prefix = "/api/v2/completions" if order == RETAKE_ORDERS[0] else "/api/v2/skill-ratings"
        gate.arm(GateRule(nth=1, when="before", methods=frozenset({"POST"}), path_prefix=prefix, hold=True,
                          resume=True))
        backfill = drill.start_child("completion_sync_job", history_tags(drill.size.history_days))
        paused = _hold_until_paused(gate, backfill, timeout)
        invitation = retake()
        today = drill.start_child("completion_sync_job", today_tags()).wait(timeout)
        gate.release()
        backfilled = backfill.wait(timeout)
        runs = {"today": today.get("success"), "backfill": backfilled.get("success")}
    else:
        invitation = retake()
        gate.arm(GateRule(nth=1, when="before", methods=frozenset({"POST", "PATCH"}), path_prefix="/api/v2/",
                          hold=True, resume=True))
        today = drill.start_child("completion_sync_job", today_tags())
        paused = _hold_until_paused(gate, today, timeout)
        yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
        older = {**history_tags(drill.size.history_days), "dagster/asset_partition_range_end": yesterday}
        older_run = drill.run("completion_sync_job", older)
        gate.release()
        runs = {"today": today.wait(timeout).get("success"), "backfill": older_run.success}
    gate.disarm()
    comparison = drill.compare()
    state = drill.sandbox.degreed.state()
    held = [c for c in state["completions"] if c["user_email"].lower() == learner.email.lower()
            and c["content_external_id"] == f"imocha-{test.test_id}"]
    report = drill.sandbox.imocha.report(invitation, report_type=3)
    outcome = DrillOutcome(f"11 retake during a backfill ({order})", comparison)
    outcome.facts = {"order": order, "learner": learner.email, "test": test.test_id, "paused": paused, "runs": runs,
                     "degreed_percentile": held[0]["percentile"] if len(held) == 1 else [c["percentile"] for c in held],
                     "retake_percentile": float(report["scorePercentage"]),
                     "old_percentile": float(drill.sandbox.imocha.report(old.test_invitation_id, 3)["scorePercentage"])}
    outcome.ok = (paused and all(runs.values())
                  and outcome.facts["degreed_percentile"] == outcome.facts["retake_percentile"]
                  != outcome.facts["old_percentile"])
    return outcome


# ---------------------------------------------------------------------------------------------------------
# Drill 12: the polling sensor forgets nothing


POLL_ENV = {"IMOCHA_PIPELINE_POLL_RETRY_SECONDS": "1", "IMOCHA_PIPELINE_POLL_RETRY_MAX_SECONDS": "4"}


def _set_env(drill: Drill, values: dict[str, str]) -> None:
    import os

    for name, value in values.items():
        drill.env[name] = value
        os.environ[name] = value


def drill_sensor_forgets_nothing(drill: Drill, report_delay: float = 6.0, long_minutes: int = 90,
                                 fresh: int = 3, max_ticks: int = 90) -> DrillOutcome:
    """The real imocha_completions_sensor, ticked on the drill's Dagster instance, its runs executed in turn:

    a. ``fresh`` attempts whose run fails before staging anything (iMocha answers 503 to every report read);
    b. attempts whose report iMocha keeps preparing for ``report_delay`` seconds (404, then the report);
    c. with Retrieve Invites filtering on the start time, attempts that ran ``long_minutes`` (longer than the
       re-read overlap) and finished after the previous tick.
    Ticks go on (about a second apart, the retry back-off set to 1 s) until Degreed equals the truth.
    """
    _set_env(drill, POLL_ENV)
    sim = drill.sandbox.imocha
    results = [drill.run("assessment_sync_job"), drill.run_completions()]
    tick = dagster_runs.sensor_tick(drill, "imocha_completions_sensor", None)
    results += dagster_runs.run_requests(drill, tick)
    cursor = tick.cursor
    keys: list[str] = []

    # a. the run of the new attempts fails before it stages anything
    finish_today(drill, fresh)
    time.sleep(1.1)  # a tick reads up to the current whole second
    sim.faults.set(FaultConfig(error_5xx_share=1.0, retry_after_seconds=0, path_prefix="/v3/reports"))
    tick = dagster_runs.sensor_tick(drill, "imocha_completions_sensor", cursor)
    failed = dagster_runs.run_requests(drill, tick)
    sim.faults.clear()
    cursor = tick.cursor
    keys += [r.run_key for r in tick.run_requests]

    # b. reports not ready yet; c. long attempts listed under their start
    sim.configure(report_ready_delay_seconds=report_delay)
    finish_today(drill, 2, offset=fresh)
    sim.configure(attempt_window_field="started")
    now = datetime.now(UTC).replace(microsecond=0)
    learners = [x for x in drill.sandbox.world.learners if x.in_degreed]
    long_ones = [sim.complete_attempt(drill.sandbox.world.tests[i % len(drill.sandbox.world.tests)].test_id,
                                      learners[-1 - i].email, learners[-1 - i].name, bank_scores=61.0 + i,
                                      attempted_on=now - timedelta(minutes=long_minutes),
                                      time_taken_seconds=long_minutes * 60) for i in range(2)]
    ticks, runs = 0, []
    comparison = drill.compare()
    while ticks < max_ticks and not comparison.exact:
        ticks += 1
        time.sleep(1.0)
        tick = dagster_runs.sensor_tick(drill, "imocha_completions_sensor", cursor)
        cursor = tick.cursor
        keys += [r.run_key for r in tick.run_requests]
        runs += dagster_runs.run_requests(drill, tick)
        comparison = drill.compare()
    sim.configure(report_ready_delay_seconds=0, attempt_window_field="completed")
    outcome = DrillOutcome("12 sensor: failed run, report not ready, long attempts", comparison)
    outcome.facts = {
        "failed_run_red": bool(failed) and not any(r.success for r in failed),
        "ticks": ticks, "runs": len(runs), "runs_succeeded": sum(1 for r in runs if r.success),
        "run_keys_unique": len(keys) == len(set(keys)), "long_attempts": long_ones,
        "reports_not_ready": sum(1 for e in sim.log.entries() if e.path.startswith("/v3/reports") and e.status == 404),
        "setup_runs": [r.success for r in results],
    }
    outcome.ok = (outcome.facts["failed_run_red"] and outcome.facts["run_keys_unique"] and all(results)
                  and outcome.facts["reports_not_ready"] >= 1)
    return outcome


# ---------------------------------------------------------------------------------------------------------
# Drill 13: waiting and failed records of past days converge with no partition run


def drill_catch_up(drill: Drill, refusals: int = 30) -> DrillOutcome:
    """A test has no active link at first (its completions wait for their assessment) and Degreed refuses the
    first completion writes of the history backfill (five in a row stop it; their ledger rows end ``failed``, the
    rest were never tried; the run is red). The link comes back; the hourly assessment sync creates the
    assessment; the catch-up schedule's next tick sends everything outstanding, and the tick after that finds
    nothing due (learners Degreed does not know wait for their retry time, an hour here). No completion_sync_job
    run after the backfill."""
    _set_env(drill, {"IMOCHA_PIPELINE_WAITING_RETRY_SECONDS": "3600"})
    sim = drill.sandbox.imocha
    held = drill.sandbox.world.tests[0]
    for link in list(sim.tests[held.test_id].links):
        sim.deactivate_test_link(held.test_id, link.test_link_id)
    assert drill.run("assessment_sync_job").success
    drill.sandbox.degreed.faults.set(FaultConfig(error_5xx_next=refusals, retry_after_seconds=0,
                                                 path_prefix="/api/v2/completions", methods=["POST"]))
    backfill = drill.run_completions()
    drill.sandbox.degreed.faults.clear()
    ledger = drill.ledger()
    failed = sorted(r["record_key"] for r in ledger if r["state"] == "failed" and r["entity"] == "completion")
    waiting = sorted(q["record_key"] for q in drill.quarantine()
                     if q["status"] == "open" and q["kind"] == "waiting_for_assessment")
    sim.add_test_link(held.test_id)
    assessments = drill.run("assessment_sync_job")
    partition_runs_before = sum(1 for r in drill.results if r.dagster_run.job_name == "completion_sync_job")
    catch_up = dagster_runs.catch_up_tick(drill)
    quiet = dagster_runs.catch_up_tick(drill)
    partition_runs_after = sum(1 for r in drill.results if r.dagster_run.job_name == "completion_sync_job")
    outcome = DrillOutcome("13 past-day waiting and failed rows converge", drill.compare())
    outcome.facts = {
        "backfill_red": not backfill.success, "failed_rows": len(failed), "waiting_for_assessment": len(waiting),
        "assessment_sync": assessments.success, "catch_up_ran": catch_up is not None,
        "catch_up_succeeded": bool(catch_up and catch_up.success), "next_tick_skipped": quiet is None,
        "partition_runs_after_backfill": partition_runs_after - partition_runs_before,
    }
    outcome.ok = (not backfill.success and failed and waiting and assessments.success
                  and outcome.facts["catch_up_succeeded"] and quiet is None
                  and partition_runs_after == partition_runs_before)
    return outcome


# ---------------------------------------------------------------------------------------------------------
# Drill 14: a blocked assessment plan stays blocked, however its apply step is started


CONFIRM = {"ops": {"assessment_sync_plan": {"config": {"confirm_large_changes": True}}}}


def drill_blocked_plan(drill: Drill, remove_share: float = 0.5) -> DrillOutcome:
    """Half the tests disappear from iMocha: the plan (mass retirement, a shrunken extract) is blocked. Then, as
    people and Dagster would: the apply step materialized alone ("Materialize selected"), the job launched again,
    a Dagster retry of that run. Degreed sees no write from any of them. A person confirms: the retirements go."""
    sim = drill.sandbox.imocha
    first = dagster_runs.execute(drill, "assessment_sync_job")
    removed = sorted(sim.tests)[: max(1, int(len(sim.tests) * remove_share))]
    for test_id in removed:
        sim.remove_test(test_id)
    mark = drill.sandbox.degreed.log.last_seq
    blocked = dagster_runs.execute(drill, "assessment_sync_job")
    alone = dagster_runs.execute(drill, "assessment_sync_job", asset_selection=["assessment_sync_apply"])
    again = dagster_runs.execute(drill, "assessment_sync_job")
    retry = dagster_runs.execute(drill, "assessment_sync_job", retry_of=again.run_id)
    writes_while_blocked = degreed_writes(drill, mark)
    confirmed = dagster_runs.execute(drill, "assessment_sync_job", run_config=CONFIRM)
    after = dagster_runs.execute(drill, "assessment_sync_job")
    outcome = DrillOutcome("14 blocked plan: apply alone, re-run, retry", drill.compare())
    outcome.facts = {
        "first": first.success, "blocked_red": not blocked.success, "apply_alone_red": not alone.success,
        "apply_alone_says_blocked": any("was blocked by assessment_plan_guard" in f for f in alone.failures),
        "again_blocked": not again.success, "retry_red": not retry.success, "retry_parent": retry.parent_run_id,
        "writes_while_blocked": [f"{e.method} {e.path}" for e in writes_while_blocked],
        "confirmed": confirmed.success, "after_confirm": after.success, "removed": len(removed),
        "retired": sum(1 for a in drill.sandbox.degreed.state()["assessments"] if a.get("obsolete")),
    }
    outcome.ok = (first.success and not blocked.success and not alone.success
                  and outcome.facts["apply_alone_says_blocked"] and not again.success and not retry.success
                  and retry.parent_run_id == again.run_id and not writes_while_blocked
                  and confirmed.success and after.success and outcome.facts["retired"] == len(removed))
    return outcome
