"""The level-triggered core on real SQLite and PostgreSQL: plan rows keep the newest attempt, the ledger refuses an
older attempt at send time, what is outstanding (and due) follows from the plan, ledger and quarantine alone,
and the catch-up schedule starts a run exactly when something is due."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest

from imocha_pipeline import staging
from imocha_pipeline.sync.catch_up import catch_up_work
from imocha_pipeline.sync.core.ledger import SUPERSEDED, Ledger, Source
from imocha_pipeline.sync.core.outstanding import NOT_DUE_ASSESSMENT, NOT_DUE_LEARNER, Scope, outstanding
from imocha_pipeline.sync.core.plan_store import stage_latest
from imocha_pipeline.sync.core.quarantine import WAITING_FOR_LEARNER, Entry, Quarantine
from imocha_pipeline.sync.entities import ATTEMPT_ENTITIES, COMPLETIONS, SKILL_RATINGS
from sync_harness import UNREACHABLE_SETTINGS, definitions_for

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DAY = T0.date()
KEY = "ana@example.com|imocha-7"


def completion_row(attempt: int, at: datetime, percentile: float, day: date = DAY, key: str = KEY,
                   action: str = "create", content: str = "imocha-7") -> dict:
    return {"record_key": key, "action": action, "reason": "not in Degreed yet", "changed_fields": [],
            "degreed_id": None, "payload_hash": f"h{attempt}-{percentile}", "user_id": key.split("|")[0],
            "user_identifier_type": "Email", "content_id": content, "content_id_type": "ExternalId",
            "content_type": "Assessment", "test_invitation_id": attempt,
            "completed_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "percentile": percentile,
            "source_id": attempt, "source_at": at, "source_day": day}


def stage(engine, *rows: dict) -> None:
    stage_latest(engine, "completion", pd.DataFrame(list(rows)), COMPLETIONS.all_fields, "run-x")


def plan_row(engine, key: str = KEY) -> dict:
    with engine.connect() as conn:
        (row,) = staging.read_rows(conn, staging.sync_plan, staging.sync_plan.c.record_key == key)
    return row


def acknowledge(engine, row: dict, degreed_id: str = "C-1") -> None:
    ledger = Ledger(engine, "completion", "run-a")
    payload = {name: row[name] for name in COMPLETIONS.all_fields}
    assert ledger.claim(row["record_key"], "create", payload, row["payload_hash"],
                        source=Source(row["source_at"], row["source_id"]))
    ledger.acknowledge(row["record_key"], degreed_id, row["payload_hash"], payload, action="create")


def add_assessment(engine, external_id: str = "imocha-7") -> None:
    with engine.begin() as conn:
        staging.upsert(conn, staging.degreed_assessments, [{
            "degreed_id": "A-" + external_id, "external_id": external_id, "obsolete": False,
            "snapshot_at": staging.utcnow()}])


@pytest.fixture
def engine(staging_url):
    return staging.get_engine(staging_url)


def test_a_plan_row_is_only_replaced_by_the_same_or_a_later_attempt(engine):
    older, newer = completion_row(11, T0, 40.0), completion_row(12, T0 + timedelta(days=3), 90.0)
    stage(engine, newer)
    stage(engine, older)  # a backfill of older days plans after the sensor's run: the newer attempt stays
    assert (plan_row(engine)["source_id"], plan_row(engine)["payload"]["percentile"]) == (12, 90.0)
    stage(engine, {**newer, "action": "unchanged", "reason": "already up to date"})  # the same attempt re-planned
    assert plan_row(engine)["action"] == "unchanged"
    same_time_higher_id = completion_row(13, newer["source_at"], 70.0)
    stage(engine, same_time_higher_id)
    assert plan_row(engine)["source_id"] == 13, "at the same time, the higher attempt id wins"
    other = completion_row(5, T0 - timedelta(days=30), 10.0, key="bo@example.com|imocha-7")
    stage(engine, other)
    assert plan_row(engine, other["record_key"])["source_id"] == 5 and plan_row(engine)["source_id"] == 13


def test_a_claim_for_an_older_attempt_than_acknowledged_or_in_flight_is_refused_as_superseded(engine):
    older, newer = completion_row(11, T0, 40.0), completion_row(12, T0 + timedelta(days=3), 90.0)
    payload = {name: older[name] for name in COMPLETIONS.all_fields}
    in_flight = Ledger(engine, "completion", "sensor-run")
    assert in_flight.claim(KEY, "create", payload, newer["payload_hash"], source=Source(newer["source_at"], 12))
    backfill = Ledger(engine, "completion", "backfill-run")
    old = Source(older["source_at"], 11)
    assert not backfill.claim(KEY, "create", payload, older["payload_hash"], source=old)
    assert backfill.refusal(KEY, older["payload_hash"], "create", old) == SUPERSEDED, "not merely held"
    in_flight.acknowledge(KEY, "C-1", newer["payload_hash"], payload)
    assert not backfill.claim(KEY, "update", payload, older["payload_hash"], source=old)
    assert backfill.refusal(KEY, older["payload_hash"], "update", old) == SUPERSEDED
    retake = Source(newer["source_at"] + timedelta(days=1), 14)
    assert backfill.claim(KEY, "update", payload, "h14", source=retake), "a later attempt goes"
    row = Ledger(engine, "completion").get(KEY)
    assert (row["source_id"], row["source_at"]) == (14, retake.at)


def test_outstanding_follows_from_plan_ledger_and_quarantine_alone(engine):
    add_assessment(engine)
    delivered = completion_row(21, T0, 50.0, key="a@example.com|imocha-7")
    failed = completion_row(22, T0, 60.0, key="b@example.com|imocha-7")
    learner = completion_row(23, T0, 70.0, key="c@example.com|imocha-7")
    no_content = completion_row(24, T0, 80.0, key="d@example.com|imocha-8", content="imocha-8")
    changed = completion_row(25, T0, 90.0, key="e@example.com|imocha-7")
    other_day = completion_row(26, T0 - timedelta(days=5), 95.0, day=DAY - timedelta(days=5),
                               key="f@example.com|imocha-7")
    stage(engine, delivered, failed, learner, no_content, changed, other_day)
    acknowledge(engine, delivered)
    acknowledge(engine, {**changed, "payload_hash": "older-values", "percentile": 10.0}, degreed_id="C-25")
    ledger = Ledger(engine, "completion", "run-b")
    assert ledger.claim(failed["record_key"], "create", {}, failed["payload_hash"])
    ledger.fail(failed["record_key"], "503 from Degreed")
    Quarantine(engine, "completion", "run-b", retry_base=timedelta(hours=1)).put(
        [Entry(learner["record_key"], WAITING_FOR_LEARNER, "learner not in Degreed yet")])

    found = outstanding(engine, COMPLETIONS, Scope(days=(DAY,)))
    due = found.due.set_index("record_key")
    assert set(due.index) == {failed["record_key"], changed["record_key"]}, "delivered and other days left out"
    assert due.loc[failed["record_key"], "action"] == "create", "a failed create is created (after a look-up)"
    assert due.loc[changed["record_key"], ["action", "degreed_id"]].tolist() == ["update", "C-25"]
    assert due.loc[changed["record_key"], "changed_fields"] == ["percentile"]
    assert found.waiting == {NOT_DUE_LEARNER: 1, NOT_DUE_ASSESSMENT: 1}
    assert set(outstanding(engine, COMPLETIONS, Scope()).due["record_key"]) == {
        failed["record_key"], changed["record_key"], other_day["record_key"]}

    later = staging.utcnow() + timedelta(hours=2)
    add_assessment(engine, "imocha-8")  # an assessment sync created it
    due_later = outstanding(engine, COMPLETIONS, Scope(days=(DAY,)), now=later).due
    assert set(due_later["record_key"]) == {failed["record_key"], changed["record_key"], learner["record_key"],
                                            no_content["record_key"]}, "waiting records are due on their own"


def test_the_catch_up_schedule_starts_a_run_exactly_when_something_is_due(engine, staging_url, instance):
    defs = definitions_for(UNREACHABLE_SETTINGS, staging_url)  # the schedule talks to neither API
    schedule = defs.resolve_schedule_def("catch_up_schedule")
    assert schedule.cron_schedule == "*/5 * * * *" and schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    def tick():
        context = dg.build_schedule_context(instance=instance, resources=defs.resources,
                                            scheduled_execution_time=datetime.now(UTC))
        return schedule.evaluate_tick(context)

    quiet = tick()
    assert quiet.run_requests == [] and "nothing outstanding is due" in quiet.skip_message
    add_assessment(engine)
    stage(engine, completion_row(31, T0, 55.0))
    assert catch_up_work(engine, ATTEMPT_ENTITIES) == {"completion_due": 1}
    (request,) = tick().run_requests
    assert request.tags["imocha_pipeline/trigger"] == "catch_up"
    assert "completion_due 1" in request.tags["imocha_pipeline/catch_up"]
    running = instance.create_run_for_job(defs.resolve_job_def("catch_up_job"))
    busy = tick()
    assert busy.run_requests == [] and running.run_id in busy.skip_message, "one catch-up run at a time"


def test_attempts_staged_but_never_planned_are_work_for_the_catch_up(engine):
    with engine.begin() as conn:
        staging.upsert(conn, staging.imocha_completions, [{
            "test_invitation_id": 41, "test_id": 7, "learner_email": "ana@example.com", "status": "Complete",
            "attempted_on": T0, "attempt_date": DAY, "score_percentage": 70.0, "has_skills": False,
            "extracted_at": T0}])
    assert catch_up_work(engine, [SKILL_RATINGS]) == {"days_to_plan": 1}, "its run died between extract and plan"
