"""Completions and skill scores: each finished iMocha attempt becomes a Degreed completion and skill ratings."""

from datetime import date, timedelta

import dagster as dg

from imocha_pipeline import staging
from imocha_pipeline.clients.http import RequestMetrics
from imocha_pipeline.defs.delivery_step import deliver_all
from imocha_pipeline.defs.metadata import preview_table, request_metadata
from imocha_pipeline.defs.partitions import completion_partitions
from imocha_pipeline.defs.resources import (
    DegreedResource,
    ImochaResource,
    StagingDatabaseResource,
    SyncSettingsResource,
)
from imocha_pipeline.sync.completions.extract import extract_completions
from imocha_pipeline.sync.completions.plan import (
    build_completion_plans,
    mark_planned,
    plan_unplanned,
    quarantine_unreadable_reports,
    stage_entity_plan,
)
from imocha_pipeline.sync.completions.records import COMPLETION, SKILL_RATING
from imocha_pipeline.sync.completions.skill_mapping import stage_skill_mapping
from imocha_pipeline.sync.core.delivery import validate_payloads
from imocha_pipeline.sync.core.diff import WRITE_ACTIONS
from imocha_pipeline.sync.core.identities import DegreedDirectory
from imocha_pipeline.sync.core.outstanding import Scope, outstanding
from imocha_pipeline.sync.core.progress import eta_minutes, format_duration, plan_eta_line
from imocha_pipeline.sync.entities import ATTEMPT_ENTITIES

PAYLOADS_VALID_CHECK = "completion_payloads_valid"
single_run = dg.BackfillPolicy.single_run()


def partition_days(context) -> list[date]:
    """The UTC days of this run: one partition, or a whole range in a single-run backfill."""
    window = context.partition_time_window
    first, last = window.start.date(), (window.end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


class ExtractConfig(dg.Config):
    full_refresh: bool = False
    """Fetch reports again even for attempts already staged (normally each report is read once)."""


@dg.multi_asset(
    specs=[
        dg.AssetSpec("imocha_completions", group_name="completions", kinds={"api", "sql"},
                     description="Finished iMocha attempts (one row per attempt) with learner, score, points, "
                                 "performance category and time taken, per UTC day (table imocha_completions)."),
        dg.AssetSpec("imocha_skill_scores", group_name="completions", kinds={"api", "sql"},
                     description="Skill scores of each finished attempt, one row per (attempt, skill), with "
                                 "points, maximum and percent (table imocha_skill_scores)."),
    ],
    partitions_def=completion_partitions,
    backfill_policy=single_run,
)
def imocha_attempts(context: dg.AssetExecutionContext, config: ExtractConfig, imocha: ImochaResource,
                    staging_db: StagingDatabaseResource):
    """Reads finished attempts from Retrieve Invites and each attempt's report (reportType=3) once."""
    days = partition_days(context)
    metrics = RequestMetrics()
    engine = staging_db.engine()
    result = extract_completions(imocha.client(metrics=metrics), engine, days, full_refresh=config.full_refresh,
                                 max_workers=imocha.max_parallel_requests)
    with engine.begin() as conn:
        staging.upsert(conn, staging.imocha_completions, result.completions)
        staging.upsert(conn, staging.imocha_skill_scores, result.skill_scores)
    for invitation_id, problem in result.problems:
        context.log.warning("attempt %s: %s", invitation_id, problem)
    quarantine_unreadable_reports(engine, result.problems, context.run.run_id)
    context.log.info("days %s..%s: %d new attempts staged, %d already staged, %d reports unavailable",
                     days[0], days[-1], len(result.completions), result.already_staged, len(result.problems))
    yield dg.MaterializeResult(asset_key="imocha_completions", metadata={
        "new_attempts": len(result.completions), "already_staged": result.already_staged,
        "reports_fetched": result.reports_fetched, "reports_unavailable": len(result.problems),
        "days": f"{days[0]}..{days[-1]}", **request_metadata(metrics, "imocha_requests"),
    })
    yield dg.MaterializeResult(asset_key="imocha_skill_scores", metadata={
        "new_skill_scores": len(result.skill_scores),
        "attempts_without_skills": sum(1 for c in result.completions if not c["has_skills"]),
    })


@dg.asset(
    group_name="completions", deps=["imocha_completions", "imocha_skill_scores"], kinds={"pandas", "sql"},
    partitions_def=completion_partitions, backfill_policy=single_run, owners=["team:data-engineering"],
)
def completion_sync_plan(context: dg.AssetExecutionContext, staging_db: StagingDatabaseResource,
                         sync_settings: SyncSettingsResource, degreed: DegreedResource) -> dg.MaterializeResult:
    """What the apply step will send to Degreed for these days: completions and skill ratings, per record.

    Invalid attempts go to sync_quarantine with the reason; attempts of learners or assessments Degreed does
    not have yet wait there too and are retried on later runs.
    """
    engine = staging_db.engine()
    run_id = context.run.run_id
    stage_skill_mapping(engine)  # for analysts: v_unmapped_skills
    days = partition_days(context)
    completions, ratings = build_completion_plans(engine, days, sync_settings.completion_mapping(), run_id)
    metadata: dict[str, object] = {}
    writes = 0
    for entity_plan in (completions, ratings):
        stage_entity_plan(engine, entity_plan, run_id)
        counts = entity_plan.frame["action"].value_counts().to_dict() if not entity_plan.frame.empty else {}
        for action in ("create", "update", "unchanged", "wait", "skip"):
            metadata[f"{entity_plan.entity}_{action}"] = int(counts.get(action, 0))
        metadata[f"{entity_plan.entity}_quarantined"] = len(entity_plan.quarantined)
        writes += sum(int(counts.get(a, 0)) for a in WRITE_ACTIONS)
        changes = entity_plan.frame[entity_plan.frame["action"] != "unchanged"] if not entity_plan.frame.empty \
            else entity_plan.frame
        preview_columns = ["record_key", "action", "reason", *entity_plan.fields]
        metadata[f"{entity_plan.entity}_preview"] = preview_table(
            changes.reindex(columns=preview_columns).head(25))
    mark_planned(engine, days)
    per_minute = degreed.resolved().rate_limit_per_minute
    eta = eta_minutes(writes, per_minute)
    metadata["writes_planned"] = writes
    metadata["eta_minutes"] = round(eta, 2)
    metadata["eta"] = f"at least {format_duration(eta * 60)} at {per_minute} requests/min"
    context.log.info(plan_eta_line("completion plan", writes, per_minute))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=completion_sync_plan, name=PAYLOADS_VALID_CHECK, blocking=True)
def completion_payloads_valid(context: dg.AssetCheckExecutionContext,
                              staging_db: StagingDatabaseResource) -> dg.AssetCheckResult:
    """Every completion and skill rating still to send for these days passes its pandera model (rating 1-8,
    percentile 0-100, UTC times, a learner and an assessment id)."""
    engine = staging_db.engine()
    scope = Scope(days=tuple(partition_days(context)))
    problems: list[str] = []
    counts = {}
    for entity in ATTEMPT_ENTITIES:
        due = outstanding(engine, entity, scope).due
        counts[entity.name] = len(due)
        _, entries = validate_payloads(due, entity)
        problems += [f"{entity.name} {entry.record_key}: {entry.reason}" for entry in entries]
    return dg.AssetCheckResult(passed=not problems, metadata={
        "completions_checked": counts.get(COMPLETION, 0), "skill_ratings_checked": counts.get(SKILL_RATING, 0),
        "problems": "\n".join(problems[:20]) or "none", "problem_count": len(problems),
    })


@dg.asset(
    group_name="completions", deps=[completion_sync_plan], kinds={"api", "sql"},
    partitions_def=completion_partitions, backfill_policy=single_run, owners=["team:data-engineering"],
)
def completion_sync_apply(context: dg.AssetExecutionContext, staging_db: StagingDatabaseResource,
                          degreed: DegreedResource, sync_settings: SyncSettingsResource) -> dg.MaterializeResult:
    """Degreed's completions and skill ratings of these days: every record still outstanding for them (whichever
    run planned it), completions first, each recorded in sync_ledger when Degreed acknowledged it.

    Fails, naming the counts and the first errors, when a due record did not reach Degreed; the record stays
    outstanding, so a retry of this step (any run id) or the catch-up job sends it."""
    metrics = RequestMetrics()
    client = degreed.client(metrics=metrics)
    engine = staging_db.engine()
    directory = DegreedDirectory(engine, client)
    scope = Scope(days=tuple(partition_days(context)))
    return deliver_all(context, engine,
                       [(entity, entity.writer_for(client, directory), scope) for entity in ATTEMPT_ENTITIES],
                       run_id=context.run.run_id, dry_run=sync_settings.is_dry_run(),
                       per_minute=degreed.resolved().rate_limit_per_minute, metrics=metrics,
                       extra={"days": scope.describe()})


@dg.asset(group_name="completions", deps=[completion_sync_plan], kinds={"api", "sql"},
          owners=["team:data-engineering"])
def completion_catch_up(context: dg.AssetExecutionContext, staging_db: StagingDatabaseResource,
                        degreed: DegreedResource, sync_settings: SyncSettingsResource) -> dg.MaterializeResult:
    """Outstanding completions and skill ratings of every day, sent without anyone re-running a partition:
    attempts staged but never planned (their run died), records that waited for their assessment or learner and
    can go now, and writes that failed earlier. Run by catch_up_schedule every few minutes when anything is due."""
    engine = staging_db.engine()
    run_id = context.run.run_id
    days = plan_unplanned(engine, sync_settings.completion_mapping(), run_id)
    if days:
        context.log.info("planned %d day(s) with staged attempts no plan had seen: %s..%s", len(days), days[0],
                         days[-1])
    metrics = RequestMetrics()
    client = degreed.client(metrics=metrics)
    directory = DegreedDirectory(engine, client)
    return deliver_all(context, engine,
                       [(entity, entity.writer_for(client, directory), Scope()) for entity in ATTEMPT_ENTITIES],
                       run_id=run_id, dry_run=sync_settings.is_dry_run(),
                       per_minute=degreed.resolved().rate_limit_per_minute, metrics=metrics,
                       extra={"days_planned": len(days)})


COMPLETION_ASSETS = [imocha_attempts, completion_sync_plan, completion_sync_apply]
CATCH_UP_ASSETS = [completion_catch_up]
COMPLETION_CHECKS = [completion_payloads_valid]
