"""Retention (``retention_job``, IMOCHA_PIPELINE_RETENTION_DAYS): real Dagster runs on SQLite and PostgreSQL remove
exactly the old rows nothing needs, keep the ledger and what is still to send, and nothing is sent twice after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from imocha_pipeline import staging
from imocha_pipeline.settings import IMOCHA_PIPELINE_RETENTION_DAYS, InvalidSettingError
from imocha_pipeline.sync.core.outstanding import OUTSTANDING_ACTIONS
from sync_harness import UNREACHABLE_SETTINGS, SyncHarness, definitions_for

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=100)  # beyond a 30-day limit
RECENT = NOW - timedelta(days=2)  # inside it
TABLES = ("sync_plan", "sync_quarantine", "sync_drift", "callback_inbox")


def _run(defs, instance, dry_run: bool = False):
    config = {"ops": {"apply_staging_retention": {"config": {"dry_run": dry_run}}}}
    return defs.resolve_job_def("retention_job").execute_in_process(instance=instance, run_config=config,
                                                                     raise_on_error=False)


def _removed(result) -> dict[str, int]:
    """The per-table counts the run reports in its output's metadata."""
    for event in result.all_events:
        if event.step_key == "apply_staging_retention" and event.event_type_value == "STEP_OUTPUT":
            metadata = event.event_specific_data.metadata
            return {table: metadata[f"removed.{table}"].value for table in TABLES}
    raise AssertionError("no output event")


def _side_rows(engine) -> None:
    """Quarantine, drift and callback rows old and recent, open and closed (their timestamps set directly)."""
    quarantine = [dict(entity="completion", record_key=key, kind="validation", reason="r", status=status,
                       attempts=1, first_seen_at=at, last_seen_at=at, resolved_at=at if status == "resolved" else None)
                  for key, status, at in (("q-old-resolved", "resolved", OLD),
                                          ("q-recent-resolved", "resolved", RECENT), ("q-old-open", "open", OLD))]
    drift = [dict(entity="completion", record_key=key, kind="missing_in_degreed", repaired=False, found_at=at)
             for key, at in (("d-old", OLD), ("d-recent", RECENT))]
    inbox = [dict(id=i, test_invitation_id=1000 + i, status="Complete", payload={"CandidateEmail": f"c{i}@x.org"},
                  received_at=received, processed_at=processed)
             for i, received, processed in ((1, OLD, OLD), (2, OLD, None), (3, RECENT, RECENT))]
    with engine.begin() as conn:
        conn.execute(staging.sync_quarantine.insert(), quarantine)
        conn.execute(staging.sync_drift.insert(), drift)
        conn.execute(staging.callback_inbox.insert(), inbox)


def _snapshot(h: SyncHarness) -> dict:
    return {
        "plan": {(r["entity"], r["record_key"]): r for r in h.rows(staging.sync_plan)},
        "ledger": sorted((r["entity"], r["record_key"], r["state"], r["payload_hash"], r["degreed_id"])
                         for r in h.rows(staging.sync_ledger)),
        "quarantine": {r["record_key"] for r in h.rows(staging.sync_quarantine)},
        "drift": {r["record_key"] for r in h.rows(staging.sync_drift)},
        "bodies": {r["id"]: r["payload"] is not None for r in h.rows(staging.callback_inbox)},
    }


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox(seed=33, tests=2, learners=6, attempts=0, missing_in_degreed=1, degreed_rate_limit=6000)


def test_retention_removes_exactly_what_nothing_needs_and_nothing_is_sent_again(sandbox, staging_url, instance,
                                                                                 monkeypatch):
    h = SyncHarness(sandbox, staging_url, instance)
    engine = staging.get_engine(staging_url)
    h.assessments()
    test = sandbox.world.tests[0]
    known = [learner for learner in sandbox.world.learners if learner.in_degreed]
    missing = h.learner(in_degreed=False)
    old_start = OLD.replace(hour=9, minute=0, second=0, microsecond=0)
    imocha = sandbox.imocha
    imocha.complete_attempt(test.test_id, known[0].email, known[0].name, bank_scores=80.0, attempted_on=old_start)
    imocha.complete_attempt(test.test_id, known[1].email, known[1].name, status="Test Left", attempted_on=old_start)
    imocha.complete_attempt(test.test_id, missing.email, missing.name, bank_scores=70.0, attempted_on=old_start)
    imocha.complete_attempt(test.test_id, known[2].email, known[2].name, bank_scores=60.0)
    old_day = old_start.date()
    assert h.completions(old_day.isoformat()).success
    assert h.completions().success
    assert h.writes()  # the first runs sent completions and ratings
    sent_before = sandbox.degreed.log.last_seq

    # The old day's plan rows planned (and delivered) 100 days ago; one skill rating of known[0] made a stale plan
    # of an earlier attempt than the one Degreed acknowledged (superseded: the ledger holds a later attempt).
    plan = staging.sync_plan
    superseded_key = next(key for entity, key in _snapshot(h)["plan"]
                          if entity == "skill_rating" and key.startswith(known[0].email.lower()))
    with engine.begin() as conn:
        conn.execute(plan.update().where(plan.c.source_day == old_day).values(planned_at=OLD))
        conn.execute(plan.update().where(plan.c.source_day == old_day, plan.c.delivered_at.is_not(None))
                     .values(delivered_at=OLD))
        conn.execute(plan.update().where(plan.c.entity == "skill_rating", plan.c.record_key == superseded_key)
                     .values(action="update", payload_hash="stale", delivered_at=None,
                             source_at=old_start - timedelta(hours=1)))
    _side_rows(engine)
    before = _snapshot(h)

    old_keys = {key for key, row in before["plan"].items() if row["source_day"] == old_day}
    outstanding_old = {key for key in old_keys if key[1].startswith(missing.email.lower())}
    assert outstanding_old and all(before["plan"][key]["action"] in OUTSTANDING_ACTIONS for key in outstanding_old)
    assert ("skill_rating", superseded_key) in old_keys
    assert any(before["plan"][key]["action"] == "skip" for key in old_keys)  # the Test Left attempt
    expected_plan_removed = old_keys - outstanding_old

    monkeypatch.setenv("IMOCHA_PIPELINE_RETENTION_DAYS", "30")
    expected = {"sync_plan": len(expected_plan_removed), "sync_quarantine": 1, "sync_drift": 1, "callback_inbox": 1}

    dry = _run(h.defs, instance, dry_run=True)
    assert dry.success
    assert _removed(dry) == expected
    assert _snapshot(h) == before  # a dry run only counts

    result = _run(h.defs, instance)
    assert result.success
    assert _removed(result) == expected
    after = _snapshot(h)
    assert set(before["plan"]) - set(after["plan"]) == expected_plan_removed
    assert set(after["plan"]) == set(before["plan"]) - expected_plan_removed  # outstanding and recent rows stay
    assert after["ledger"] == before["ledger"]  # the ledger is kept whole
    assert after["quarantine"] == {"q-recent-resolved", "q-old-open"} | (before["quarantine"] - {
        "q-old-resolved", "q-recent-resolved", "q-old-open"})
    assert after["drift"] == {"d-recent"}
    assert after["bodies"] == {1: False, 2: True, 3: True}  # only the old processed callback's body goes
    assert {r["id"] for r in h.rows(staging.callback_inbox)} == {1, 2, 3}  # the rows themselves stay

    # A second pass finds nothing more; the re-runs of both days and a catch-up send nothing again.
    assert _removed(_run(h.defs, instance)) == dict.fromkeys(TABLES, 0)
    assert h.completions(old_day.isoformat()).success
    assert h.completions().success
    assert h.catch_up().success
    assert h.writes(sent_before) == []


def test_unset_keeps_everything_and_an_invalid_value_names_the_setting(staging_url, instance, monkeypatch):
    engine = staging.get_engine(staging_url)
    _side_rows(engine)
    plan_row = dict(entity="completion", record_key="a@x.org|imocha-1", action="unchanged", payload_hash="h",
                    planned_at=NOW - timedelta(days=3000), delivered_at=NOW - timedelta(days=3000))
    with engine.begin() as conn:
        conn.execute(staging.sync_plan.insert(), [plan_row])
    defs = definitions_for(UNREACHABLE_SETTINGS, staging_url)

    def counts():
        with engine.connect() as conn:
            return {table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                    for table in (staging.sync_plan, staging.sync_quarantine, staging.sync_drift)} | {
                "bodies": conn.execute(sa.select(sa.func.count()).select_from(staging.callback_inbox)
                                       .where(staging.callback_inbox.c.payload.is_not(None))).scalar_one()}

    monkeypatch.delenv("IMOCHA_PIPELINE_RETENTION_DAYS", raising=False)
    before = counts()
    result = _run(defs, instance)
    assert result.success
    assert _removed(result) == dict.fromkeys(TABLES, 0)
    assert counts() == before == {"sync_plan": 1, "sync_quarantine": 3, "sync_drift": 2, "bodies": 3}

    for bad in ("0", "-5", "1.5", "a month"):
        monkeypatch.setenv("IMOCHA_PIPELINE_RETENTION_DAYS", bad)
        with pytest.raises(InvalidSettingError) as raised:
            IMOCHA_PIPELINE_RETENTION_DAYS.value()
        assert str(raised.value) == (f"setting IMOCHA_PIPELINE_RETENTION_DAYS must be a whole number of at least 1, "
                                     f"got {bad!r}")
        failed = _run(defs, instance)
        assert not failed.success
        failure = next(e for e in failed.all_events if e.is_step_failure)
        assert failure.step_failure_data.user_failure_data.description == str(raised.value)
    assert counts() == before  # a refused value removes nothing
