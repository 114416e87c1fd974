"""Completions and skill scores: each finished iMocha attempt becomes a Degreed completion and skill ratings."""

from datetime import date, timedelta

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from imocha_pipeline import staging
from imocha_pipeline.clients.http import RequestMetrics
from imocha_pipeline.defs.delivery_step import deliver_all
from imocha_pipeline.defs.metadata import (
    describe_each_day,
    nonzero,
    plan_summary,
    request_metadata,
    staged_table_metadata,
)
from imocha_pipeline.defs.partitions import completion_partitions
from imocha_pipeline.defs.resources import (
    DegreedResource,
    ImochaResource,
    StagingDatabaseResource,
    SyncSettingsResource,
)
from imocha_pipeline.sync.completions.extract import ExtractResult, extract_completions
from imocha_pipeline.sync.completions.plan import (
    attempt_key,
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
from imocha_pipeline.sync.core.progress import plan_eta_line
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
        dg.AssetSpec("imocha_completions", group_name="imocha_extract", kinds={"api", "sql"},
                     description="Finished iMocha attempts (one row per attempt) with learner, score, points, "
                                 "performance category and time taken, per UTC day (table imocha_completions)."),
        dg.AssetSpec("imocha_skill_scores", group_name="imocha_extract", kinds={"api", "sql"},
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
    staged = staged_rows_per_day(engine, days)
    requests = request_metadata(metrics, "imocha_requests")
    if len(days) > 1:
        for key, figures in (("imocha_completions", extract_figures), ("imocha_skill_scores", score_figures)):
            describe_each_day(context, days, lambda day, figures=figures: figures(result, staged, day),
                              asset_key=key, run_totals={**figures(result, staged, None), **requests})
        yield dg.MaterializeResult(asset_key="imocha_completions")
        yield dg.MaterializeResult(asset_key="imocha_skill_scores")
        return
    yield dg.MaterializeResult(asset_key="imocha_completions", metadata={
        **extract_figures(result, staged, None), "days": f"{days[0]}..{days[-1]}", **requests})
    yield dg.MaterializeResult(asset_key="imocha_skill_scores", metadata=score_figures(result, staged, None))


def staged_rows_per_day(engine, days: list[date]) -> dict[str, dict[date, int]]:
    """Rows each staged attempt table holds for each of ``days`` (a day read without attempts holds 0)."""
    counts: dict[str, dict[date, int]] = {}
    with engine.connect() as conn:
        for table in (staging.imocha_completions, staging.imocha_skill_scores):
            found = conn.execute(sa.select(table.c.attempt_date, sa.func.count()).where(
                table.c.attempt_date.in_(days)).group_by(table.c.attempt_date)).all()
            by_day = {_as_date(day): int(n) for day, n in found}
            counts[table.name] = {day: by_day.get(day, 0) for day in days}
    return counts


def _as_date(value) -> date:
    return date.fromisoformat(value[:10]) if isinstance(value, str) else value


def extract_figures(result: ExtractResult, staged: dict[str, dict[date, int]], day: date | None) -> dict:
    """imocha_completions' figures for one day (None: the run): attempts listed, new, already staged, reports."""
    def of_day(ids) -> list[int]:
        return [i for i in ids if day is None or result.day_of.get(i) == day]

    listed = of_day(result.day_of)
    table = staging.imocha_completions
    rows = sum(staged[table.name].values()) if day is None else staged[table.name][day]
    return {**staged_table_metadata(table, rows),
            "attempts_listed": len(listed),
            "new_attempts": sum(1 for c in result.completions if day is None or c["attempt_date"] == day),
            "already_staged": len(of_day(result.skipped)),
            "reports_fetched": len(listed) - len(of_day(result.skipped)),
            "reports_unavailable": len(of_day([i for i, _ in result.problems]))}


def score_figures(result: ExtractResult, staged: dict[str, dict[date, int]], day: date | None) -> dict:
    """imocha_skill_scores' figures for one day (None: the run)."""
    table = staging.imocha_skill_scores
    rows = sum(staged[table.name].values()) if day is None else staged[table.name][day]
    return {**staged_table_metadata(table, rows),
            "new_skill_scores": sum(1 for s in result.skill_scores if day is None or s["attempt_date"] == day),
            "attempts_without_skills": sum(1 for c in result.completions if not c["has_skills"]
                                           and (day is None or c["attempt_date"] == day))}


@dg.asset(
    group_name="sync_plan", deps=["imocha_completions", "imocha_skill_scores"], kinds={"pandas", "sql"},
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
    plans = build_completion_plans(engine, days, sync_settings.completion_mapping(), run_id)
    for entity_plan in plans:
        stage_entity_plan(engine, entity_plan, run_id)
    mark_planned(engine, days)
    per_minute = degreed.resolved().rate_limit_per_minute
    day_of_attempt = attempt_days(engine, days)
    whole = plan_figures(plans, per_minute, day_of_attempt, None)
    context.log.info(plan_eta_line("completion plan", int(whole["writes_planned"]), per_minute))
    if len(days) > 1:
        describe_each_day(context, days, lambda day: plan_figures(plans, per_minute, day_of_attempt, day),
                          run_totals=whole)
        return dg.MaterializeResult()
    return dg.MaterializeResult(metadata=whole)


def attempt_days(engine, days: list[date]) -> dict[str, date]:
    """``attempt:<id>`` -> the day of each staged attempt of ``days`` (to give quarantine entries their day)."""
    table = staging.imocha_completions
    with engine.connect() as conn:
        found = conn.execute(sa.select(table.c.test_invitation_id, table.c.attempt_date)
                             .where(table.c.attempt_date.in_(days))).all()
    return {attempt_key(i): _as_date(day) for i, day in found}


def plan_figures(plans, per_minute: int, day_of_attempt: dict[str, date], day: date | None) -> dict[str, object]:
    """completion_sync_plan's figures for one day (None: the run): non-zero counts per action and quarantined
    records, the writes with their ETA (or "nothing to send"), and a preview of the changes."""
    metadata: dict[str, object] = {}
    writes = 0
    previews = {}
    for entity_plan in plans:
        frame = entity_plan.frame
        if day is not None and not frame.empty:
            frame = frame[[_as_date(d) == day if d is not None and not pd.isna(d) else False
                           for d in frame["source_day"]]]
        counts = frame["action"].value_counts().to_dict() if not frame.empty else {}
        day_of_key = dict(zip(frame["record_key"], frame["source_day"], strict=True)) if not frame.empty else {}
        quarantined = [e for e in entity_plan.quarantined
                       if day is None or _entry_day(e.record_key, day_of_key, day_of_attempt) == day]
        for action in ("create", "update", "unchanged", "wait", "skip"):
            metadata[f"{entity_plan.entity}_{action}"] = int(counts.get(action, 0))
        metadata[f"{entity_plan.entity}_quarantined"] = len(quarantined)
        writes += sum(int(counts.get(a, 0)) for a in WRITE_ACTIONS)
        changes = frame[frame["action"] != "unchanged"] if not frame.empty else frame
        previews[f"{entity_plan.entity}_preview"] = changes.reindex(
            columns=["record_key", "action", "reason", *entity_plan.fields]).head(25)
    return {**nonzero(metadata), **plan_summary(writes, per_minute, previews)}


def _entry_day(key: str, day_of_key: dict, day_of_attempt: dict[str, date]) -> date | None:
    if key in day_of_key:
        return _as_date(day_of_key[key])
    return day_of_attempt.get(key.split("|", 1)[0])


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
    group_name="degreed_apply", deps=[completion_sync_plan], kinds={"api", "sql"},
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
                       extra={"days": scope.describe()}, days=scope.days)


@dg.asset(group_name="degreed_apply", deps=[completion_sync_plan], kinds={"api", "sql"},
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
