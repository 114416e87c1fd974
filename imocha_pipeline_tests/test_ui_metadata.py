"""What the Dagster UI shows after real runs against the sandbox, read back from the Dagster instance: each
partition of a single-run backfill describes its own day (and the days add up to the run), every day the
pipeline read is materialized (a day without attempts with 0 rows), apply steps show their non-zero outcomes and
a table of the records sent and held back, staged tables carry Dagster's table metadata, a no-change plan says
"nothing to send" and points to the last plan that changed something, and the guard shows its limits."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from imocha_pipeline import staging
from imocha_pipeline.defs.metadata import NOTHING_TO_SEND, records_markdown
from sync_harness import SyncHarness

PARTITIONED = ("imocha_completions", "imocha_skill_scores", "completion_sync_plan", "completion_sync_apply")


@pytest.fixture
def harness(make_sandbox, sqlite_url, instance, monkeypatch):
    monkeypatch.setenv("IMOCHA_PIPELINE_WAITING_RETRY_SECONDS", "0")
    sandbox = make_sandbox(seed=41, tests=3, learners=14, attempts=0, degreed_rate_limit=6000)
    return SyncHarness(sandbox, sqlite_url, instance)


def day_metadata(instance: dg.DagsterInstance, asset: str, day: date) -> dict:
    """The latest materialization's metadata of one partition, as plain values."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day.isoformat()]), limit=1).records
    assert records, f"{asset} {day} is not materialized"
    return {key: value.value for key, value in records[0].asset_materialization.metadata.items()}


def latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def finish_on(h: SyncHarness, day: date, learners, tests) -> list[tuple]:
    """One finished attempt per (learner, test) at noon UTC of ``day``."""
    done = []
    for learner, test in zip(learners, tests, strict=True):
        h.sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name, bank_scores=70.0,
                                          attempted_on=datetime.combine(day, datetime.min.time(), UTC)
                                          + timedelta(hours=12))
        done.append((learner, test))
    return done


def test_each_day_of_a_single_run_backfill_describes_that_day_and_the_days_add_up_to_the_run(harness, instance):
    h = harness
    h.assessments()
    today = datetime.now(UTC).date()
    first, empty, second, third = (today - timedelta(days=n) for n in (6, 5, 4, 3))
    learners = [x for x in h.sandbox.world.learners if x.in_degreed][:6]
    tests = h.sandbox.world.tests
    attempts = {first: finish_on(h, first, learners[:1], tests[:1]),
                second: finish_on(h, second, learners[1:3], tests[:2]),
                third: finish_on(h, third, learners[3:6], tests[:3]),
                empty: []}
    result = h.completions(first.isoformat(), third.isoformat())  # one run over four days
    assert result.success

    state = h.state()
    totals = {"completion_created": 0, "skill_rating_created": 0}
    for day, done in attempts.items():
        banks = sum(len(test.banks) for _, test in done)
        extract = day_metadata(instance, "imocha_completions", day)
        assert extract["new_attempts"] == len(done) and extract["dagster/row_count"] == len(done)
        assert extract["run_days"].startswith(f"{first}..{third} (4 days")
        assert "imocha_requests_total" not in extract, "request counts belong to the run, not to one day"
        assert ("dagster/column_schema" in extract) == (day == third), "the schema once, on the latest day"
        assert day_metadata(instance, "imocha_skill_scores", day)["dagster/row_count"] == banks
        plan = day_metadata(instance, "completion_sync_plan", day)
        assert plan.get("completion_create", 0) == len(done)
        assert plan["writes_planned"] == len(done) + banks
        apply = day_metadata(instance, "completion_sync_apply", day)
        assert apply["completion_due"] == len(done) and apply["completion_failed"] == 0
        assert apply.get("completion_created", 0) == len(done)
        assert apply.get("skill_rating_created", 0) == banks
        assert "degreed_requests_total" not in apply
        for learner, _ in done:  # the day's table names its own records, not the other days'
            assert learner.email.lower() in apply["records"]
        for other, other_done in attempts.items():
            if other != day:
                assert all(x.email.lower() not in apply["records"] for x, _ in other_done)
        for key in totals:
            totals[key] += apply.get(key, 0)
        if not done:
            assert plan["summary"] == NOTHING_TO_SEND and "eta" not in plan
            assert apply["records"] == "Nothing was due: no record was sent or held back."
    assert totals == {"completion_created": len(state["completions"]),
                      "skill_rating_created": len(state["skill_ratings"])}


def test_every_day_read_is_materialized_even_without_attempts_and_days_not_read_stay_missing(harness, instance):
    h = harness
    h.assessments()
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=9), today - timedelta(days=2)
    learner, test = next(x for x in h.sandbox.world.learners if x.in_degreed), h.sandbox.world.tests[0]
    finish_on(h, start + timedelta(days=3), [learner], [test])
    assert h.completions(start.isoformat(), end.isoformat()).success
    assert h.completions(today.isoformat()).success  # a day with no attempts, read on its own
    read = {(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)} | {today.isoformat()}
    for asset in PARTITIONED:
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == read, asset
    rows = {day.isoformat(): day_metadata(instance, "imocha_completions", day)["dagster/row_count"]
            for day in (start + timedelta(days=n) for n in range(8))}
    assert rows == {d: (1 if d == (start + timedelta(days=3)).isoformat() else 0) for d in rows}
    assert day_metadata(instance, "imocha_completions", today)["dagster/row_count"] == 0


def test_a_demo_sized_history_backfill_fills_every_day_read_and_its_days_add_up(make_sandbox, sqlite_url, instance,
                                                                                monkeypatch):
    """The demo's world (default sandbox sizes) and the demo's backfill: first attempt's day to today, one run."""
    monkeypatch.setenv("IMOCHA_PIPELINE_WAITING_RETRY_SECONDS", "0")
    h = SyncHarness(make_sandbox(seed=7, degreed_rate_limit=6000), sqlite_url, instance)
    h.assessments()
    today = datetime.now(UTC).date()
    first = min(a.attempted_on.date() for a in h.sandbox.world.attempts)
    assert h.completions(first.isoformat(), today.isoformat()).success
    read = [first + timedelta(days=n) for n in range((today - first).days + 1)]
    for asset in PARTITIONED:
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {d.isoformat() for d in read}, asset
    extract = [day_metadata(instance, "imocha_completions", day) for day in read]
    assert sum(m["new_attempts"] for m in extract) == sum(m["dagster/row_count"] for m in extract) \
        == len(h.rows(staging.imocha_completions)) == len(h.sandbox.world.attempts)
    applied = [day_metadata(instance, "completion_sync_apply", day) for day in read]
    state = h.state()
    assert sum(m.get("completion_created", 0) for m in applied) == len(state["completions"])
    assert sum(m.get("skill_rating_created", 0) for m in applied) == len(state["skill_ratings"])
    # Each day's row count is that day's staged attempts; a day without any (when the world has one: it depends
    # on the hour the world is seeded) is materialized with 0 rows.
    per_day = Counter(str(r["attempt_date"])[:10] for r in h.rows(staging.imocha_completions))
    assert [m["dagster/row_count"] for m in extract] == [per_day.get(d.isoformat(), 0) for d in read]


def test_the_day_end_schedule_reads_a_quiet_day_once_so_it_shows_as_synced(harness, instance):
    from imocha_pipeline.defs.sensors import completion_day_end_schedule

    h = harness
    h.assessments()
    quiet = datetime.now(UTC).date() - timedelta(days=1)
    at = datetime.combine(quiet + timedelta(days=1), datetime.min.time(), UTC) + timedelta(minutes=30)

    def tick():
        return completion_day_end_schedule(dg.build_schedule_context(instance=instance,
                                                                     scheduled_execution_time=at))

    request = tick()
    assert isinstance(request, dg.RunRequest) and request.partition_key == quiet.isoformat()
    assert request.run_key == f"day_end:{quiet}" and request.tags["imocha_pipeline/trigger"] == "day_end"
    assert not instance.get_materialized_partitions(dg.AssetKey("imocha_completions"))
    run = h.run("completion_sync_job", partition_key=request.partition_key, tags=request.tags)
    assert run.success
    for asset in PARTITIONED:
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {quiet.isoformat()}, asset
    assert day_metadata(instance, "imocha_completions", quiet)["dagster/row_count"] == 0
    skipped = tick()
    assert isinstance(skipped, dg.SkipReason) and "already synced" in skipped.skip_message


def test_apply_metadata_shows_non_zero_outcomes_a_table_of_records_and_numeric_request_counts(harness, instance):
    h = harness
    h.assessments()
    tests = h.sandbox.world.tests
    known = [x for x in h.sandbox.world.learners if x.in_degreed][:2]
    stranger = next(x for x in h.sandbox.world.learners if not x.in_degreed)
    for learner in [*known, stranger]:
        h.sandbox.imocha.complete_attempt(tests[0].test_id, learner.email, learner.name, bank_scores=80.0)
    assert h.completions().success

    apply = latest_metadata(instance, "completion_sync_apply")
    assert apply["completion_created"] == 2 and apply["completion_failed"] == 0
    assert apply["completion_waiting_for_learner"] == 1
    assert not [key for key, value in apply.items() if isinstance(value, int | float) and not value
                and not key.endswith(("_due", "_failed"))], "zero outcomes are left out"
    assert not any(isinstance(value, dict) for value in apply.values()), "no JSON blob"
    table = apply["records"]
    assert table.startswith("| entity | record_key | day | action | outcome | detail |")
    assert table.count("| created |") == 2 + 2 * len(tests[0].banks)
    assert f"{stranger.email.lower()}\\|imocha-{tests[0].test_id}" in table and "| waiting_for_learner |" in table
    assert apply["degreed_requests POST /api/v2/completions 201"] == 2
    assert isinstance(apply["degreed_requests_total"], int)

    ledger_rows = len(h.rows(staging.sync_ledger))
    assert ledger_rows > 0
    extract = latest_metadata(instance, "imocha_completions")
    schema = extract["dagster/column_schema"]
    assert extract["dagster/row_count"] == 3 and extract["dagster/table_name"] == "imocha_completions"
    assert {c.name for c in schema.columns} == {c.name for c in staging.imocha_completions.columns}
    for asset, table_def in (("imocha_assessments", staging.imocha_assessments),
                             ("degreed_assessments", staging.degreed_assessments),
                             ("desired_assessments", staging.desired_assessments)):
        meta = latest_metadata(instance, asset)
        assert meta["dagster/table_name"] == table_def.name and meta["dagster/row_count"] == len(h.rows(table_def))
        assert [c.name for c in meta["dagster/column_schema"].columns] == [c.name for c in table_def.columns]


def test_the_records_table_is_capped_and_says_how_many_more():
    rows = [{"record_key": f"r{i}", "outcome": "created"} for i in range(57)]
    table = records_markdown(rows, ("record_key", "outcome"), limit=50).value
    assert table.count("| created |") == 50 and "... and 7 more" in table
    assert records_markdown([], ("record_key",), empty="nothing").value == "nothing"
    assert "a\\|b" in records_markdown([{"record_key": "a|b"}], ("record_key",)).value


def test_a_no_change_plan_says_nothing_to_send_and_points_to_the_last_plan_that_changed_something(harness, instance):
    h = harness
    first = h.assessments()
    changed = latest_metadata(instance, "assessment_sync_plan")
    assert changed["writes_planned"] == len(h.sandbox.world.tests) and "eta" in changed and "preview" in changed
    h.assessments()
    quiet = latest_metadata(instance, "assessment_sync_plan")
    assert quiet["writes_planned"] == 0 and quiet["summary"] == NOTHING_TO_SEND
    assert not {"eta", "eta_minutes", "preview"} & set(quiet)
    assert quiet["last_change_plan_id"] == changed["plan_id"] != quiet["plan_id"]
    assert quiet["last_change_writes"] == changed["writes_planned"]
    assert quiet["last_change_run_id"] == first.run_id and quiet["last_change_at"]

    checks = [event.dagster_event.event_specific_data for event in instance.all_logs(
        instance.get_runs(limit=1)[0].run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    guard = next(c for c in checks if c.check_name == "assessment_plan_guard")
    meta = {key: value.value for key, value in guard.metadata.items()}
    assert meta["retire_share"] == 0 and meta["retire_share_limit"] == 0.2
    assert meta["shrink_share"] == 0 and meta["shrink_share_limit"] == 0.2
    assert meta["summary"].startswith(f"Retires 0 of {len(h.sandbox.world.tests)} active assessments (0%; limit 20%)")

    today = datetime.now(UTC).date().isoformat()
    assert h.completions(today).success and h.completions(today).success
    plan = latest_metadata(instance, "completion_sync_plan")
    assert plan["summary"] == NOTHING_TO_SEND and not {"eta", "completion_preview"} & set(plan)
