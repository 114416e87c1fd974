"""Jobs and schedules that drive the sync."""

from __future__ import annotations

import dagster as dg

from imocha_pipeline.defs.assessments import ASSESSMENT_ASSETS, degreed_assessments
from imocha_pipeline.defs.completions import CATCH_UP_ASSETS, COMPLETION_ASSETS
from imocha_pipeline.defs.reconcile import RECONCILE_ASSETS
from imocha_pipeline.defs.resources import StagingDatabaseResource
from imocha_pipeline.settings import (
    IMOCHA_PIPELINE_ASSESSMENT_SYNC_CRON,
    IMOCHA_PIPELINE_CATCH_UP_CRON,
    IMOCHA_PIPELINE_RECONCILE_CRON,
)
from imocha_pipeline.sync.catch_up import catch_up_work
from imocha_pipeline.sync.entities import ATTEMPT_ENTITIES

DEFAULT_ASSESSMENT_SYNC_CRON = IMOCHA_PIPELINE_ASSESSMENT_SYNC_CRON.default
DEFAULT_RECONCILE_CRON = IMOCHA_PIPELINE_RECONCILE_CRON.default
DEFAULT_CATCH_UP_CRON = IMOCHA_PIPELINE_CATCH_UP_CRON.default
UNFINISHED = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)
# The cron settings are read when the code location loads: deployment settings, not secrets.

assessment_sync_job = dg.define_asset_job(
    "assessment_sync_job",
    selection=dg.AssetSelection.assets(*ASSESSMENT_ASSETS),
    description="Extract iMocha tests, snapshot Degreed, validate, plan, guard, and apply the changes.",
    tags={"imocha_pipeline/entity": "assessment"},
)

assessment_sync_schedule = dg.ScheduleDefinition(
    name="assessment_sync_schedule",
    job=assessment_sync_job,
    cron_schedule=IMOCHA_PIPELINE_ASSESSMENT_SYNC_CRON.value(),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Keeps Degreed's Assessment content in step with iMocha (hourly by default).",
)

completion_sync_job = dg.define_asset_job(
    "completion_sync_job",
    selection=dg.AssetSelection.assets(*COMPLETION_ASSETS),
    description="Extract finished iMocha attempts of the given days, validate, plan, and send completions and "
                "skill ratings to Degreed.",
    tags={"imocha_pipeline/entity": "completion"},
    # The steps run one after another anyway (extract -> plan -> check -> apply); in one process a
    # sensor-triggered run for a few attempts takes seconds instead of a process start per step
    # (bench/latency.py: about 10 s less from an attempt finishing to Degreed's acknowledgement).
    executor_def=dg.in_process_executor,
)

reconcile_job = dg.define_asset_job(
    "reconcile_job",
    selection=dg.AssetSelection.assets(degreed_assessments, *RECONCILE_ASSETS),
    description="Read what Degreed holds for our provider, compare it with the ledger, repair what is missing "
                "and report drift.",
    tags={"imocha_pipeline/entity": "reconcile"},
)

reconcile_schedule = dg.ScheduleDefinition(
    name="reconcile_schedule",
    job=reconcile_job,
    cron_schedule=IMOCHA_PIPELINE_RECONCILE_CRON.value(),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly reconciliation of Degreed with what the pipeline wrote.",
)

catch_up_job = dg.define_asset_job(
    "catch_up_job",
    selection=dg.AssetSelection.assets(*CATCH_UP_ASSETS),
    description="Send every outstanding completion and skill rating of any day: attempts no plan has seen, records "
                "that waited for their assessment or learner, writes that failed. Nobody has to know which "
                "partition to re-run.",
    tags={"imocha_pipeline/entity": "catch_up"},
    executor_def=dg.in_process_executor,
)


@dg.schedule(
    name="catch_up_schedule",
    job=catch_up_job,
    cron_schedule=IMOCHA_PIPELINE_CATCH_UP_CRON.value(),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 5 minutes (IMOCHA_PIPELINE_CATCH_UP_CRON): starts catch_up_job when anything outstanding is "
                "due, and skips, saying so, when nothing is or a catch-up run is still going.",
)
def catch_up_schedule(context: dg.ScheduleEvaluationContext, staging_db: StagingDatabaseResource):
    running = context.instance.get_run_records(dg.RunsFilter(job_name="catch_up_job", statuses=list(UNFINISHED)),
                                               limit=1)
    if running:
        return dg.SkipReason(f"catch_up_job run {running[0].dagster_run.run_id} has not finished yet")
    work = catch_up_work(staging_db.engine(), ATTEMPT_ENTITIES)
    if not work:
        return dg.SkipReason("nothing outstanding is due: every planned completion and skill rating is in Degreed "
                             "or waits for its retry time")
    summary = ", ".join(f"{name} {count}" for name, count in sorted(work.items()))
    context.log.info("catch-up needed: %s", summary)
    return dg.RunRequest(tags={"imocha_pipeline/trigger": "catch_up", "imocha_pipeline/catch_up": summary})
