"""Sensors that start ``completion_sync_job`` runs for the UTC days in which attempts finished.

Two paths, each safe on its own, that avoid requesting the same attempt twice:

- ``imocha_completions_sensor`` polls iMocha's Retrieve Invites (every 30 s by default): the complete,
  self-healing path. It catches every attempt, including those whose callback never came.
- ``imocha_callbacks_sensor`` reads the callback inbox (on every loop of the daemon, about every 5 s) that the callback
  endpoint (``imocha_pipeline.callbacks_server``) fills: the fast path, seconds after an attempt ends.

``completion_day_end_schedule`` reads each UTC day once after it ends when no run has (a day without attempts):
the day's partitions are then materialized with 0 rows, so the UI's partition health tells a day that was read
and had nothing from a day that was never synced.

Runs carry the tag ``imocha_pipeline/trigger`` (``poll``, ``callback`` or ``day_end``) and a run key made from the
partition and the attempts (or inbox rows) they were requested for, so a retried tick never launches
a second run for the same work.

Both sensors ask the Dagster instance (one query per tick, only when there is something to request) for the
unfinished runs of the days concerned, and request no run for a day whose run will still read iMocha after
the attempt was known finished (queued or starting; for a callback also started after it arrived): that run
lists the attempt. The callbacks sensor leaves the inbox row unprocessed meanwhile (``sync/callbacks.py``), the
polling sensor keeps the attempt in its cursor's ``waiting`` list (``sync/completion_sensor.py``); either asks
for the day after all if that run ends without staging the attempt, so nothing is lost.

The polling sensor also keeps every attempt it requested, or saw a callback run requested for, in its cursor's
``pending`` list until ``imocha_completions`` holds it: a run that fails before staging it, or quarantines it
because iMocha's report was not ready yet, does not lose it. Once no run of its day will still read iMocha after
the last request and a back-off has passed (1 minute, doubling per try, at most 1 hour), it asks for the day
again, with a run key that carries the try number: Dagster never launches a run key twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from imocha_pipeline.defs.partitions import completion_partitions
from imocha_pipeline.defs.resources import ImochaResource, StagingDatabaseResource
from imocha_pipeline.settings import (
    IMOCHA_PIPELINE_CALLBACK_SENSOR_INTERVAL_SECONDS,
    IMOCHA_PIPELINE_POLL_INTERVAL_SECONDS,
)
from imocha_pipeline.sync.triggers.callbacks import CallbackSettings, plan_inbox_tick
from imocha_pipeline.sync.triggers.polling import PollSettings, poll_completions, tick_client
from imocha_pipeline.sync.triggers.runs import UnfinishedRun

COMPLETION_JOB = "completion_sync_job"
TRIGGER_TAG = "imocha_pipeline/trigger"
ATTEMPTS_TAG = "imocha_pipeline/attempts"
PARTITION_TAG = "dagster/partition"
# The asset whose step reads iMocha's Retrieve Invites for the run's day (defs/completions.py).
EXTRACT_ASSET = dg.AssetKey("imocha_completions")
# Not started yet: nothing read. STARTED runs count only for callbacks that arrived before their start.
NOT_STARTED_STATUSES = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING)

# Intervals are fixed when the code location loads; every other setting is read at each tick.
POLL_INTERVAL_SECONDS = IMOCHA_PIPELINE_POLL_INTERVAL_SECONDS.value()
# The daemon evaluates sensors at most every 5 s; a minimum interval of 5 s would skip every other loop (so
# 10 s between ticks), 1 s lets the callbacks sensor run on every loop (bench/latency.py: p95 from 12 s to 9 s).
CALLBACK_INTERVAL_SECONDS = IMOCHA_PIPELINE_CALLBACK_SENSOR_INTERVAL_SECONDS.value()


def sensor_result(requests, trigger: str, cursor: str, skip_reason: str | None) -> dg.SensorResult:
    """The one result of a tick: a run per requested day (tagged with the trigger), or the skip reason."""
    run_requests = [
        dg.RunRequest(run_key=request.run_key, partition_key=request.partition_key,
                      tags={TRIGGER_TAG: trigger, ATTEMPTS_TAG: str(len(request.invitation_ids))})
        for request in requests
    ]
    if run_requests:
        return dg.SensorResult(run_requests=run_requests, cursor=cursor)
    return dg.SensorResult(skip_reason=skip_reason, cursor=cursor)


def unfinished_completion_runs(instance: dg.DagsterInstance, partition_keys: Sequence[str]) -> list[UnfinishedRun]:
    """The ``completion_sync_job`` runs of these days that are queued, starting or started, in one query.

    Only runs that will read iMocha count: not re-executions (a run retry from the failed step may skip the
    extract) and not runs of an asset subset without the extract.
    """
    records = instance.get_run_records(dg.RunsFilter(
        job_name=COMPLETION_JOB,
        statuses=[*NOT_STARTED_STATUSES, dg.DagsterRunStatus.STARTED],
        tags={PARTITION_TAG: list(partition_keys)},
    ))
    runs = []
    for record in records:
        run = record.dagster_run
        if run.parent_run_id is not None or (run.asset_selection is not None
                                             and EXTRACT_ASSET not in run.asset_selection):
            continue
        if run.status in NOT_STARTED_STATUSES:
            started_at = None
        elif record.start_time is not None:
            started_at = datetime.fromtimestamp(record.start_time, UTC)
        else:
            continue
        runs.append(UnfinishedRun(run.tags[PARTITION_TAG], run.run_id, started_at))
    return runs


@dg.sensor(
    name="imocha_completions_sensor",
    job_name=COMPLETION_JOB,
    minimum_interval_seconds=POLL_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Polls iMocha's Retrieve Invites for attempts finished since the last tick (re-reading the last 12 hours, "
        "the longest attempt, in case iMocha files attempts under their start time, and at least a 15-minute "
        "overlap for late arrivals) and requests one completion_sync_job run per UTC day with new ones. "
        "Attempts already staged or already requested are skipped; at most 500 per tick, the rest next tick. "
        "A requested attempt (also one a callback run was requested for) stays pending until it is staged: "
        "once no run of its day will still read iMocha and its back-off has passed (1 minute, doubling per try, "
        "at most 1 hour) it is requested again, with a new run key. "
        "A day whose run is queued or starting is not requested again: the attempts wait for that run, and are "
        "requested if it ends without staging them. Cursor: {\"v\": 1, \"until\": <UTC>, \"pending\": "
        "{<invitation id>: [<day>, <last requested UTC>, <tries>]}, \"waiting\": {<invitation id>: [<day>, "
        "<seen UTC>]}}; an unusable cursor restarts 2 days back. Settings: IMOCHA_PIPELINE_POLL_*."
    ),
)
def imocha_completions_sensor(
    context: dg.SensorEvaluationContext, imocha: ImochaResource, staging_db: StagingDatabaseResource
) -> dg.SensorResult:
    settings = PollSettings.from_env()
    client = tick_client(imocha.resolved_base_url(), imocha.api_key, settings,
                         staging_url=imocha.staging_db_url or staging_db.resolved_url())
    try:
        outcome = poll_completions(client, staging_db.engine(), context.cursor, settings=settings,
                                   earliest=completion_partitions.start,
                                   unfinished_runs=lambda days: unfinished_completion_runs(context.instance, days))
    finally:
        client.close()
    if outcome.restart_reason:
        context.log.warning(f"Cursor restarted at now - look-back: {outcome.restart_reason}")
    context.log.info(outcome.summary())
    return sensor_result(outcome.requests, "poll", outcome.cursor_json, outcome.skip_reason)


@dg.sensor(
    name="imocha_callbacks_sensor",
    job_name=COMPLETION_JOB,
    minimum_interval_seconds=CALLBACK_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Turns final iMocha callbacks (Complete / Test Left / Terminated) stored by the callback endpoint into "
        "completion_sync_job runs, one per UTC day the attempt may have finished on (from its AttemptedOnUtc "
        "start to its delivery, at most 12 hours later). Attempts already staged need no run. A day whose run is "
        "queued or starting (or started after the callback arrived) is not requested again: that run reads the "
        "attempt, and the callback stays unprocessed until it is staged or no such run is left. Inbox rows are "
        "marked processed, with their run key, once the next tick sees the runs were accepted."
    ),
)
def imocha_callbacks_sensor(
    context: dg.SensorEvaluationContext, staging_db: StagingDatabaseResource
) -> dg.SensorResult:
    instance = context.instance
    tick = plan_inbox_tick(staging_db.engine(), context.cursor, first_day=completion_partitions.start.date(),
                           settings=CallbackSettings.from_env(),
                           unfinished_runs=lambda days: unfinished_completion_runs(instance, days))
    if tick.cursor_problem:
        context.log.warning(f"Ignored the cursor: {tick.cursor_problem}")
    context.log.info(tick.summary())
    return sensor_result(tick.requests, "callback", tick.cursor.to_json(), tick.skip_reason)


COMPLETION_SENSORS = [imocha_completions_sensor, imocha_callbacks_sensor]


def day_end_request(instance: dg.DagsterInstance, day: date) -> dg.RunRequest | dg.SkipReason:
    """A run that reads ``day`` when no run has materialized it yet (and none of it is under way)."""
    key = day.isoformat()
    if day < completion_partitions.start.date():
        return dg.SkipReason(f"{key} is before the first partition ({completion_partitions.start.date()})")
    done = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=EXTRACT_ASSET, asset_partitions=[key]),
                                           limit=1).records
    if done:
        return dg.SkipReason(f"{key} is already synced (imocha_completions materialized by run "
                             f"{done[0].run_id})")
    if unfinished_completion_runs(instance, [key]):
        return dg.SkipReason(f"a completion_sync_job run of {key} is under way")
    return dg.RunRequest(run_key=f"day_end:{key}", partition_key=key, tags={TRIGGER_TAG: "day_end"})


@dg.schedule(
    name="completion_day_end_schedule",
    job_name=COMPLETION_JOB,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At 00:30 UTC: reads the day that just ended with one completion_sync_job run when no run has "
                "synced it (no attempts finished that day, so the sensors asked for none). Its partitions are then "
                "materialized with 0 rows: partition health shows every day read as synced and only days never "
                "read as missing.",
)
def completion_day_end_schedule(context: dg.ScheduleEvaluationContext):
    ended = (context.scheduled_execution_time.astimezone(UTC) - timedelta(days=1)).date()
    return day_end_request(context.instance, ended)


COMPLETION_SCHEDULES = [completion_day_end_schedule]
