"""The callback endpoint, the callbacks sensor and callback replay, with the iMocha sandbox delivering real
callbacks over loopback HTTP to the endpoint and a real staging database."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta

import dagster as dg
import pytest
import requests
import sqlalchemy as sa

from imocha_pipeline import staging
from imocha_pipeline.callbacks_server import callback_path, callback_token_from_env, create_app
from imocha_pipeline.clients.imocha import ImochaClient
from imocha_pipeline.defs.resources import StagingDatabaseResource
from imocha_pipeline.defs.sensors import TRIGGER_TAG, imocha_callbacks_sensor
from imocha_pipeline.settings import MissingSettingError
from imocha_pipeline.sync.triggers.callbacks import (
    MAX_PAGES_PER_TICK,
    RUN_KEY_PREFIX,
    CallbackSettings,
    candidate_days,
    parse_callback,
    plan_inbox_tick,
    replay_missed_callbacks,
    store_callback,
)
from imocha_pipeline.sync.triggers.polling import poll_completions
from imocha_pipeline.sync.triggers.runs import UnfinishedRun, run_key_for
from imocha_sandbox.runtime import SANDBOX_IMOCHA_API_KEY
from imocha_sandbox.server import ServerThread

TOKEN = "s3cret-callback-token-0123456789"
SPEC_COMPLETE = {  # spec §8.2, verbatim
    "CandidateEmailId": "amey@example.com", "AttemptedOn": "09-Oct-2020 06:51 PM", "TotalScore": 115,
    "CandidateScore": 6, "ReportPDFUrl": "https://app.imocha.io/PDFReport?id=OXP5R5ayMu8nrHfnh2g%3d%3d",
    "TestInvitationId": 3314697, "Status": "Complete", "AttemptedOnUtc": "2020-10-09T13:21:53",
    "PerformanceCategory": "Beginner", "BaseImgUrl": "https://imdatastorage.blob.core.windows.net/x.jpg",
}


class Switch:
    """ASGI wrapper that answers 503 while ``down``: an endpoint outage, as iMocha sees it."""

    def __init__(self, app):
        self.app = app
        self.down = False

    async def __call__(self, scope, receive, send):
        if self.down and scope["type"] == "http":
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


@pytest.fixture
def endpoint(staging_url):
    switch = Switch(create_app(token=TOKEN, staging_url=staging_url))
    server = ServerThread(switch, port=0).start()
    server.switch = switch
    server.callback_url = server.url + callback_path(TOKEN)
    yield server
    server.stop()


@pytest.fixture
def sandbox(make_sandbox):
    box = make_sandbox(seed=5, tests=2, learners=4, attempts=0)
    box.imocha.callbacks.retry_delay = 0.0  # iMocha's 5 tries, without the wait between them
    return box


def inbox(url: str) -> list[dict]:
    with staging.get_engine(url).connect() as conn:
        return staging.read_rows(conn, staging.callback_inbox)


def post(endpoint, body, token: str = TOKEN) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(endpoint.url + callback_path(token), data=data,
                         headers={"Content-Type": "application/json"}, timeout=10)


# ---------------------------------------------------------------- the endpoint


def test_good_token_stores_the_delivery_and_answers_200(endpoint, staging_url):
    answer = post(endpoint, SPEC_COMPLETE)
    assert answer.status_code == 200
    assert answer.json() == {"stored": True, "inboxId": 1, "status": "Complete", "willSync": True}
    # Keys in another casing are the same fields; every delivery is its own row.
    again = post(endpoint, {key.lower(): value for key, value in SPEC_COMPLETE.items()})
    assert again.status_code == 200 and again.json()["willSync"] is True
    rows = inbox(staging_url)
    assert [(r["test_invitation_id"], r["status"], r["processed_at"]) for r in rows] == [
        (3314697, "Complete", None), (3314697, "Complete", None)]
    assert rows[0]["payload"] == SPEC_COMPLETE
    assert rows[0]["received_at"].tzinfo is not None


@pytest.mark.parametrize("token", ["wrong-token-wrong-token-wrong-tok", TOKEN[:-1], TOKEN + "x"])
def test_wrong_token_is_403_and_stores_nothing(endpoint, staging_url, token):
    answer = post(endpoint, SPEC_COMPLETE, token=token)
    assert answer.status_code == 403
    assert TOKEN not in answer.text
    assert inbox(staging_url) == []


@pytest.mark.parametrize(("body", "problem"), [
    (b"<html>not json</html>", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[1, 2, 3]", "JSON object"),
    ({"Status": "Complete"}, "TestInvitationId is missing"),
    ({"TestInvitationId": "abc", "Status": "Complete"}, "TestInvitationId must be a positive whole number"),
    ({"TestInvitationId": 12.5, "Status": "Complete"}, "TestInvitationId must be a positive whole number"),
    ({"TestInvitationId": True, "Status": "Complete"}, "TestInvitationId must be a positive whole number"),
    ({"TestInvitationId": {"id": 1}, "Status": "Complete"}, "TestInvitationId must be a positive whole number"),
    ({"TestInvitationId": 7}, "Status must be a non-empty string"),
    ({"TestInvitationId": 7, "Status": 3}, "Status must be a non-empty string"),
    ({"TestInvitationId": 7, "Status": "Complete", "CandidateEmailId": ["a@b.c"]}, "CandidateEmailId must be"),
    ({"TestInvitationId": 7, "Status": "Complete", "TotalScore": "lots"}, "TotalScore must be a number"),
    ({"TestInvitationId": 7, "Status": "Complete", "AttemptedOnUtc": "yesterday"}, "AttemptedOnUtc must look like"),
])
def test_malformed_payload_is_400_with_the_problem_and_stores_nothing(endpoint, staging_url, body, problem):
    answer = post(endpoint, body)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid callback payload"
    assert any(problem in text for text in answer.json()["problems"]), answer.json()
    assert inbox(staging_url) == []


def test_oversized_body_is_refused(endpoint, staging_url):
    answer = post(endpoint, {**SPEC_COMPLETE, "Padding": "x" * 70_000})
    assert answer.status_code == 413 and inbox(staging_url) == []


def test_in_progress_is_stored_processed_and_never_synced(endpoint, staging_url):
    in_progress = {**SPEC_COMPLETE, "Status": "In Progress", "TotalScore": 0, "CandidateScore": 0,
                   "ReportPDFUrl": None, "PerformanceCategory": None}
    answer = post(endpoint, in_progress)
    assert answer.status_code == 200 and answer.json()["willSync"] is False
    [row] = inbox(staging_url)
    assert row["status"] == "In Progress" and row["processed_at"] is not None and row["run_key"] is None
    tick = plan_inbox_tick(staging.get_engine(staging_url), None)
    assert tick.requests == [] and tick.skip_reason == "No unprocessed final callbacks in the inbox"


def test_healthz_checks_the_database(endpoint):
    answer = requests.get(endpoint.url + "/healthz", timeout=10)
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_the_token_setting_is_required_and_must_be_long(monkeypatch):
    monkeypatch.delenv("IMOCHA_PIPELINE_CALLBACK_TOKEN", raising=False)
    with pytest.raises(MissingSettingError, match="IMOCHA_PIPELINE_CALLBACK_TOKEN"):
        callback_token_from_env()
    monkeypatch.setenv("IMOCHA_PIPELINE_CALLBACK_TOKEN", "short")
    with pytest.raises(ValueError, match="at least 16 characters"):
        callback_token_from_env()
    monkeypatch.setenv("IMOCHA_PIPELINE_CALLBACK_TOKEN", TOKEN)
    assert callback_token_from_env() == TOKEN


# ---------------------------------------------------------------- partitions


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("started", "received", "days"), [
    ("2026-11-28T10:00:00", "2026-11-28T10:40:00", ["2026-11-28"]),  # live, same day
    ("2026-11-27T23:50:00", "2026-11-28T00:20:00", ["2026-11-27", "2026-11-28"]),  # ran over midnight
    ("2026-11-20T09:00:00", "2026-11-28T12:00:00", ["2026-11-20"]),  # replayed a week later
    ("2026-11-20T15:00:00", "2026-11-28T12:00:00", ["2026-11-20", "2026-11-21"]),  # replayed, may end after midnight
    (None, "2026-11-28T12:00:00", ["2026-11-28"]),  # no start: the delivery day
    ("2026-11-29T12:00:00", "2026-11-28T12:00:00", ["2026-11-28"]),  # start after delivery (clock skew)
])
def test_candidate_days_span_the_start_to_the_delivery_at_most_12_hours(started, received, days):
    found = candidate_days(utc(started) if started else None, utc(received), timedelta(hours=12))
    assert [day.isoformat() for day in found] == days


# ---------------------------------------------------------------- the callbacks sensor


def sensor_setup(staging_url: str):
    partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="UTC", end_offset=1)

    @dg.asset(name="imocha_completions", partitions_def=partitions)
    def stand_in() -> None:
        return None

    job = dg.define_asset_job("completion_sync_job", selection=[stand_in])
    resources = {"staging_db": StagingDatabaseResource(url=staging_url)}
    defs = dg.Definitions(assets=[stand_in], jobs=[job], sensors=[imocha_callbacks_sensor], resources=resources)
    return defs.resolve_sensor_def("imocha_callbacks_sensor"), defs, resources


def test_callbacks_sensor_requests_the_right_partitions_once(sandbox, endpoint, staging_url):
    sensor, defs, resources = sensor_setup(staging_url)
    assert sensor.minimum_interval_seconds == 1  # every daemon loop (the daemon evaluates sensors every 5 s)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    test_id = sandbox.world.tests[0].test_id
    same_day = sandbox.imocha.complete_attempt(test_id, "a@example.com", "A", callback_url=endpoint.callback_url,
                                               attempted_on=yesterday + timedelta(hours=9), time_taken_seconds=1200)
    over_midnight = sandbox.imocha.complete_attempt(test_id, "b@example.com", "B", callback_url=endpoint.callback_url,
                                                    attempted_on=today - timedelta(minutes=10),
                                                    time_taken_seconds=1200)
    staged = sandbox.imocha.complete_attempt(test_id, "c@example.com", "C", callback_url=endpoint.callback_url,
                                             attempted_on=yesterday + timedelta(hours=3), time_taken_seconds=600,
                                             status="Test Left")
    assert sandbox.imocha.wait_for_callbacks()
    with staging.get_engine(staging_url).begin() as conn:
        staging.upsert(conn, staging.imocha_completions, [
            {"test_invitation_id": staged, "attempt_date": yesterday.date(), "extracted_at": staging.utcnow()}])
    rows = inbox(staging_url)
    assert len(rows) == 6, "an In Progress and a final callback per attempt"
    final_row = {r["test_invitation_id"]: r["id"] for r in rows if r["status"] != "In Progress"}

    with dg.instance_for_test() as instance:
        def tick(cursor):
            return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources,
                                                                definitions=defs, cursor=cursor))

        first = tick(None)
        by_partition = {r.partition_key: r for r in first.run_requests}
        assert set(by_partition) == {yesterday.date().isoformat(), today.date().isoformat()}
        assert by_partition[yesterday.date().isoformat()].tags["imocha_pipeline/attempts"] == "2"
        assert by_partition[today.date().isoformat()].tags["imocha_pipeline/attempts"] == "1"
        assert all(r.tags[TRIGGER_TAG] == "callback" and r.run_key.startswith(f"callbacks:{r.partition_key}:")
                   for r in first.run_requests)
        assert json.loads(first.cursor)["requested"] == {
            by_partition[yesterday.date().isoformat()].run_key: sorted([final_row[same_day],
                                                                        final_row[over_midnight]]),
            by_partition[today.date().isoformat()].run_key: [final_row[over_midnight]],
        }

        # Dagster drops the cursor of a failed tick: the retry asks for the very same runs.
        retried = tick(None)
        assert sorted(r.run_key for r in retried.run_requests) == sorted(r.run_key for r in first.run_requests)

        second = tick(first.cursor)
        assert second.run_requests == [] and second.skip_message == "No unprocessed final callbacks in the inbox"
        third = tick(second.cursor)
        assert third.run_requests == []

    marked = {r["id"]: r for r in inbox(staging_url)}
    assert marked[final_row[same_day]]["run_key"] == by_partition[yesterday.date().isoformat()].run_key
    assert set(marked[final_row[over_midnight]]["run_key"].split()) == {r.run_key for r in first.run_requests}
    assert marked[final_row[staged]]["run_key"] is None, "already staged: closed without a run"
    assert all(row["processed_at"] is not None for row in marked.values())

    # The polling sensor leaves attempts to the runs the callbacks already requested.
    # Polled once the over-midnight attempt has finished (at 00:10), even when the test runs just after midnight.
    poll_at = max(datetime.now(UTC), today + timedelta(minutes=30))
    with ImochaClient(sandbox.imocha_url, SANDBOX_IMOCHA_API_KEY) as client:
        poll = poll_completions(client, staging.get_engine(staging_url), None, now=poll_at)
    assert poll.requests == [] and poll.attempts_seen == 3


def test_callbacks_outside_the_partitions_are_closed_without_a_run(staging_url):
    engine = staging.get_engine(staging_url)
    with engine.begin() as conn:
        conn.execute(staging.callback_inbox.insert().values(
            test_invitation_id=11, status="Complete", payload={**SPEC_COMPLETE, "TestInvitationId": 11},
            received_at=utc("2023-05-01T10:00:00")))
    tick = plan_inbox_tick(engine, None, first_day=date(2024, 1, 1))
    assert tick.requests == [] and tick.closed_without_run == 1
    [row] = inbox(staging_url)
    assert row["processed_at"] is not None and row["run_key"] is None


def test_a_corrupt_inbox_cursor_requests_again_instead_of_losing_callbacks(endpoint, staging_url):
    assert post(endpoint, {**SPEC_COMPLETE, "AttemptedOnUtc": "2026-11-28T10:00:00"}).status_code == 200
    engine = staging.get_engine(staging_url)
    now = utc("2026-11-28T10:30:00")
    first = plan_inbox_tick(engine, None, now=now)
    again = plan_inbox_tick(engine, "{corrupt", now=now)
    assert again.cursor_problem == "the cursor is not valid JSON"
    assert [r.run_key for r in again.requests] == [r.run_key for r in first.requests]
    assert [r.partition_key for r in again.requests] == ["2026-11-28"]


# ---------------------------------------------------------------- a day whose run has not read iMocha yet


def queued_run(instance: dg.DagsterInstance, defs: dg.Definitions, day: str, **kwargs) -> dg.DagsterRun:
    """A completion_sync_job run of ``day`` waiting in the run queue, as the daemon leaves a sensor's request.

    Created NOT_STARTED with the origin the daemon records (a queued run must have one), then enqueued with the
    event QueuedRunCoordinator.submit_run reports; ``instance.submit_run`` itself needs a loaded workspace.
    """
    from dagster._core.remote_origin import (  # no public constructor for a run's code location origin
        RegisteredCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )

    origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("imocha_pipeline"),
                                                    "__repository__"), "completion_sync_job")
    run = instance.create_run_for_job(defs.resolve_job_def("completion_sync_job"), remote_job_origin=origin,
                                      tags={"dagster/partition": day, TRIGGER_TAG: "callback"}, **kwargs)
    instance.report_dagster_event(dg.DagsterEvent.job_enqueue(run), run_id=run.run_id)
    queued = instance.get_run_by_id(run.run_id)
    assert queued is not None and queued.status == dg.DagsterRunStatus.QUEUED
    return queued


def report(instance: dg.DagsterInstance, run: dg.DagsterRun, event: dg.DagsterEventType,
           at: datetime | None = None) -> None:
    """What the run worker reports: RUN_STARTING, RUN_START (at ``at``), RUN_SUCCESS."""
    instance.report_dagster_event(dg.DagsterEvent(event.value, job_name=run.job_name), run_id=run.run_id,
                                  timestamp=at.timestamp() if at else None)


def store_final(engine, invitation_id: int, attempted_on: datetime, received_at: datetime) -> int:
    payload = {**SPEC_COMPLETE, "TestInvitationId": invitation_id,
               "AttemptedOnUtc": attempted_on.strftime("%Y-%m-%dT%H:%M:%S")}
    return store_callback(engine, parse_callback(json.dumps(payload)), received_at=received_at)


def inbox_by_id(url: str) -> dict[int, dict]:
    return {row["id"]: row for row in inbox(url)}


@pytest.mark.parametrize("ending", ["canceled", "failed", "succeeded without the attempt"])
def test_a_day_whose_run_is_queued_is_not_requested_again_until_that_run_ends(instance, staging_url, ending):
    sensor, defs, resources = sensor_setup(staging_url)
    engine = staging.get_engine(staging_url)
    now = datetime.now(UTC).replace(microsecond=0)
    queued_day, other_day = (now - timedelta(days=1)).date(), (now - timedelta(days=2)).date()
    waiting = store_final(engine, 101, datetime.combine(queued_day, time(9), UTC), now - timedelta(minutes=5))
    other = store_final(engine, 102, datetime.combine(other_day, time(9), UTC), now - timedelta(minutes=5))
    run = queued_run(instance, defs, queued_day.isoformat())
    # A re-execution (a run retry from the failed step) may skip the extract: it does not stand in for a new run.
    queued_run(instance, defs, other_day.isoformat(), parent_run_id=run.run_id, root_run_id=run.run_id)

    def tick(cursor):
        return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources,
                                                            definitions=defs, cursor=cursor))

    first = tick(None)
    [request] = first.run_requests
    assert request.partition_key == other_day.isoformat(), "no second run for the day whose run is queued"
    assert request.run_key == run_key_for(RUN_KEY_PREFIX, other_day, [other])
    assert json.loads(first.cursor)["requested"] == {request.run_key: [other]}

    second = tick(first.cursor)
    assert second.run_requests == []
    assert second.skip_message == (f"1 final callback(s) wait for the completion_sync_job run(s) already queued or "
                                   f"in progress of {queued_day.isoformat()}; no new run needed")
    rows = inbox_by_id(staging_url)
    assert rows[other]["processed_at"] is not None and rows[other]["run_key"] == request.run_key
    assert rows[waiting]["processed_at"] is None and rows[waiting]["run_key"] is None, "left for the queued run"

    # Starting, then started after the callback arrived: the run reads the attempt when it gets to the extract.
    report(instance, run, dg.DagsterEventType.RUN_STARTING)
    assert tick(second.cursor).run_requests == []
    report(instance, run, dg.DagsterEventType.RUN_START, at=now)
    assert tick(second.cursor).run_requests == []
    assert inbox_by_id(staging_url)[waiting]["processed_at"] is None

    # The run ends without staging the attempt: the next tick asks for the day again, nothing is lost.
    if ending == "canceled":
        instance.report_run_canceled(run)
    elif ending == "failed":
        instance.report_run_failed(run)
    else:
        report(instance, run, dg.DagsterEventType.RUN_SUCCESS)
    third = tick(second.cursor)
    [again] = third.run_requests
    assert again.partition_key == queued_day.isoformat()
    assert again.run_key == run_key_for(RUN_KEY_PREFIX, queued_day, [waiting]), "the same key as without the wait"
    assert tick(second.cursor).run_requests == third.run_requests, "a retried tick asks for the same run"

    fourth = tick(third.cursor)
    assert fourth.run_requests == [] and fourth.skip_message == "No unprocessed final callbacks in the inbox"
    rows = inbox_by_id(staging_url)
    assert {row_id: row["run_key"] for row_id, row in rows.items()} == {other: request.run_key,
                                                                         waiting: again.run_key}
    assert all(row["processed_at"] is not None for row in rows.values())


def test_a_run_in_progress_covers_the_callbacks_from_before_its_start_only(instance, staging_url):
    sensor, defs, resources = sensor_setup(staging_url)
    engine = staging.get_engine(staging_url)
    now = datetime.now(UTC).replace(microsecond=0)
    day = (now - timedelta(days=1)).date()
    early = store_final(engine, 201, datetime.combine(day, time(9), UTC), now - timedelta(seconds=60))
    run = queued_run(instance, defs, day.isoformat())
    report(instance, run, dg.DagsterEventType.RUN_START, at=now - timedelta(seconds=30))
    late = store_final(engine, 202, datetime.combine(day, time(10), UTC), now - timedelta(seconds=10))

    def tick(cursor):
        return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources,
                                                            definitions=defs, cursor=cursor))

    # The run may have read iMocha before the late attempt ended: a new run for it, as before.
    first = tick(None)
    [request] = first.run_requests
    assert request.partition_key == day.isoformat()
    assert request.run_key == run_key_for(RUN_KEY_PREFIX, day, [late])
    assert request.tags["imocha_pipeline/attempts"] == "1"

    # The run stages the early attempt and succeeds: the early callback is closed, the late one confirmed.
    with engine.begin() as conn:
        staging.upsert(conn, staging.imocha_completions, [
            {"test_invitation_id": 201, "attempt_date": day, "extracted_at": staging.utcnow()}])
    report(instance, run, dg.DagsterEventType.RUN_SUCCESS)
    second = tick(first.cursor)
    assert second.run_requests == []
    rows = inbox_by_id(staging_url)
    assert rows[early]["processed_at"] is not None and rows[early]["run_key"] is None, "staged: closed"
    assert rows[late]["processed_at"] is not None and rows[late]["run_key"] == request.run_key


def test_a_callback_of_two_days_one_of_them_waiting_stays_unprocessed_until_both_are_requested(staging_url):
    engine = staging.get_engine(staging_url)
    row = store_final(engine, 301, utc("2026-11-27T23:50:00"), utc("2026-11-28T00:20:00"))
    now = utc("2026-11-28T00:30:00")
    lookups: list[list[str]] = []

    def queued_27th(days):
        lookups.append(list(days))
        return [UnfinishedRun("2026-11-27", "run-27")]

    first = plan_inbox_tick(engine, None, now=now, unfinished_runs=queued_27th)
    assert lookups == [["2026-11-27", "2026-11-28"]], "one look-up per tick, for the days with callbacks"
    [request] = first.requests
    assert request.partition_key == "2026-11-28" and first.waiting == 1
    assert first.cursor.requested == {request.run_key: ()}, "not confirmed: the 27th may still need it"

    # The run of the 27th failed: both days are requested, the 28th with the key it already has.
    second = plan_inbox_tick(engine, first.cursor.to_json(), now=now, unfinished_runs=lambda days: [])
    assert inbox_by_id(staging_url)[row]["processed_at"] is None
    assert {r.partition_key: r.run_key for r in second.requests} == {
        "2026-11-27": run_key_for(RUN_KEY_PREFIX, date(2026, 11, 27), [row]), "2026-11-28": request.run_key}
    third = plan_inbox_tick(engine, second.cursor.to_json(), now=now, unfinished_runs=queued_27th)
    assert third.requests == [] and third.confirmed == 1 and len(lookups) == 1, "nothing left: no look-up"
    assert inbox_by_id(staging_url)[row]["processed_at"] is not None


def test_callbacks_waiting_for_a_queued_run_do_not_hold_back_newer_ones(staging_url):
    engine = staging.get_engine(staging_url)
    settings = CallbackSettings(max_rows_per_tick=3)
    # Seven callbacks arrived before the run of the 28th started (it will list them); five after (it may not).
    before = [store_final(engine, 400 + n, utc("2026-11-28T09:00:00"), utc("2026-11-28T10:00:00")) for n in range(7)]
    after = [store_final(engine, 500 + n, utc("2026-11-28T10:00:00"), utc("2026-11-28T11:00:00")) for n in range(5)]
    now = utc("2026-11-28T11:05:00")
    lookups: list[list[str]] = []

    def started_at_half_past_ten(days):
        lookups.append(list(days))
        return [UnfinishedRun("2026-11-28", "run-28", started_at=utc("2026-11-28T10:30:00"))]

    first = plan_inbox_tick(engine, None, now=now, settings=settings, unfinished_runs=started_at_half_past_ten)
    [request] = first.requests
    assert request.inbox_ids == tuple(after[:3]), "the cap counts requested callbacks, not the waiting ones"
    assert first.waiting == 7 and lookups == [["2026-11-28"]], "one look-up for a day, however many pages"
    second = plan_inbox_tick(engine, first.cursor.to_json(), now=now, settings=settings,
                             unfinished_runs=started_at_half_past_ten)
    assert second.confirmed == 3 and [r.inbox_ids for r in second.requests] == [tuple(after[3:])]
    third = plan_inbox_tick(engine, second.cursor.to_json(), now=now, settings=settings,
                            unfinished_runs=started_at_half_past_ten)
    assert third.requests == [] and third.confirmed == 2 and "7 final callback(s) wait" in third.skip_reason
    rows = inbox_by_id(staging_url)
    assert all(rows[i]["processed_at"] is None for i in before), "left for the run, which may still fail"
    assert all(rows[i]["processed_at"] is not None for i in after)


def test_a_tick_reads_a_bounded_number_of_pages_past_waiting_callbacks(staging_url):
    engine = staging.get_engine(staging_url)
    settings = CallbackSettings(max_rows_per_tick=1)
    for n in range(MAX_PAGES_PER_TICK):
        store_final(engine, 600 + n, utc("2026-11-28T09:00:00"), utc("2026-11-28T10:00:00"))
    late = store_final(engine, 700, utc("2026-11-28T10:00:00"), utc("2026-11-28T11:00:00"))
    started = [UnfinishedRun("2026-11-28", "run-28", started_at=utc("2026-11-28T10:30:00"))]
    first = plan_inbox_tick(engine, None, now=utc("2026-11-28T11:05:00"), settings=settings,
                            unfinished_runs=lambda days: started)
    assert first.requests == [] and first.waiting == MAX_PAGES_PER_TICK, "the late one is beyond this tick's pages"
    assert inbox_by_id(staging_url)[late]["processed_at"] is None, "still there for a later tick"


# ---------------------------------------------------------------- replay


def test_replay_asks_imocha_to_resend_missed_callbacks_and_they_arrive(sandbox, endpoint, staging_url):
    engine = staging.get_engine(staging_url)
    test_id = sandbox.world.tests[0].test_id
    delivered = sandbox.imocha.complete_attempt(test_id, "ok@example.com", "Ok", callback_url=endpoint.callback_url)
    assert sandbox.imocha.wait_for_callbacks()
    endpoint.switch.down = True
    missed = [sandbox.imocha.complete_attempt(test_id, f"m{n}@example.com", "M", callback_url=endpoint.callback_url)
              for n in range(105)]
    no_url = sandbox.imocha.complete_attempt(test_id, "nourl@example.com", "N")
    assert sandbox.imocha.wait_for_callbacks(timeout=60)
    assert {r["test_invitation_id"] for r in inbox(staging_url)} == {delivered}
    endpoint.switch.down = False
    mark = sandbox.imocha.log.last_seq

    with ImochaClient(sandbox.imocha_url, SANDBOX_IMOCHA_API_KEY) as client:
        dry = replay_missed_callbacks(client, engine, since=timedelta(hours=6), dry_run=True)
        assert set(dry.missing) == {*missed, no_url} and dry.successful == ()
        report = replay_missed_callbacks(client, engine, since=timedelta(hours=6))

    assert report.finished == 107 and set(report.missing) == {*missed, no_url}
    assert set(report.successful) == set(missed) and report.failed == (no_url,)
    calls = [json.loads(e.body)["testinvitationIds"] for e in sandbox.imocha.log.entries(mark)
             if e.path == "/v3/callbacks/process"]
    assert [len(ids) for ids in calls] == [100, 6], "at most 100 ids per call"
    assert sandbox.imocha.wait_for_callbacks(timeout=60)
    final = {r["test_invitation_id"] for r in inbox(staging_url) if r["status"] == "Complete"}
    assert final == {delivered, *missed}
    with staging.get_engine(staging_url).connect() as conn:
        unprocessed = conn.execute(sa.select(sa.func.count()).select_from(staging.callback_inbox)
                                   .where(staging.callback_inbox.c.processed_at.is_(None))).scalar_one()
    assert unprocessed == 106, "replayed callbacks wait in the inbox for the callbacks sensor"
