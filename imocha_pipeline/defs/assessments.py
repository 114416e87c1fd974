"""Assessment content sync: iMocha tests become Degreed Assessment content, kept in step every hour."""


import dagster as dg
import pandas as pd
import sqlalchemy as sa

from imocha_pipeline import staging
from imocha_pipeline.clients.http import RequestMetrics
from imocha_pipeline.defs.delivery_step import deliver_all
from imocha_pipeline.defs.metadata import (
    nonzero,
    plan_summary,
    preview_table,
    request_metadata,
    staged_table_metadata,
)
from imocha_pipeline.defs.resources import (
    DegreedResource,
    ImochaResource,
    StagingDatabaseResource,
    SyncSettingsResource,
)
from imocha_pipeline.sync.assessments.approval import (
    current_plan,
    extract_counts,
    last_change_plan,
    record_extract_count,
    record_plan,
)
from imocha_pipeline.sync.assessments.entity import ASSESSMENT as ENTITY
from imocha_pipeline.sync.assessments.extract import (
    LIST_ENTRY_KEY_PREFIX,
    extract_assessments,
    quarantine_unreadable_list_entries,
    quarantine_unreadable_tests,
    snapshot_degreed_assessments,
)
from imocha_pipeline.sync.assessments.mapping import DESIRED_ASSESSMENT_FIELDS, AssessmentMapping
from imocha_pipeline.sync.assessments.models import DesiredAssessmentModel
from imocha_pipeline.sync.assessments.plan import active_ours_in_degreed, build_desired, compute_plan, guard_plan
from imocha_pipeline.sync.assessments.writer import AssessmentWriter
from imocha_pipeline.sync.core.diff import WRITE_ACTIONS, summarise
from imocha_pipeline.sync.core.identities import DegreedDirectory
from imocha_pipeline.sync.core.ledger import Ledger
from imocha_pipeline.sync.core.outstanding import Scope
from imocha_pipeline.sync.core.progress import plan_eta_line
from imocha_pipeline.sync.core.quarantine import VALIDATION, Quarantine
from imocha_pipeline.sync.core.validation import SchemaProblem, split_valid
from imocha_pipeline.sync.entities import ASSESSMENTS

PLAN_GUARD_CHECK = "assessment_plan_guard"
DESIRED_VALID_CHECK = "desired_assessments_valid"


@dg.asset(group_name="assessments", kinds={"api", "sql"}, owners=["team:data-engineering"])
def imocha_assessments(context: dg.AssetExecutionContext, imocha: ImochaResource,
                       staging_db: StagingDatabaseResource) -> dg.MaterializeResult:
    """Every test in the iMocha account with its details and active public test link (table imocha_assessments)."""
    engine = staging_db.engine()  # a staging database that cannot take the result stops the run before any call
    metrics = RequestMetrics()
    started = staging.utcnow()
    extracted = extract_assessments(imocha.client(metrics=metrics), started, imocha.max_parallel_requests)
    rows, problems, unattributed = extracted.rows, extracted.unreadable, extracted.unattributed
    if problems:
        quarantine_unreadable_tests(engine, problems, AssessmentMapping.from_env().external_id_prefix,
                                    context.run.run_id)
        context.log.warning("%d tests could not be read and are held in sync_quarantine: %s", len(problems),
                            "; ".join(f"{test_id}: {reason}" for test_id, reason in problems[:5]))
    # The list was read to the end: id-less entries go to quarantine (holding back retirements), old ones resolve.
    quarantine_unreadable_list_entries(engine, unattributed, context.run.run_id)
    if unattributed:
        context.log.warning("%d entries of iMocha's test list name no test; no assessment is retired this run: %s",
                            len(unattributed), "; ".join(entry.reason for entry in unattributed[:5]))
    previous, current = staging.stage_full_extract(engine, staging.imocha_assessments, rows, "extracted_at", started)
    record_extract_count(engine, current)
    without_link = sum(1 for row in rows if not row["test_link_key"])
    context.log.info("staged %d iMocha tests (%d without an active link)", current, without_link)
    return dg.MaterializeResult(metadata={
        **staged_table_metadata(staging.imocha_assessments, current),
        "previous_row_count": previous,
        **nonzero({"tests_without_active_link": without_link, "tests_unreadable": len(problems),
                   "test_list_entries_without_id": len(unattributed)}),
        **request_metadata(metrics, "imocha_requests"),
    })


@dg.asset(group_name="assessments", kinds={"api", "sql"}, owners=["team:data-engineering"])
def degreed_assessments(context: dg.AssetExecutionContext, degreed: DegreedResource,
                        staging_db: StagingDatabaseResource) -> dg.MaterializeResult:
    """What Degreed really holds: every Assessment content item our API key sees, read in pages of 1000."""
    engine = staging_db.engine()
    metrics = RequestMetrics()
    started = staging.utcnow()
    rows = snapshot_degreed_assessments(degreed.client(metrics=metrics), started)
    _, current = staging.stage_full_extract(engine, staging.degreed_assessments, rows, "snapshot_at", started)
    obsolete = sum(1 for row in rows if row["obsolete"])
    context.log.info("Degreed holds %d assessments (%d retired)", current, obsolete)
    return dg.MaterializeResult(metadata={
        **staged_table_metadata(staging.degreed_assessments, current),
        "retired": obsolete,
        **request_metadata(metrics, "degreed_requests"),
    })


@dg.asset(group_name="assessments", deps=[imocha_assessments], kinds={"pandas", "sql"},
          owners=["team:data-engineering"])
def desired_assessments(context: dg.AssetExecutionContext, staging_db: StagingDatabaseResource,
                        sync_settings: SyncSettingsResource) -> dg.MaterializeResult:
    """The Degreed Assessment content each valid iMocha test should be, with its SSO-aware launch link.

    Rows that break a rule go to sync_quarantine with the column, the rule and the bad value; the rest go on.
    """
    result = build_desired(staging_db.engine(), sync_settings.assessment_mapping(), context.run.run_id)
    if result.failures:
        context.log.warning("%d of %d tests quarantined: %s", len(result.failures), result.total,
                            "; ".join(f"{f.record_key}: {f.reason}" for f in result.failures[:5]))
    return dg.MaterializeResult(metadata={
        **staged_table_metadata(staging.desired_assessments, len(result.valid)),
        "quarantined": len(result.failures),
        **({"quarantine_sample": preview_table(pd.DataFrame(
            [{"record_key": f.record_key, "reason": f.reason} for f in result.failures[:10]],
            columns=["record_key", "reason"]))} if result.failures else {}),
    })


@dg.asset_check(asset=desired_assessments, name=DESIRED_VALID_CHECK, blocking=True)
def desired_assessments_valid(staging_db: StagingDatabaseResource,
                              sync_settings: SyncSettingsResource) -> dg.AssetCheckResult:
    """Every staged desired assessment passes the pandera model, and not too many tests were quarantined."""
    engine = staging_db.engine()
    with engine.connect() as conn:
        staged = pd.DataFrame(staging.read_rows(conn, staging.desired_assessments))
        extracted_ids = conn.execute(sa.select(staging.imocha_assessments.c.test_id)).scalars().all()
    open_entries = Quarantine(engine, ENTITY).open_entries([VALIDATION])
    # Tests iMocha listed: the staged ones plus the quarantined ones that could not be read (not staged).
    prefix = sync_settings.assessment_mapping().external_id_prefix
    staged_keys = {f"{prefix}{test_id}" for test_id in extracted_ids}
    extracted = len(extracted_ids) + sum(1 for key in open_entries["record_key"] if key not in staged_keys)
    problems: list[str] = []
    if not staged.empty:
        try:
            _, failures = split_valid(staged, DesiredAssessmentModel, "external_id")
        except SchemaProblem as exc:
            failures, problems = [], [str(exc)]
        problems += [f"{f.record_key}: {f.reason}" for f in failures]
    limit = sync_settings.invalid_share_limit()
    share = len(open_entries) / extracted if extracted else 0.0
    if share > limit:
        problems.append(f"{len(open_entries)} of {extracted} tests are quarantined ({share:.0%} > limit {limit:.0%})")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "staged_rows": len(staged),
            "quarantined": len(open_entries),
            "quarantined_share": round(share, 4),
            "quarantined_share_limit": limit,
            "summary": f"{len(open_entries)} of {extracted} tests quarantined ({share:.0%}; limit {limit:.0%}); "
                       f"{len(problems)} problem(s).",
            "problems": "\n".join(problems[:20]) or "none",
            "quarantine_sample": preview_table(open_entries[["record_key", "reason"]].head(10)
                                               if not open_entries.empty else
                                               pd.DataFrame(columns=["record_key", "reason"])),
        },
    )


class AssessmentPlanConfig(dg.Config):
    confirm_large_changes: bool = False
    """Let a plan through that retires more than the allowed share, or follows a shrunken extract."""


@dg.asset(group_name="assessments", deps=[desired_assessments, degreed_assessments], kinds={"pandas", "sql"},
          owners=["team:data-engineering"],
          check_specs=[dg.AssetCheckSpec(PLAN_GUARD_CHECK, asset="assessment_sync_plan", blocking=True,
                                         description="Blocks mass retirement and a sudden shrink of the iMocha "
                                                     "extract until a person confirms.")])
def assessment_sync_plan(context: dg.AssetExecutionContext, config: AssessmentPlanConfig,
                         staging_db: StagingDatabaseResource, sync_settings: SyncSettingsResource,
                         degreed: DegreedResource) -> dg.MaterializeResult:
    """What the apply step will do to Degreed, per assessment: create, update (which fields), retire, or nothing."""
    engine = staging_db.engine()
    mapping = sync_settings.assessment_mapping()
    planned = compute_plan(engine, mapping, context.run.run_id)
    plan_frame, held_back = planned.frame, planned.held_back
    if held_back:
        context.log.warning("%d retirements held back: iMocha's test list has entries that name no test "
                            "(sync_quarantine keys %s...); they go out on the first run that reads it cleanly",
                            len(held_back), LIST_ENTRY_KEY_PREFIX)
    counts = summarise(plan_frame)
    baseline, current = extract_counts(engine)
    active = active_ours_in_degreed(engine, mapping)
    verdict = guard_plan(plan_frame, active, baseline, current,
                         sync_settings.retire_share_limit(), sync_settings.shrink_share_limit(),
                         config.confirm_large_changes)
    recorded = record_plan(engine, ENTITY, plan_frame, DESIRED_ASSESSMENT_FIELDS, context.run.run_id,
                           verdict.passed, verdict.message, current)
    writes = sum(counts[a] for a in WRITE_ACTIONS)
    per_minute = degreed.resolved().rate_limit_per_minute
    context.log.info("plan: %s; guard: %s", counts, verdict.message)
    context.log.info(plan_eta_line("assessment plan", writes, per_minute))
    changes = plan_frame[plan_frame["action"] != "unchanged"]
    last = last_change_plan(engine, recorded, writes)
    return dg.MaterializeResult(
        metadata={
            **plan_summary(writes, per_minute, {"preview": changes[["record_key", "action", "reason",
                                                                    "changed_fields", "title"]].head(25)}),
            **{f"plan_{action}": count for action, count in counts.items()},
            "retirements_held_back": len(held_back),
            "plan_id": recorded.plan_id,
            "approved": recorded.approved,
            **({} if writes else last_change_metadata(last)),
            "staging_table": "sync_plan",
        },
        check_results=[dg.AssetCheckResult(
            check_name=PLAN_GUARD_CHECK, passed=verdict.passed,
            metadata=guard_metadata(verdict, plan_frame, active, baseline, current, sync_settings,
                                    recorded.plan_id),
        )],
    )


def last_change_metadata(last: dict) -> dict[str, object]:
    """Where a no-change plan points: the last plan that had something to write."""
    if not last:
        return {"last_change_plan_id": "none yet: no plan has written to Degreed"}
    return {"last_change_plan_id": str(last["plan_id"]), "last_change_at": str(last.get("planned_at") or ""),
            "last_change_writes": int(last.get("writes") or 0), "last_change_run_id": str(last.get("run_id") or "")}


def guard_metadata(verdict, plan_frame: pd.DataFrame, active: int, baseline: int, current: int,
                   sync_settings: SyncSettingsResource, plan_id: str) -> dict[str, object]:
    """The guard's figures next to its limits, with one plain sentence."""
    retiring = int((plan_frame["action"] == "retire").sum()) if not plan_frame.empty else 0
    retire_limit, shrink_limit = sync_settings.retire_share_limit(), sync_settings.shrink_share_limit()
    sentence = (f"Retires {retiring} of {active} active assessments ({verdict.retire_share:.0%}; limit "
                f"{retire_limit:.0%}); the iMocha extract has {current} tests against {baseline} at the last "
                f"approved plan (shrink {verdict.shrink_share:.0%}; limit {shrink_limit:.0%}): {verdict.message}.")
    return {"summary": sentence,
            "retire_share": round(verdict.retire_share, 4), "retire_share_limit": retire_limit,
            "retiring": retiring, "active_in_degreed": active,
            "shrink_share": round(verdict.shrink_share, 4), "shrink_share_limit": shrink_limit,
            "extract_baseline": baseline, "extract_current": current,
            "verdict": verdict.message, "plan_id": plan_id}


@dg.asset(group_name="assessments", deps=[assessment_sync_plan], kinds={"api", "sql"},
          owners=["team:data-engineering"])
def assessment_sync_apply(context: dg.AssetExecutionContext, staging_db: StagingDatabaseResource,
                          degreed: DegreedResource, sync_settings: SyncSettingsResource) -> dg.MaterializeResult:
    """Degreed's Assessment content after this run: what is still outstanding of the plan the guard approved,
    each write recorded in sync_ledger. A blocked plan sends nothing, however this step is started."""
    engine = staging_db.engine()
    plan = current_plan(engine)
    if plan is None:
        raise dg.Failure(description="No assessment plan has been staged yet; nothing was sent. Run "
                                     "assessment_sync_job (or materialize assessment_sync_plan first).")
    if not plan.approved:
        context.log.error(plan.blocked_message())
        raise dg.Failure(description=plan.blocked_message(),
                         metadata={"plan_id": plan.plan_id, "verdict": plan.verdict, "writes": 0})
    metrics = RequestMetrics()
    ledger = Ledger(engine, ENTITY)
    client = degreed.client(metrics=metrics)
    writer = AssessmentWriter(client, DegreedDirectory(engine, client))
    result = deliver_all(context, engine, [(ASSESSMENTS, writer, Scope(plan_id=plan.plan_id))],
                         run_id=context.run.run_id, dry_run=sync_settings.is_dry_run(),
                         per_minute=degreed.resolved().rate_limit_per_minute, metrics=metrics,
                         extra={"plan_id": plan.plan_id})
    return dg.MaterializeResult(metadata={**(result.metadata or {}),
                                          **{f"ledger_{state}": n for state, n in nonzero(ledger.counts()).items()}})


ASSESSMENT_ASSETS = [imocha_assessments, degreed_assessments, desired_assessments, assessment_sync_plan,
                     assessment_sync_apply]
ASSESSMENT_CHECKS = [desired_assessments_valid]
