"""The completions polling sensor: cursor, look-back, overlap, per-tick cap and de-duplication, against the
iMocha sandbox over loopback HTTP and a real staging database."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from imocha_pipeline.clients.imocha import ImochaClient
from imocha_pipeline.defs.resources import ImochaResource, StagingDatabaseResource
from imocha_pipeline.defs.sensors import TRIGGER_TAG, imocha_completions_sensor
from imocha_pipeline.sandbox.runtime import SANDBOX_IMOCHA_API_KEY, Sandbox, SandboxConfig
from imocha_pipeline.sync import staging
from imocha_pipeline.sync.completion_sensor import (
    PollCursor,
    PollSettings,
    UnfinishedRun,
    parse_cursor,
    poll_completions,
    run_key_for,
)
from imocha_pipeline_tests.test_callbacks import queued_run, report

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
LOOKBACK = timedelta(days=2)
ATTEMPTS_PATH = "/v3/candidates/testattempts"


@pytest.fixture
def sandbox():
    box = Sandbox(SandboxConfig(seed=3, tests=3, learners=4, attempts=0)).start()
    yield box
    box.stop()


@pytest.fixture
def client(sandbox):
    with ImochaClient(sandbox.imocha_url, SANDBOX_IMOCHA_API_KEY) as imocha:
        yield imocha


def finish(sandbox: Sandbox, completed_at: datetime, count: int = 1, spacing: timedelta = timedelta(0)) -> list[int]:
    """Attempts that iMocha lists as finished at ``completed_at`` (then every ``spacing`` earlier)."""
    test_id = sandbox.world.tests[0].test_id
    ids = []
    for n in range(count):
        done = completed_at - spacing * n
        ids.append(sandbox.imocha.complete_attempt(test_id, f"learner{len(sandbox.imocha.invitations)}@example.com",
                                                   "Learner", attempted_on=done - timedelta(minutes=10),
                                                   time_taken_seconds=600))
    return ids


def stage(engine, ids: list[int], day: date) -> None:
    rows = [{"test_invitation_id": i, "attempt_date": day, "extracted_at": staging.utcnow()} for i in ids]
    with engine.begin() as conn:
        staging.upsert(conn, staging.imocha_completions, rows)


def requested(outcome) -> dict[int, str]:
    """Every requested attempt with its partition; fails if one is requested twice in a tick."""
    found: dict[int, str] = {}
    for request in outcome.requests:
        for invitation_id in request.invitation_ids:
            assert invitation_id not in found, f"{invitation_id} requested twice"
            found[invitation_id] = request.partition_key
    return found


# ---------------------------------------------------------------- cursor


def test_cursor_round_trips_through_json():
    cursor = PollCursor(until=NOW - timedelta(minutes=3), pending={42: date(2026, 11, 27), 7: date(2026, 11, 28)})
    text = cursor.to_json()
    assert json.loads(text) == {"v": 1, "until": "2026-11-28T01:57:00Z",
                                "pending": {"7": "2026-11-28", "42": "2026-11-27"}}
    state = parse_cursor(text, NOW, LOOKBACK)
    assert state.restart_reason is None and state.cursor == cursor

    left = PollCursor(until=NOW, waiting={9: (date(2026, 11, 28), NOW - timedelta(minutes=1))})
    assert json.loads(left.to_json())["waiting"] == {"9": ["2026-11-28", "2026-11-28T01:59:00Z"]}
    assert parse_cursor(left.to_json(), NOW, LOOKBACK).cursor == left


@pytest.mark.parametrize(("text", "reason"), [
    (None, "no cursor yet"),
    ("", "no cursor yet"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"v": 2, "until": "2026-11-28T01:00:00Z", "pending": {}}', "version 2"),
    ('{"until": "2026-11-28T01:00:00Z"}', "version None"),
    ('{"v": 1, "pending": {}}', "'until'"),
    ('{"v": 1, "until": "last tuesday", "pending": {}}', "'until'"),
    ('{"v": 1, "until": 1764288000, "pending": {}}', "'until'"),
    ('{"v": 1, "until": "2026-11-28T02:00:01Z", "pending": {}}', "in the future"),
    ('{"v": 1, "until": "2026-11-28T01:00:00Z", "pending": [1, 2]}', "'pending'"),
    ('{"v": 1, "until": "2026-11-28T01:00:00Z", "pending": {"x": "2026-11-28"}}', "'pending'"),
    ('{"v": 1, "until": "2026-11-28T01:00:00Z", "pending": {"5": "soon"}}', "'pending'"),
    ('{"v": 1, "until": "2026-11-28T01:00:00Z", "pending": {}, "waiting": [5]}', "'waiting'"),
    ('{"v": 1, "until": "2026-11-28T01:00:00Z", "pending": {}, "waiting": {"5": "2026-11-28"}}', "'waiting'"),
    ('{"v": 1, "until": "2026-11-28T01:00:00Z", "pending": {}, "waiting": {"5": ["2026-11-28", "x"]}}', "'waiting'"),
])
def test_unusable_cursor_restarts_at_the_lookback_with_the_reason(text, reason):
    state = parse_cursor(text, NOW, LOOKBACK)
    assert reason in state.restart_reason
    assert state.cursor == PollCursor(until=NOW - LOOKBACK, pending={})


def test_settings_come_from_the_environment_and_bad_values_name_the_setting(monkeypatch):
    monkeypatch.setenv("IMOCHA_PIPELINE_POLL_MAX_ATTEMPTS", "50")
    monkeypatch.setenv("IMOCHA_PIPELINE_POLL_OVERLAP_MINUTES", "5")
    settings = PollSettings.from_env()
    assert settings.max_attempts == 50 and settings.overlap == timedelta(minutes=5)
    assert settings.lookback == timedelta(days=2) and settings.interval_seconds == 30
    monkeypatch.setenv("IMOCHA_PIPELINE_POLL_MAX_ATTEMPTS", "lots")
    with pytest.raises(ValueError, match="IMOCHA_PIPELINE_POLL_MAX_ATTEMPTS"):
        PollSettings.from_env()


# ---------------------------------------------------------------- ticks


def test_first_tick_without_cursor_reads_only_the_lookback(sandbox, client, staging_url):
    too_old = finish(sandbox, NOW - LOOKBACK - timedelta(minutes=5))
    yesterday = finish(sandbox, NOW - timedelta(hours=20))
    today = finish(sandbox, NOW - timedelta(minutes=30))
    mark = sandbox.imocha.log.last_seq

    outcome = poll_completions(client, staging.get_engine(staging_url), None, now=NOW)

    assert outcome.restart_reason == "no cursor yet"
    assert requested(outcome) == {yesterday[0]: "2026-11-27", today[0]: "2026-11-28"}
    assert too_old[0] not in requested(outcome)
    windows = [json.loads(e.body) for e in sandbox.imocha.log.entries(mark) if e.path == ATTEMPTS_PATH]
    assert min(w["StartDateTime"] for w in windows) == "2026-11-26T02:00:00Z"
    assert max(w["EndDateTime"] for w in windows) == "2026-11-28T02:00:00Z"
    assert all(w["StartDateTime"][:10] == w["EndDateTime"][:10] or w["EndDateTime"].endswith("T00:00:00Z")
               for w in windows), "a window never crosses midnight"
    assert outcome.cursor.until == NOW
    # The next scan starts at 01:45 today, so only today's request needs remembering.
    assert outcome.cursor.pending == {today[0]: date(2026, 11, 28)}


def test_nothing_new_skips_with_a_reason_and_moves_the_cursor(sandbox, client, sqlite_url):
    engine = staging.get_engine(sqlite_url)
    empty = poll_completions(client, engine, None, now=NOW)
    assert empty.requests == [] and empty.skip_reason.startswith("No new finished attempts since 2026-11-26T02:00:00Z")

    finish(sandbox, NOW + timedelta(seconds=10))
    first = poll_completions(client, engine, empty.cursor_json, now=NOW + timedelta(seconds=30))
    assert len(first.requests) == 1
    second = poll_completions(client, engine, first.cursor_json, now=NOW + timedelta(seconds=60))
    assert second.requests == [] and "No new finished attempts" in second.skip_reason
    assert second.cursor.until == NOW + timedelta(seconds=60)


def test_overlap_rescan_requests_late_arrivals_but_never_the_same_attempt_twice(sandbox, client, staging_url):
    engine = staging.get_engine(staging_url)
    early = finish(sandbox, NOW - timedelta(minutes=5))
    first = poll_completions(client, engine, None, now=NOW)
    assert requested(first) == {early[0]: "2026-11-28"}

    # Listed by iMocha only after the first tick, with a completion time inside the overlap.
    late = finish(sandbox, NOW - timedelta(minutes=2))
    second = poll_completions(client, engine, first.cursor_json, now=NOW + timedelta(seconds=30))
    assert second.scan_start == NOW - timedelta(minutes=15)
    assert requested(second) == {late[0]: "2026-11-28"}

    third = poll_completions(client, engine, second.cursor_json, now=NOW + timedelta(seconds=60))
    assert third.requests == [] and third.attempts_seen == 2

    # A failed tick's cursor is dropped by Dagster: the retry asks for the same run, so Dagster launches it once.
    retried = poll_completions(client, engine, first.cursor_json, now=NOW + timedelta(seconds=45))
    assert [r.run_key for r in retried.requests] == [r.run_key for r in second.requests]


def test_staged_attempts_are_not_requested_and_leave_the_pending_list(sandbox, client, staging_url):
    engine = staging.get_engine(staging_url)
    staged_before = finish(sandbox, NOW - timedelta(hours=1), count=3, spacing=timedelta(minutes=1))
    fresh = finish(sandbox, NOW - timedelta(minutes=3))
    stage(engine, staged_before, date(2026, 11, 28))

    first = poll_completions(client, engine, None, now=NOW)
    assert set(requested(first)) == set(fresh) and first.already_staged == 3
    assert set(first.cursor.pending) == set(fresh)

    stage(engine, fresh, date(2026, 11, 28))
    second = poll_completions(client, engine, first.cursor_json, now=NOW + timedelta(seconds=30))
    assert second.requests == [] and second.cursor.pending == {}


def test_pending_entries_expire_once_the_overlap_has_passed_their_day(sandbox, client, sqlite_url):
    engine = staging.get_engine(sqlite_url)
    before_midnight = finish(sandbox, datetime(2026, 11, 27, 23, 55, tzinfo=UTC))
    first = poll_completions(client, engine, None, now=datetime(2026, 11, 28, 0, 5, tzinfo=UTC))
    assert first.cursor.pending == {before_midnight[0]: date(2026, 11, 27)}
    # The next scan still reaches back into 27 November: keep it.
    second = poll_completions(client, engine, first.cursor_json, now=datetime(2026, 11, 28, 0, 10, tzinfo=UTC))
    assert second.requests == [] and before_midnight[0] in second.cursor.pending
    # Now the scan starts on 28 November and can no longer list it again: drop it.
    third = poll_completions(client, engine, second.cursor_json, now=datetime(2026, 11, 28, 0, 30, tzinfo=UTC))
    assert third.requests == [] and third.cursor.pending == {}


def test_thousands_of_attempts_are_spread_over_ticks_by_the_cap_and_each_requested_once(sandbox, client, sqlite_url):
    engine = staging.get_engine(sqlite_url)
    # 1,200 in the hour before midnight (one window holds more than the cap), 900 spread over the next 90 minutes.
    crowded = finish(sandbox, datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC), count=1200,
                     spacing=timedelta(seconds=2.9))
    spread = finish(sandbox, datetime(2026, 11, 28, 1, 30, tzinfo=UTC), count=900, spacing=timedelta(seconds=6))
    day_of = {**dict.fromkeys(crowded, "2026-11-27"), **dict.fromkeys(spread, "2026-11-28")}
    settings = PollSettings(max_attempts=500, window=timedelta(hours=1))

    seen: dict[int, str] = {}
    run_keys: set[str] = set()
    cursor = None
    ticks = 0
    while True:
        ticks += 1
        outcome = poll_completions(client, engine, cursor, now=NOW + timedelta(seconds=30 * ticks), settings=settings)
        if not outcome.requests:
            assert outcome.skip_reason
            break
        assert outcome.new_attempts <= 500
        if ticks == 1:
            assert outcome.capped and "per-tick cap reached" in outcome.summary()
        batch = requested(outcome)
        assert not set(batch) & set(seen), "an attempt was requested in two ticks"
        seen.update(batch)
        run_keys.update(r.run_key for r in outcome.requests)
        cursor = outcome.cursor_json
        assert ticks < 10
    assert seen == day_of
    assert ticks == 6, "five capped ticks of at most 500, then nothing new"
    assert len(run_keys) >= 5


def test_a_spent_time_budget_stops_reading_and_the_next_tick_carries_on(sandbox, client, sqlite_url):
    engine = staging.get_engine(sqlite_url)
    hours = [finish(sandbox, NOW - timedelta(minutes=m))[0] for m in (210, 150, 90, 30)]
    settings = PollSettings(window=timedelta(hours=1), time_budget_seconds=20)
    ticks = iter(range(0, 1000, 15))  # a slow iMocha: 15 s per call

    slow = poll_completions(client, engine, PollCursor(until=NOW - timedelta(hours=4)).to_json(), now=NOW,
                            settings=settings, monotonic=lambda: next(ticks))
    assert (slow.windows_read, slow.windows_total) == (2, 5)
    assert set(requested(slow)) == set(hours[:2])
    assert slow.cursor.until == NOW - timedelta(hours=2, minutes=15), "only the windows read count as read"
    assert "stopped early" in slow.summary()

    rest = poll_completions(client, engine, slow.cursor_json, now=NOW + timedelta(seconds=30), settings=settings)
    assert set(requested(rest)) == set(hours[2:])


def test_attempts_a_callback_already_requested_are_not_polled_again(sandbox, client, sqlite_url):
    engine = staging.get_engine(sqlite_url)
    via_callback, other = finish(sandbox, NOW - timedelta(minutes=20), count=2, spacing=timedelta(minutes=1))
    with engine.begin() as conn:
        conn.execute(staging.callback_inbox.insert().values(
            test_invitation_id=via_callback, status="Complete", payload={}, received_at=NOW,
            processed_at=NOW, run_key="callbacks:2026-11-28:0123456789abcdef"))
    outcome = poll_completions(client, engine, None, now=NOW)
    assert set(requested(outcome)) == {other}


def test_a_day_whose_run_has_not_read_imocha_yet_is_left_to_it_until_it_stages_the_attempts(sandbox, client,
                                                                                           sqlite_url):
    engine = staging.get_engine(sqlite_url)
    staged_by_run, missed_by_run = finish(sandbox, NOW - timedelta(minutes=20), count=2, spacing=timedelta(minutes=1))
    runs: list[UnfinishedRun] = [UnfinishedRun("2026-11-28", "queued")]
    lookups: list[list[str]] = []

    def unfinished(days):
        lookups.append(list(days))
        return list(runs)

    first = poll_completions(client, engine, None, now=NOW, unfinished_runs=unfinished)
    assert first.requests == [] and set(first.cursor.waiting) == {staged_by_run, missed_by_run}
    assert lookups == [["2026-11-28"]] and "2 finished attempt(s) left to the completion_sync_job run(s) of " \
        "2026-11-28" in first.skip_reason

    # The run starts (after the poll saw them) and stages one of the two: that one leaves the list.
    runs[:] = [UnfinishedRun("2026-11-28", "queued", started_at=NOW + timedelta(seconds=10))]
    stage(engine, [staged_by_run], date(2026, 11, 28))
    second = poll_completions(client, engine, first.cursor_json, now=NOW + timedelta(seconds=30),
                              unfinished_runs=unfinished)
    assert second.requests == [] and set(second.cursor.waiting) == {missed_by_run}

    # It ends without the other one: asked for now, with the day's new attempt, in one run.
    runs.clear()
    newer = finish(sandbox, NOW + timedelta(seconds=40))[0]
    third = poll_completions(client, engine, second.cursor_json, now=NOW + timedelta(seconds=60),
                             unfinished_runs=unfinished)
    assert requested(third) == {missed_by_run: "2026-11-28", newer: "2026-11-28"} and len(third.requests) == 1
    assert third.cursor.waiting == {} and set(third.cursor.pending) == {missed_by_run, newer}


def test_a_run_that_started_before_the_attempt_was_seen_does_not_stand_in_for_a_new_one(sandbox, client,
                                                                                      sqlite_url):
    engine = staging.get_engine(sqlite_url)
    [late] = finish(sandbox, NOW - timedelta(minutes=2))
    started = [UnfinishedRun("2026-11-28", "running", started_at=NOW - timedelta(minutes=1))]
    outcome = poll_completions(client, engine, None, now=NOW, unfinished_runs=lambda days: started)
    assert requested(outcome) == {late: "2026-11-28"} and outcome.cursor.waiting == {}


# ---------------------------------------------------------------- the Dagster sensor


def test_dagster_sensor_requests_partitioned_runs_and_keeps_one_cursor(sandbox, sqlite_url, instance):
    partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="UTC", end_offset=1)

    @dg.asset(name="imocha_completions", partitions_def=partitions)
    def stand_in() -> None:
        return None

    job = dg.define_asset_job("completion_sync_job", selection=[stand_in])
    resources = {"imocha": ImochaResource(api_key=SANDBOX_IMOCHA_API_KEY, base_url=sandbox.imocha_url),
                 "staging_db": StagingDatabaseResource(url=sqlite_url)}
    defs = dg.Definitions(assets=[stand_in], jobs=[job], sensors=[imocha_completions_sensor], resources=resources)
    sensor = defs.resolve_sensor_def("imocha_completions_sensor")
    assert sensor.minimum_interval_seconds == 30
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

    # Inside the 15-minute overlap, so the cursor keeps it pending whatever the time of day (an hour earlier
    # would put it before the next scan's start just after midnight, where the cursor rightly drops it).
    completed = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    [invitation_id] = finish(sandbox, completed)
    # A run of the day is queued: it will list the attempt when it starts, so no second run is asked for.
    queued = queued_run(instance, defs, completed.date().isoformat())

    def tick(cursor):
        return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources,
                                                            definitions=defs, cursor=cursor))

    waiting = tick(None)
    assert waiting.run_requests == [] and "left to the completion_sync_job run(s)" in waiting.skip_message
    left = json.loads(waiting.cursor)
    assert left["pending"] == {} and left["waiting"][str(invitation_id)][0] == completed.date().isoformat()
    report(instance, queued, dg.DagsterEventType.RUN_STARTING)
    report(instance, queued, dg.DagsterEventType.RUN_START)
    still = tick(waiting.cursor)
    assert still.run_requests == [] and json.loads(still.cursor)["waiting"] == left["waiting"], "started after"

    # That run fails without staging it: the next tick asks for the day, with the attempt.
    report(instance, queued, dg.DagsterEventType.RUN_FAILURE)
    first = tick(still.cursor)
    [run] = first.run_requests
    assert run.partition_key == completed.date().isoformat()
    assert run.tags[TRIGGER_TAG] == "poll" and run.run_key == run_key_for("completions", completed.date(),
                                                                          [invitation_id])
    cursor = json.loads(first.cursor)
    assert cursor["v"] == 1 and cursor["pending"] == {str(invitation_id): run.partition_key}
    assert "waiting" not in cursor

    second = tick(first.cursor)
    assert second.run_requests == [] and "No new finished attempts" in second.skip_message

    corrupt = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources,
                                                           definitions=defs, cursor="{corrupt"))
    assert [r.run_key for r in corrupt.run_requests] == [run.run_key], "a restart asks for the same run"
