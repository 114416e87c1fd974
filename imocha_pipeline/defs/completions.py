"""Completions and skill scores: each finished iMocha attempt becomes a Degreed completion and skill ratings."""

from collections import Counter
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
    figures = ExtractDays(result, staged_rows_per_day(engine, days))
    requests = request_metadata(metrics, "imocha_requests")
    if len(days) > 1:
        describe_each_day(context, days, figures.completions, asset_key="imocha_completions",
                          run_totals={**figures.completions(None), **requests})
        describe_each_day(context, days, figures.skill_scores, asset_key="imocha_skill_scores",
                          run_totals=figures.skill_scores(None))
        yield dg.MaterializeResult(asset_key="imocha_completions")
        yield dg.MaterializeResult(asset_key="imocha_skill_scores")
        return
    yield dg.MaterializeResult(asset_key="imocha_completions", metadata={
        **figures.completions(None), "days": f"{days[0]}..{days[-1]}", **requests})
    yield dg.MaterializeResult(asset_key="imocha_skill_scores", metadata=figures.skill_scores(None))


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


class ExtractDays:
    """The extract's figures per day, counted once (a backfill of a thousand days reads them a thousand times)."""

    def __init__(self, result: ExtractResult, staged: dict[str, dict[date, int]]):
        day_of = result.day_of
        self.staged = staged
        self.listed = Counter(day_of.values())
        self.skipped = Counter(day_of[i] for i in result.skipped)
        self.unavailable = Counter(day_of.get(i) for i, _ in result.problems)
        self.new = Counter(c["attempt_date"] for c in result.completions)
        self.new_scores = Counter(s["attempt_date"] for s in result.skill_scores)
        self.without_skills = Counter(c["attempt_date"] for c in result.completions if not c["has_skills"])

    def rows(self, table, day: date | None) -> int:
        return sum(self.staged[table.name].values()) if day is None else self.staged[table.name][day]

    @staticmethod
    def of(counter: Counter, day: date | None) -> int:
        return sum(counter.values()) if day is None else counter.get(day, 0)

    def completions(self, day: date | None) -> dict[str, object]:
        """imocha_completions' figures for one day (None: the run)."""
        return {**staged_table_metadata(staging.imocha_completions, self.rows(staging.imocha_completions, day)),
                "attempts_listed": self.of(self.listed, day), "new_attempts": self.of(self.new, day),
                "already_staged": self.of(self.skipped, day),
                "reports_fetched": self.of(self.listed, day) - self.of(self.skipped, day),
                "reports_unavailable": self.of(self.unavailable, day)}

    def skill_scores(self, day: date | None) -> dict[str, object]:
        """imocha_skill_scores' figures for one day (None: the run)."""
        return {**staged_table_metadata(staging.imocha_skill_scores, self.rows(staging.imocha_skill_scores, day)),
                "new_skill_scores": self.of(self.new_scores, day),
                "attempts_without_skills": self.of(self.without_skills, day)}


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
    plans = build_completion_plans(engine, days, sync_settings.completion_mapping(), run_id)
    for entity_plan in plans:
        stage_entity_plan(engine, entity_plan, run_id)
    mark_planned(engine, days)
    per_minute = degreed.resolved().rate_limit_per_minute
    figures = PlanDays(plans, per_minute, attempt_days(engine, days))
    whole = figures.figures(None)
    context.log.info(plan_eta_line("completion plan", int(whole["writes_planned"]), per_minute))
    if len(days) > 1:
        describe_each_day(context, days, figures.figures, run_totals=whole)
        return dg.MaterializeResult()
    return dg.MaterializeResult(metadata=whole)


def attempt_days(engine, days: list[date]) -> dict[str, date]:
    """``attempt:<id>`` -> the day of each staged attempt of ``days`` (to give quarantine entries their day)."""
    table = staging.imocha_completions
    with engine.connect() as conn:
        found = conn.execute(sa.select(table.c.test_invitation_id, table.c.attempt_date)
                             .where(table.c.attempt_date.in_(days))).all()
    return {attempt_key(i): _as_date(day) for i, day in found}


class PlanDays:
    """completion_sync_plan's figures per day, with each entity's plan split by attempt day once."""

    def __init__(self, plans, per_minute: int, day_of_attempt: dict[str, date]):
        self.per_minute = per_minute
        self.parts = []
        for entity_plan in plans:
            frame = entity_plan.frame
            days = [None if d is None or pd.isna(d) else _as_date(d) for d in frame.get("source_day", [])]
            by_day = dict(iter(frame.groupby(pd.Series(days, index=frame.index, dtype=object)))) \
                if not frame.empty else {}
            day_of_key = dict(zip(frame["record_key"], days, strict=True)) if not frame.empty else {}
            quarantined = Counter(_entry_day(e.record_key, day_of_key, day_of_attempt) for e in entity_plan.quarantined)
            self.parts.append((entity_plan, by_day, quarantined))

    def figures(self, day: date | None) -> dict[str, object]:
        """The figures of one day (None: the run): non-zero counts per action and quarantined records, the writes
        with their ETA (or "nothing to send"), and a preview of the changes."""
        metadata: dict[str, object] = {}
        writes = 0
        previews = {}
        for entity_plan, by_day, quarantined in self.parts:
            frame = entity_plan.frame if day is None else by_day.get(day, entity_plan.frame.iloc[0:0])
            counts = frame["action"].value_counts().to_dict() if not frame.empty else {}
            for action in ("create", "update", "unchanged", "wait", "skip"):
                metadata[f"{entity_plan.entity}_{action}"] = int(counts.get(action, 0))
            metadata[f"{entity_plan.entity}_quarantined"] = sum(quarantined.values()) if day is None \
                else quarantined.get(day, 0)
            writes += sum(int(counts.get(a, 0)) for a in WRITE_ACTIONS)
            changes = frame[frame["action"] != "unchanged"] if not frame.empty else frame
            previews[f"{entity_plan.entity}_preview"] = changes.reindex(
                columns=["record_key", "action", "reason", *entity_plan.fields]).head(25)
        return {**nonzero(metadata), **plan_summary(writes, self.per_minute, previews)}


def _entry_day(key: str, day_of_key: dict, day_of_attempt: dict[str, date]) -> date | None:
    if key in day_of_key:
        return day_of_key[key]
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
                       extra={"days": scope.describe()}, days=scope.days)


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
