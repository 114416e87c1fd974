"""The completions polling sensor: cursor, look-back, overlap, per-tick cap and de-duplication, against the
iMocha sandbox over loopback HTTP and a real staging database."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from imocha_pipeline import staging
from imocha_pipeline.clients.imocha import ImochaClient
from imocha_pipeline.clients.imocha.values import format_utc
from imocha_pipeline.defs.resources import ImochaResource, StagingDatabaseResource
from imocha_pipeline.defs.sensors import TRIGGER_TAG, imocha_completions_sensor
from imocha_pipeline.sync.triggers.callbacks import CallbackSettings
from imocha_pipeline.sync.triggers.poll_cursor import PendingAttempt, PollCursor, parse_cursor
from imocha_pipeline.sync.triggers.polling import PollSettings, poll_completions
from imocha_pipeline.sync.triggers.runs import UnfinishedRun, run_key_for
from imocha_pipeline.timestamps import parse_utc
from imocha_pipeline_tests.test_callbacks import queued_run, report
from imocha_sandbox.runtime import SANDBOX_IMOCHA_API_KEY, Sandbox

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
LOOKBACK = timedelta(days=2)
ATTEMPTS_PATH = "/v3/candidates/testattempts"


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox(seed=3, tests=3, learners=4, attempts=0)


@pytest.fixture
def client(sandbox):
    with ImochaClient(sandbox.imocha_url, SANDBOX_IMOCHA_API_KEY) as imocha:
        yield imocha


def finish(sandbox: Sandbox, completed_at: datetime, count: int = 1, spacing: timedelta = timedelta(0),
           took: timedelta = timedelta(minutes=10)) -> list[int]:
    """Attempts that iMocha lists as finished at ``completed_at`` (then every ``spacing`` earlier), each started
    ``took`` before it finished."""
    test_id = sandbox.world.tests[0].test_id
    ids = []
    for n in range(count):
        done = completed_at - spacing * n
        ids.append(sandbox.imocha.complete_attempt(test_id, f"learner{len(sandbox.imocha.invitations)}@example.com",
                                                   "Learner", attempted_on=done - took,
                                                   time_taken_seconds=int(took.total_seconds())))
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
    cursor = PollCursor(until=NOW - timedelta(minutes=3), pending={
        42: PendingAttempt(date(2026, 11, 27), datetime(2026, 11, 27, 23, 50, tzinfo=UTC), 3),
        7: PendingAttempt(date(2026, 11, 28), NOW - timedelta(minutes=4), 1)})
    text = cursor.to_json()
    assert json.loads(text) == {"v": 1, "until": "2026-11-28T01:57:00Z",
                                "pending": {"7": ["2026-11-28", "2026-11-28T01:56:00Z", 1],
                                            "42": ["2026-11-27", "2026-11-27T23:50:00Z", 3]}}
    state = parse_cursor(text, NOW, LOOKBACK)
    assert state.restart_reason is None and state.cursor == cursor

    left = PollCursor(until=NOW, waiting={9: (date(2026, 11, 28), NOW - timedelta(minutes=1))})
    assert json.loads(left.to_json())["waiting"] == {"9": ["2026-11-28", "2026-11-28T01:59:00Z"]}
    assert parse_cursor(left.to_json(), NOW, LOOKBACK).cursor == left


def test_the_older_pending_shape_still_parses_as_requested_once_at_until_and_is_written_in_the_new_one():
    old = '{"v": 1, "until": "2026-11-28T01:57:00Z", "pending": {"42": "2026-11-27", "7": "2026-11-28"}}'
    state = parse_cursor(old, NOW, LOOKBACK)
    until = NOW - timedelta(minutes=3)
    assert state.restart_reason is None
    assert state.cursor == PollCursor(until=until, pending={42: PendingAttempt(date(2026, 11, 27), until, 1),
                                                            7: PendingAttempt(date(2026, 11, 28), until, 1)})
    assert json.loads(state.cursor.to_json())["pending"] == {"7": ["2026-11-28", "2026-11-28T01:57:00Z", 1],
                                                             "42": ["2026-11-27", "2026-11-28T01:57:00Z", 1]}
    assert parse_cursor(state.cursor.to_json(), NOW, LOOKBACK).cursor == state.cursor


@pytest.mark.parametrize("entry", [
    '["2026-11-28", "2026-11-28T01:00:00Z"]',
    '["2026-11-28", "2026-11-28T01:00:00Z", 0]',
    '["2026-11-28", "2026-11-28T01:00:00Z", "2"]',
    '["2026-11-28", "2026-11-28T01:00:00Z", true]',
    '["2026-11-28", "2026-11-28T01:00:00Z", 1.5]',
    '["2026-11-28", "soon", 1]',
    '["someday", "2026-11-28T01:00:00Z", 1]',
    '["2026-11-28", null, 1]',
    '["2026-11-28", "2026-11-28T01:00:00Z", 1, 4]',
    '{"day": "2026-11-28"}',
    '17',
])
def test_a_malformed_pending_entry_restarts_the_scan_with_the_reason(entry):
    text = json.dumps({"v": 1, "until": "2026-11-28T01:00:00Z", "pending": {"5": json.loads(entry)}})
    state = parse_cursor(text, NOW, LOOKBACK)
    assert "the cursor's 'pending' holds an entry that is not <invitation id>: [<YYYY-MM-DD>, <UTC>, <tries>]" in \
        state.restart_reason
    assert state.cursor == PollCursor(until=NOW - LOOKBACK)


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
    assert settings.retry == timedelta(seconds=60) and settings.retry_max == timedelta(hours=1)
    assert settings.max_attempt == timedelta(hours=12) == CallbackSettings().max_attempt, "both paths agree"
    assert settings.reread == timedelta(hours=12)
    assert [settings.backoff(n).total_seconds() for n in (1, 2, 3, 6, 7, 99)] == [60, 120, 240, 1920, 3600, 3600]
    monkeypatch.setenv("IMOCHA_PIPELINE_POLL_RETRY_SECONDS", "5")
    monkeypatch.setenv("IMOCHA_PIPELINE_POLL_RETRY_MAX_SECONDS", "30")
    monkeypatch.setenv("IMOCHA_PIPELINE_POLL_MAX_ATTEMPT_MINUTES", "0")
    settings = PollSettings.from_env()
    assert [settings.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [5, 10, 20, 30]
    assert settings.max_attempt == timedelta(0) and settings.reread == timedelta(minutes=5), "never below the overlap"
    monkeypatch.setenv("IMOCHA_PIPELINE_POLL_RETRY_SECONDS", "0")
    with pytest.raises(ValueError, match="IMOCHA_PIPELINE_POLL_RETRY_SECONDS"):
        PollSettings.from_env()
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
    # Both stay until they are staged, however far behind the next scan's start their day lies.
    assert outcome.cursor.pending == {yesterday[0]: PendingAttempt(date(2026, 11, 27), NOW, 1),
                                      today[0]: PendingAttempt(date(2026, 11, 28), NOW, 1)}


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
    assert second.scan_start == NOW - timedelta(hours=12), "the longest attempt, more than the 15-minute overlap"
    assert requested(second) == {late[0]: "2026-11-28"}

    # Before the first request's one-minute back-off has passed.
    third = poll_completions(client, engine, second.cursor_json, now=NOW + timedelta(seconds=59))
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


def test_pending_entries_outlive_midnight_and_are_requested_again_for_their_day(sandbox, client, sqlite_url):
    engine = staging.get_engine(sqlite_url)
    [before_midnight] = finish(sandbox, datetime(2026, 11, 27, 23, 55, tzinfo=UTC))
    the_27th = date(2026, 11, 27)
    at = [datetime(2026, 11, 28, 0, 5, tzinfo=UTC), datetime(2026, 11, 28, 0, 30, tzinfo=UTC),
          datetime(2026, 11, 28, 12, 30, tzinfo=UTC), datetime(2026, 11, 29, 0, 10, tzinfo=UTC)]
    first = poll_completions(client, engine, None, now=at[0])
    assert requested(first) == {before_midnight: "2026-11-27"}
    assert first.cursor.pending == {before_midnight: PendingAttempt(the_27th, at[0], 1)}
    # Its run never staged it (nothing did); past midnight, once the back-off has passed, it is asked for again.
    second = poll_completions(client, engine, first.cursor_json, now=at[1])
    assert requested(second) == {before_midnight: "2026-11-27"} and second.re_requested == 1
    assert second.cursor.pending == {before_midnight: PendingAttempt(the_27th, at[1], 2)}
    third = poll_completions(client, engine, second.cursor_json, now=at[2])
    assert requested(third) == {before_midnight: "2026-11-27"}
    assert third.cursor.pending == {before_midnight: PendingAttempt(the_27th, at[2], 3)}
    # After the next day has ended the scan no longer reads 27 November at all (it starts at 00:30 on the 28th),
    # and the entry still stays and is asked for again.
    fourth = poll_completions(client, engine, third.cursor_json, now=at[3])
    assert fourth.scan_start == datetime(2026, 11, 28, 0, 30, tzinfo=UTC) and fourth.attempts_seen == 0
    assert requested(fourth) == {before_midnight: "2026-11-27"}
    assert fourth.cursor.pending == {before_midnight: PendingAttempt(the_27th, at[3], 4)}
    keys = [o.requests[0].run_key for o in (first, second, third, fourth)]
    assert len(set(keys)) == 4 and all(key.startswith("completions:2026-11-27:") for key in keys)


def test_an_attempt_its_run_never_staged_is_requested_again_after_a_doubling_back_off(sandbox, client, staging_url):
    engine = staging.get_engine(staging_url)
    [lost] = finish(sandbox, NOW - timedelta(minutes=5))
    day = date(2026, 11, 28)
    first = poll_completions(client, engine, None, now=NOW)
    [run] = first.requests
    assert run.run_key == run_key_for("completions", day, [lost])
    assert first.cursor.pending == {lost: PendingAttempt(day, NOW, 1)}

    # Its run failed before staging it (nothing stages it, no run of the day is left): not before the back-off...
    early = poll_completions(client, engine, first.cursor_json, now=NOW + timedelta(seconds=59))
    assert early.requests == [] and early.cursor.pending == first.cursor.pending
    assert "1 requested attempt(s) not staged yet, asked for again once their back-off has passed" in \
        early.skip_reason
    # ... then for its day again, under a run key Dagster has never seen (it skips a run key used before).
    second = poll_completions(client, engine, early.cursor_json, now=NOW + timedelta(seconds=60))
    [again] = second.requests
    assert (again.partition_key, again.invitation_ids) == ("2026-11-28", (lost,))
    assert again.run_key != run.run_key and again.run_key == run_key_for("completions", day, [lost], {lost: 2})
    assert (second.new_attempts, second.re_requested) == (0, 1)
    assert second.cursor.pending == {lost: PendingAttempt(day, NOW + timedelta(seconds=60), 2)}
    assert "0 new and 1 re-requested in 1 run(s)" in second.summary() and "; 1 pending" in second.summary()

    # The back-off doubles: two minutes after the second request, not one.
    waiting = poll_completions(client, engine, second.cursor_json, now=NOW + timedelta(seconds=60 + 119))
    assert waiting.requests == []
    third = poll_completions(client, engine, waiting.cursor_json, now=NOW + timedelta(seconds=60 + 120))
    [thrice] = third.requests
    assert thrice.invitation_ids == (lost,) and thrice.run_key not in {run.run_key, again.run_key}
    assert third.cursor.pending == {lost: PendingAttempt(day, NOW + timedelta(seconds=180), 3)}
    # A retried tick (Dagster dropped the failed tick's cursor) asks for the very same run.
    retried = poll_completions(client, engine, waiting.cursor_json, now=NOW + timedelta(seconds=200))
    assert [r.run_key for r in retried.requests] == [thrice.run_key]

    # Staged at last: it leaves the cursor and is never asked for again.
    stage(engine, [lost], day)
    done = poll_completions(client, engine, third.cursor_json, now=NOW + timedelta(hours=2))
    assert done.requests == [] and done.cursor.pending == {} and done.already_staged == 1


def test_no_request_again_while_a_run_of_its_day_started_after_the_last_request_is_unfinished(sandbox, client,
                                                                                             sqlite_url):
    engine = staging.get_engine(sqlite_url)
    [lost] = finish(sandbox, NOW - timedelta(minutes=5))
    runs: list[UnfinishedRun] = []
    lookups: list[list[str]] = []

    def unfinished(days):
        lookups.append(list(days))
        return list(runs)

    first = poll_completions(client, engine, None, now=NOW, unfinished_runs=unfinished)
    [run] = first.requests
    quiet = poll_completions(client, engine, first.cursor_json, now=NOW + timedelta(seconds=30),
                             unfinished_runs=unfinished)
    assert quiet.requests == [] and lookups == [["2026-11-28"]], "no instance query while nothing is due"

    # Dagster queued the requested run, then started it after the request; the back-off has long passed.
    runs[:] = [UnfinishedRun("2026-11-28", "requested")]
    queued = poll_completions(client, engine, quiet.cursor_json, now=NOW + timedelta(minutes=5),
                              unfinished_runs=unfinished)
    assert queued.requests == [] and queued.cursor.pending == first.cursor.pending
    runs[:] = [UnfinishedRun("2026-11-28", "requested", started_at=NOW + timedelta(seconds=10))]
    running = poll_completions(client, engine, queued.cursor_json, now=NOW + timedelta(minutes=10),
                               unfinished_runs=unfinished)
    assert running.requests == [] and running.cursor.pending == first.cursor.pending
    assert lookups == [["2026-11-28"]] * 3

    # A run of the day that started before the request does not stand in: it may have read the day too early.
    older = poll_completions(client, engine, queued.cursor_json, now=NOW + timedelta(minutes=10),
                             unfinished_runs=lambda days: [UnfinishedRun("2026-11-28", "older",
                                                                         started_at=NOW - timedelta(seconds=1))])
    assert requested(older) == {lost: "2026-11-28"}

    # The requested run ends without staging it: asked for again, under a new run key.
    runs.clear()
    again = poll_completions(client, engine, running.cursor_json, now=NOW + timedelta(minutes=10, seconds=30),
                             unfinished_runs=unfinished)
    assert requested(again) == {lost: "2026-11-28"} and again.requests[0].run_key != run.run_key
    assert again.cursor.pending[lost].tries == 2 and len(lookups) == 4


def test_an_attempt_filed_under_its_start_is_requested_when_it_finishes_after_the_overlap(sandbox, client,
                                                                                         sqlite_url):
    """The spec does not say which timestamp Retrieve Invites filters on; under the start-time reading an attempt
    is listed, once completed, in the window of its start, which the overlap alone no longer re-reads."""
    sandbox.imocha.configure(attempt_window_field="started")
    engine = staging.get_engine(sqlite_url)
    done = NOW - timedelta(minutes=1)
    [slow] = finish(sandbox, done, took=timedelta(minutes=90))
    assert client.list_attempts(done - timedelta(minutes=5), NOW) == [], "not listed at its completion time"
    # The last tick ran just before it finished: until is far past its start (00:29) + the 15-minute overlap.
    cursor = PollCursor(until=done - timedelta(seconds=10)).to_json()

    outcome = poll_completions(client, engine, cursor, now=NOW)
    assert requested(outcome) == {slow: "2026-11-28"}
    assert outcome.scan_start == done - timedelta(seconds=10) - timedelta(hours=12)

    # Re-reading only the overlap (the old behaviour, and IMOCHA_PIPELINE_POLL_MAX_ATTEMPT_MINUTES=15): no tick
    # ever lists it again, so it would be lost.
    missed = poll_completions(client, engine, cursor, now=NOW, settings=PollSettings(max_attempt=timedelta(minutes=15)))
    assert missed.scan_start == done - timedelta(minutes=15, seconds=10)
    assert missed.requests == [] and missed.attempts_seen == 0


def test_re_requests_take_the_room_the_per_tick_cap_leaves_after_new_attempts(sandbox, client, sqlite_url):
    engine = staging.get_engine(sqlite_url)
    older, old = finish(sandbox, NOW - timedelta(hours=3), count=2, spacing=timedelta(minutes=1))
    day = date(2026, 11, 28)
    pending = {older: PendingAttempt(day, NOW - timedelta(hours=2), 1),
               old: PendingAttempt(day, NOW - timedelta(hours=1), 1)}
    cursor = PollCursor(until=NOW - timedelta(minutes=1), pending=pending).to_json()
    [new] = finish(sandbox, NOW - timedelta(seconds=30))
    settings = PollSettings(max_attempts=2)

    first = poll_completions(client, engine, cursor, now=NOW, settings=settings)
    assert requested(first) == {new: "2026-11-28", older: "2026-11-28"}, "the new one, then the longest waiting"
    assert (first.new_attempts, first.re_requested, first.re_requests_deferred) == (1, 1, 1)
    assert "1 due re-request(s) come next tick" in first.summary()
    assert first.cursor.pending[old] == pending[old]
    second = poll_completions(client, engine, first.cursor_json, now=NOW + timedelta(seconds=30), settings=settings)
    assert requested(second) == {old: "2026-11-28"} and second.re_requests_deferred == 0


def test_staged_attempts_in_the_re_read_span_do_not_count_against_the_cap(sandbox, client, sqlite_url):
    engine = staging.get_engine(sqlite_url)
    day = date(2026, 11, 28)
    stage(engine, finish(sandbox, NOW - timedelta(hours=1, minutes=30), count=5, spacing=timedelta(minutes=1)), day)
    [new] = finish(sandbox, NOW - timedelta(seconds=20))
    settings = PollSettings(max_attempts=3, window=timedelta(hours=1))
    outcome = poll_completions(client, engine, PollCursor(until=NOW - timedelta(minutes=1)).to_json(), now=NOW,
                               settings=settings)
    assert requested(outcome) == {new: "2026-11-28"} and outcome.cursor.until == NOW
    assert outcome.windows_read == outcome.windows_total and outcome.already_staged == 5


def test_thousands_of_attempts_are_spread_over_ticks_by_the_cap_and_each_requested_once(sandbox, client, sqlite_url):
    engine = staging.get_engine(sqlite_url)
    # 1,200 in the hour before midnight (one window holds more than the cap), 900 spread over the next 90 minutes.
    crowded = finish(sandbox, datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC), count=1200,
                     spacing=timedelta(seconds=2.9))
    spread = finish(sandbox, datetime(2026, 11, 28, 1, 30, tzinfo=UTC), count=900, spacing=timedelta(seconds=6))
    day_of = {**dict.fromkeys(crowded, "2026-11-27"), **dict.fromkeys(spread, "2026-11-28")}
    # A long back-off: nothing stages these, and this test is about first requests.
    settings = PollSettings(max_attempts=500, window=timedelta(hours=1), retry=timedelta(hours=1))

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
    # Re-read only the overlap (as when iMocha filters on the completion time), so the windows are easy to count.
    settings = PollSettings(window=timedelta(hours=1), time_budget_seconds=20, max_attempt=timedelta(0))
    ticks = iter(range(0, 1000, 15))  # a slow iMocha: 15 s per call

    slow = poll_completions(client, engine, PollCursor(until=NOW - timedelta(hours=4)).to_json(), now=NOW,
                            settings=settings, monotonic=lambda: next(ticks))
    assert (slow.windows_read, slow.windows_total) == (2, 5)
    assert set(requested(slow)) == set(hours[:2])
    assert slow.cursor.until == NOW - timedelta(hours=2, minutes=15), "only the windows read count as read"
    assert "stopped early" in slow.summary()

    rest = poll_completions(client, engine, slow.cursor_json, now=NOW + timedelta(seconds=30), settings=settings)
    assert set(requested(rest)) == set(hours[2:])


def test_attempts_a_callback_already_requested_are_not_polled_now_but_asked_for_again_if_never_staged(
        sandbox, client, sqlite_url):
    engine = staging.get_engine(sqlite_url)
    via_callback, other = finish(sandbox, NOW - timedelta(minutes=20), count=2, spacing=timedelta(minutes=1))
    arrived = NOW - timedelta(seconds=20)
    with engine.begin() as conn:
        for received_at in (arrived, arrived + timedelta(seconds=5)):  # delivered twice
            conn.execute(staging.callback_inbox.insert().values(
                test_invitation_id=via_callback, status="Complete", payload={}, received_at=received_at,
                processed_at=NOW, run_key="callbacks:2026-11-28:0123456789abcdef"))
    day = date(2026, 11, 28)
    outcome = poll_completions(client, engine, None, now=NOW)
    assert set(requested(outcome)) == {other}
    # Pending as requested when its first callback arrived (its run was asked for after that), once.
    assert outcome.cursor.pending == {via_callback: PendingAttempt(day, arrived, 1), other: PendingAttempt(day, NOW, 1)}
    stage(engine, [other], day)

    # The callback's run (started after the callback arrived) is still going: it will list the attempt.
    callback_run = [UnfinishedRun("2026-11-28", "callback run", started_at=NOW - timedelta(seconds=10))]
    running = poll_completions(client, engine, outcome.cursor_json, now=NOW + timedelta(minutes=2),
                               unfinished_runs=lambda days: callback_run)
    assert running.requests == [] and set(running.cursor.pending) == {via_callback}

    # Not before the back-off; then, with that run over and the attempt still not staged, asked for again.
    early = poll_completions(client, engine, outcome.cursor_json, now=arrived + timedelta(seconds=59))
    assert early.requests == []
    again = poll_completions(client, engine, early.cursor_json, now=arrived + timedelta(seconds=60))
    [run] = again.requests
    assert run.invitation_ids == (via_callback,) and again.re_requested == 1
    assert run.run_key == run_key_for("completions", day, [via_callback], {via_callback: 2})
    assert again.cursor.pending == {via_callback: PendingAttempt(day, arrived + timedelta(seconds=60), 2)}


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
    assert cursor["v"] == 1 and list(cursor["pending"]) == [str(invitation_id)]
    day, requested_at, tries = cursor["pending"][str(invitation_id)]
    assert (day, tries) == (run.partition_key, 1)
    assert abs(parse_utc(requested_at) - datetime.now(UTC)) < timedelta(minutes=1)
    assert "waiting" not in cursor

    second = tick(first.cursor)
    assert second.run_requests == [] and "No new finished attempts" in second.skip_message

    # As if the back-off (a minute) had passed since the request: the last request two minutes earlier.
    cursor["pending"][str(invitation_id)][1] = format_utc(parse_utc(requested_at) - timedelta(minutes=2))
    later = json.dumps(cursor)
    # Dagster launched the requested run; it started after the request, so no second run while it goes on ...
    launched = queued_run(instance, defs, run.partition_key)
    report(instance, launched, dg.DagsterEventType.RUN_STARTING)
    report(instance, launched, dg.DagsterEventType.RUN_START)
    running = tick(later)
    assert running.run_requests == [] and json.loads(running.cursor)["pending"] == cursor["pending"]
    # ... but it fails before staging the attempt: the day is asked for again, under a run key not used before
    # (Dagster skips a RunRequest whose run key the sensor already used, forever).
    report(instance, launched, dg.DagsterEventType.RUN_FAILURE)
    again = tick(later)
    [rerun] = again.run_requests
    assert rerun.partition_key == run.partition_key and rerun.tags[TRIGGER_TAG] == "poll"
    assert rerun.run_key != run.run_key
    assert rerun.run_key == run_key_for("completions", completed.date(), [invitation_id], {invitation_id: 2})
    assert json.loads(again.cursor)["pending"][str(invitation_id)][2] == 2
    # A retried tick (the cursor of a failed tick is dropped) asks for the same run again.
    assert [r.run_key for r in tick(later).run_requests] == [rerun.run_key]

    corrupt = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources,
                                                           definitions=defs, cursor="{corrupt"))
    assert [r.run_key for r in corrupt.run_requests] == [run.run_key], "a restart asks for the same run"
