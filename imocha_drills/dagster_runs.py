"""What Dagster itself does to runs, driven for real in a drill: a job launched with ``dg.execute_job`` (a
reconstructable job, as the run launcher starts it), its re-execution from the failed step under a new run id
(``ReexecutionOptions.from_failure``: what the run-retry daemon does), a sensor tick and a schedule tick
evaluated on the drill's Dagster instance with the runs they request executed in turn.

The jobs are rebuilt from ``IMOCHA_PIPELINE_DRILL_SETTINGS`` (the sandbox's settings and the staging URL, set by
``use_drill``) in whatever process Dagster loads them, exactly as the code location is loaded from the
environment in production.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import dagster as dg

from imocha_drills.outcome import user_error
from imocha_pipeline.definitions import build_definitions
from imocha_pipeline.defs.resources import resources_from_settings

SETTINGS_ENV = "IMOCHA_PIPELINE_DRILL_SETTINGS"


def drill_definitions() -> dg.Definitions:
    values = json.loads(os.environ[SETTINGS_ENV])
    return build_definitions(resources_from_settings(values["settings"], values["staging_url"]))


def assessment_sync_job() -> dg.JobDefinition:
    return drill_definitions().resolve_job_def("assessment_sync_job")


def completion_sync_job() -> dg.JobDefinition:
    return drill_definitions().resolve_job_def("completion_sync_job")


def catch_up_job() -> dg.JobDefinition:
    return drill_definitions().resolve_job_def("catch_up_job")


def forget_job() -> dg.JobDefinition:
    return drill_definitions().resolve_job_def("forget_job")


JOBS = {"assessment_sync_job": assessment_sync_job, "completion_sync_job": completion_sync_job,
        "catch_up_job": catch_up_job, "forget_job": forget_job}


@dataclass
class RunOutcome:
    """One run as Dagster recorded it."""

    run_id: str
    success: bool
    parent_run_id: str | None
    failures: list[str] = field(default_factory=list)
    materialized: list[str] = field(default_factory=list)


def use_drill(drill) -> None:
    """Make ``drill_definitions`` build the drill's code location in this process and in the processes it starts.

    Dagster keeps the last loaded job of a reconstructable target (``lru_cache`` on ``ReconstructableJob``); a
    second drill in the same process must not get the first one's (its sandbox ports are gone).
    """
    from dagster._core.definitions.reconstruct import ReconstructableJob  # its caches have no public reset

    os.environ[SETTINGS_ENV] = json.dumps({"settings": drill.sandbox.env(), "staging_url": drill.staging_url})
    for method in (ReconstructableJob.get_definition, ReconstructableJob.get_repository_definition):
        method.cache_clear()


def execute(drill, job: str, *, tags: dict[str, str] | None = None, run_config: dict | None = None,
            retry_of: str | None = None, asset_selection: list[str] | None = None) -> RunOutcome:
    """Launch ``job`` with ``dg.execute_job`` on the drill's instance; ``retry_of``: re-execute that run from its
    failed step under a new run id, with the parent's tags (its partition or range) and run config, as the
    run-retry daemon does (``create_reexecuted_run(..., use_parent_run_tags=True)``)."""
    use_drill(drill)
    options = None
    if retry_of:
        from dagster._core.storage.tags import TAGS_TO_MAYBE_OMIT_ON_RETRY  # the daemon's own list; not public

        parent = drill.instance.get_run_by_id(retry_of)
        tags = {**{k: v for k, v in parent.tags.items() if k not in TAGS_TO_MAYBE_OMIT_ON_RETRY},
                "dagster/is_resume_retry": "true", **(tags or {})}
        run_config = run_config if run_config is not None else parent.run_config
        options = dg.ReexecutionOptions.from_failure(retry_of, drill.instance)
    selection = [dg.AssetKey(key) for key in asset_selection] if asset_selection else None
    with dg.execute_job(dg.reconstructable(JOBS[job]), instance=drill.instance, tags=tags, run_config=run_config,
                        reexecution_options=options, raise_on_error=False, asset_selection=selection) as result:
        run = drill.instance.get_run_by_id(result.run_id)
        failures = []
        for event in result.all_events:
            if event.is_step_failure:
                data = event.step_failure_data
                text = data.user_failure_data.description if data.user_failure_data else None
                if not text and data.error is not None:
                    error = user_error(data.error)
                    text = f"{error.cls_name}: {error.message.strip()}"
                failures.append(f"{event.step_key}: {text}")
        materialized = sorted({e.asset_key.to_user_string() for e in result.all_events
                               if e.event_type_value == "ASSET_MATERIALIZATION"})
        return RunOutcome(result.run_id, result.success, run.parent_run_id if run else None, failures,
                          materialized)


def sensor_tick(drill, name: str, cursor: str | None) -> dg.SensorResult:
    """One tick of a sensor of the drill's code location, on the drill's instance."""
    sensor = drill.defs.resolve_sensor_def(name)
    context = dg.build_sensor_context(instance=drill.instance, resources=drill.defs.resources,
                                      definitions=drill.defs, cursor=cursor)
    return sensor.evaluate_tick(context)


def run_requests(drill, tick) -> list:
    """Execute the completion_sync_job runs a tick requested, in order, each with its partition and tags."""
    outcomes = []
    for request in tick.run_requests or []:
        tags = {**(request.tags or {}), "dagster/partition": request.partition_key}
        if request.run_key:
            tags["dagster/run_key"] = request.run_key
        outcomes.append(drill.run("completion_sync_job", tags))
    return outcomes


def catch_up_tick(drill):
    """One tick of catch_up_schedule; the catch_up_job run it asks for is executed. None: it skipped."""
    from datetime import UTC, datetime

    schedule = drill.defs.resolve_schedule_def("catch_up_schedule")
    context = dg.build_schedule_context(instance=drill.instance, resources=drill.defs.resources,
                                        scheduled_execution_time=datetime.now(UTC))
    tick = schedule.evaluate_tick(context)
    if not tick.run_requests:
        return None
    return drill.run("catch_up_job", dict(tick.run_requests[0].tags or {}))
