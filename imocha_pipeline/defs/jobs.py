"""Jobs and schedules that drive the sync."""

from __future__ import annotations

import os

import dagster as dg

from imocha_pipeline.defs.assessments import ASSESSMENT_ASSETS
from imocha_pipeline.defs.completions import COMPLETION_ASSETS
from imocha_pipeline.defs.partitions import completion_partitions

DEFAULT_ASSESSMENT_SYNC_CRON = "0 * * * *"

assessment_sync_job = dg.define_asset_job(
    "assessment_sync_job",
    selection=dg.AssetSelection.assets(*ASSESSMENT_ASSETS),
    description="Extract iMocha tests, snapshot Degreed, validate, plan, guard, and apply the changes.",
    tags={"imocha_pipeline/entity": "assessment"},
)

assessment_sync_schedule = dg.ScheduleDefinition(
    name="assessment_sync_schedule",
    job=assessment_sync_job,
    # The cron is read when the code location loads: a deployment setting, not a secret.
    cron_schedule=os.environ.get("IMOCHA_PIPELINE_ASSESSMENT_SYNC_CRON", "").strip() or DEFAULT_ASSESSMENT_SYNC_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Keeps Degreed's Assessment content in step with iMocha (hourly by default).",
)

completion_sync_job = dg.define_asset_job(
    "completion_sync_job",
    selection=dg.AssetSelection.assets(*COMPLETION_ASSETS),
    partitions_def=completion_partitions,
    description="Extract finished iMocha attempts of the given days, validate, plan, and send completions and "
                "skill ratings to Degreed.",
    tags={"imocha_pipeline/entity": "completion"},
)
