"""The code location: every asset, check, job, sensor, schedule and resource of imocha_pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from imocha_pipeline.defs.assessments import ASSESSMENT_ASSETS, ASSESSMENT_CHECKS
from imocha_pipeline.defs.bulk import BULK_ASSETS
from imocha_pipeline.defs.completions import CATCH_UP_ASSETS, COMPLETION_ASSETS, COMPLETION_CHECKS
from imocha_pipeline.defs.erasure import forget_job
from imocha_pipeline.defs.jobs import (
    assessment_sync_job,
    assessment_sync_schedule,
    catch_up_job,
    catch_up_schedule,
    completion_sync_job,
    reconcile_job,
    reconcile_schedule,
)
from imocha_pipeline.defs.reconcile import RECONCILE_ASSETS
from imocha_pipeline.defs.resources import resources_from_env
from imocha_pipeline.defs.retention import retention_job, retention_schedule
from imocha_pipeline.defs.sensors import COMPLETION_SCHEDULES, COMPLETION_SENSORS


def build_definitions(resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The definitions with the given resources (tests pass sandbox-bound ones; production reads the env)."""
    return dg.Definitions(
        assets=[*ASSESSMENT_ASSETS, *COMPLETION_ASSETS, *CATCH_UP_ASSETS, *RECONCILE_ASSETS, *BULK_ASSETS],
        asset_checks=[*ASSESSMENT_CHECKS, *COMPLETION_CHECKS],
        jobs=[assessment_sync_job, completion_sync_job, catch_up_job, reconcile_job, retention_job,
              forget_job],
        schedules=[assessment_sync_schedule, catch_up_schedule, reconcile_schedule, retention_schedule,
                   *COMPLETION_SCHEDULES],
        sensors=[*COMPLETION_SENSORS],
        resources=dict(resources) if resources is not None else resources_from_env(),
    )


defs = build_definitions()
