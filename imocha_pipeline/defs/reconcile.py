"""Nightly reconciliation: what Degreed really holds versus what we wrote; repair the missing, report drift."""

from datetime import timedelta

import dagster as dg
import pandas as pd

from imocha_pipeline import staging
from imocha_pipeline.clients.http import RequestMetrics
from imocha_pipeline.defs.assessments import degreed_assessments
from imocha_pipeline.defs.metadata import nonzero, preview_table, request_metadata, staged_table_metadata
from imocha_pipeline.defs.resources import DegreedResource, StagingDatabaseResource, SyncSettingsResource
from imocha_pipeline.settings import IMOCHA_PIPELINE_RECONCILE_DAYS
from imocha_pipeline.sync.assessments.entity import ASSESSMENT
from imocha_pipeline.sync.bulk.confirm import (
    confirm_file_deliveries,
    deliver_file_followups,
    earliest_file_day,
)
from imocha_pipeline.sync.completions.plan import plan_unplanned
from imocha_pipeline.sync.completions.records import COMPLETION, SKILL_RATING
from imocha_pipeline.sync.core.apply import apply_plan
from imocha_pipeline.sync.core.delivery import deliver
from imocha_pipeline.sync.core.identities import DegreedDirectory
from imocha_pipeline.sync.core.ledger import Ledger
from imocha_pipeline.sync.core.outstanding import Scope, outstanding
from imocha_pipeline.sync.core.quarantine import Quarantine
from imocha_pipeline.sync.entities import ALL_ENTITIES, ATTEMPT_ENTITIES
from imocha_pipeline.sync.erasure.registry import marker
from imocha_pipeline.sync.erasure.sweep import enforce_erasures, finish_degreed_deletions
from imocha_pipeline.sync.reconcile import (
    CHANGED,
    MISSING,
    NEVER_DELIVERED,
    UNKNOWN,
    acknowledged,
    find_drift,
    known_degreed_ids,
    never_delivered,
    repair_plan,
    snapshot_completions,
    snapshot_skill_ratings,
    stage_drift,
)

NO_DRIFT_CHECK = "no_drift_after_repair"


def reconcile_days() -> int:
    return IMOCHA_PIPELINE_RECONCILE_DAYS.value()


@dg.asset(group_name="reconcile", kinds={"api", "sql"}, owners=["team:data-engineering"])
def degreed_completions(context: dg.AssetExecutionContext, degreed: DegreedResource,
                        staging_db: StagingDatabaseResource) -> dg.MaterializeResult:
    """Completions Degreed holds for our provider over the reconcile window (read in 7-day windows)."""
    metrics = RequestMetrics()
    started = staging.utcnow()
    end = started.date() + timedelta(days=1)
    start = end - timedelta(days=reconcile_days())
    client, engine = degreed.client(metrics=metrics), staging_db.engine()
    # Completions sent by file may be older than the window: read back far enough to confirm them.
    start = min(start, earliest_file_day(engine) or start)
    rows = snapshot_completions(client, start, end, started, DegreedDirectory(engine, client))
    _, count = staging.stage_full_extract(engine, staging.degreed_completions, rows, "snapshot_at", started)
    context.log.info("Degreed holds %d completions between %s and %s", count, start, end)
    return dg.MaterializeResult(metadata={**staged_table_metadata(staging.degreed_completions, count),
                                          "window": f"{start}..{end}",
                                          **request_metadata(metrics, "degreed_requests")})


@dg.asset(group_name="reconcile", kinds={"api", "sql"}, owners=["team:data-engineering"])
def degreed_skill_ratings(context: dg.AssetExecutionContext, degreed: DegreedResource,
                          staging_db: StagingDatabaseResource) -> dg.MaterializeResult:
    """Skill ratings Degreed holds for our provider."""
    metrics = RequestMetrics()
    started = staging.utcnow()
    client, engine = degreed.client(metrics=metrics), staging_db.engine()
    rows = snapshot_skill_ratings(client, started, DegreedDirectory(engine, client))
    _, count = staging.stage_full_extract(engine, staging.degreed_skill_ratings, rows, "snapshot_at", started)
    return dg.MaterializeResult(metadata={**staged_table_metadata(staging.degreed_skill_ratings, count),
                                          **request_metadata(metrics, "degreed_requests")})


def _in_window(days: int):
    cutoff = (staging.utcnow() - timedelta(days=days - 1)).strftime("%Y-%m-%dT00:00:00Z")
    return lambda payload: str(payload.get("completed_at") or "") >= cutoff


@dg.asset(group_name="reconcile", deps=[degreed_assessments, degreed_completions, degreed_skill_ratings],
          kinds={"pandas", "sql"}, owners=["team:data-engineering"],
          check_specs=[dg.AssetCheckSpec(NO_DRIFT_CHECK, asset="sync_drift",
                                         description="Fails when Degreed still differs from what we wrote "
                                                     "after the repair.")])
def sync_drift(context: dg.AssetExecutionContext, degreed: DegreedResource, staging_db: StagingDatabaseResource,
               sync_settings: SyncSettingsResource) -> dg.MaterializeResult:
    """Differences between Degreed, our ledger and the staged iMocha attempts (missing, changed, unknown, never
    delivered), after repairing what is missing or was never delivered (table sync_drift). First, an erased
    learner's records that a run in flight at the erasure staged or sent again are erased again, and the Degreed
    deletes an erasure asked for that failed are sent again."""
    engine = staging_db.engine()
    run_id = context.run.run_id
    metrics = RequestMetrics()
    client = degreed.client(metrics=metrics)
    # A run in flight when a learner was erased may have staged or sent their records again: erased again first.
    enforced = enforce_erasures(engine, lambda: client)
    for report in enforced:
        context.log.warning("erased again what was written back after an erasure: %s", report.as_dict())
    # Deletions in Degreed an erasure asked for and that did not all happen (a failed delete): the rest now.
    finished = finish_degreed_deletions(engine, lambda: client)
    for email_hash, outcome in finished.items():
        log = context.log.warning if outcome.failed else context.log.info
        log("erasure of %s: Degreed deletes finished by the reconcile: deleted %s, already gone %s, failed %s, "
            "held by another run (at work on them, or stopped: freed after one claim lease) %s",
            marker(email_hash), outcome.deleted, outcome.already_gone, outcome.failed, outcome.taken_elsewhere)
    with engine.connect() as conn:
        snapshots = {name: pd.DataFrame(staging.read_rows(conn, table)) for name, table in (
            (ASSESSMENT, staging.degreed_assessments), (COMPLETION, staging.degreed_completions),
            (SKILL_RATING, staging.degreed_skill_ratings))}
    # Completions sent in a Completions Template file: acknowledged where Degreed shows them (before the drift is
    # computed, so they are ours and hold Degreed's values).
    files = confirm_file_deliveries(engine, snapshots[COMPLETION], run_id)
    ledgers = {entity: acknowledged(engine, entity) for entity in (ASSESSMENT, COMPLETION, SKILL_RATING)}
    ledgers[ASSESSMENT] = ledgers[ASSESSMENT][ledgers[ASSESSMENT]["action"] != "retire"] \
        if not ledgers[ASSESSMENT].empty else ledgers[ASSESSMENT]
    assessments = snapshots[ASSESSMENT]
    if not assessments.empty:
        assessments = assessments[assessments["external_id"].fillna("").str.startswith("imocha-")]
    drift = (
        find_drift(ASSESSMENT, ledgers[ASSESSMENT], assessments, {"title": "title", "url": "url"},
                   known_ids=known_degreed_ids(engine, ASSESSMENT))
        + find_drift(COMPLETION, ledgers[COMPLETION], snapshots[COMPLETION],
                     {"completed_at": "completed_at", "percentile": "percentile"}, _in_window(reconcile_days()),
                     known_ids=known_degreed_ids(engine, COMPLETION))
        + find_drift(SKILL_RATING, ledgers[SKILL_RATING], snapshots[SKILL_RATING], {"rating": "rating"},
                     known_ids=known_degreed_ids(engine, SKILL_RATING))
    )
    # The truth side: every staged latest attempt must be acknowledged. Plan what no plan has seen yet, then
    # whatever is outstanding and due was never delivered.
    plan_unplanned(engine, sync_settings.completion_mapping(), run_id)
    repaired: set[tuple[str, str]] = set()
    directory = DegreedDirectory(engine, client)
    # What the file could not carry (score, time of day) and what Degreed did not take within the grace period go
    # by API now, at the rate budget; then nothing of the file path counts as never delivered.
    files = deliver_file_followups(engine, {e.name: e.writer_for(client, directory) for e in ATTEMPT_ENTITIES},
                                   run_id, files)
    if files.confirmed or files.followups.counts or files.waiting:
        context.log.info("records sent by file: %s", files.as_metadata())
    for entity in ATTEMPT_ENTITIES:
        drift += never_delivered(entity.name, outstanding(engine, entity, Scope()).due)
    for spec in ALL_ENTITIES:
        missing = [d for d in drift if d.entity == spec.name and d.kind == MISSING]
        if not missing:
            continue
        plan = repair_plan(ledgers[spec.name], missing, spec.all_fields)
        result = apply_plan(plan, spec.writer_for(client, directory), Ledger(engine, spec.name, run_id),
                            Quarantine(engine, spec.name, run_id), fields=spec.all_fields, resend=True)
        acknowledged_now = acknowledged(engine, spec.name)
        fixed = set(acknowledged_now[acknowledged_now["run_id"] == run_id]["record_key"])
        repaired |= {(spec.name, key) for key in fixed} & {(d.entity, d.record_key) for d in missing}
        context.log.info("repaired %s: %s", spec.name, result.as_metadata())
    for entity in ATTEMPT_ENTITIES:
        if not any(d.entity == entity.name and d.kind == NEVER_DELIVERED for d in drift):
            continue
        delivery = deliver(engine, entity, entity.writer_for(client, directory), Scope(), run_id)
        acknowledged_now = acknowledged(engine, entity.name)
        fixed = set(acknowledged_now[acknowledged_now["run_id"] == run_id]["record_key"])
        repaired |= {(entity.name, key) for key in fixed} & {(d.entity, d.record_key) for d in drift}
        context.log.info("delivered what %s never got: %s", entity.name, delivery.as_metadata())
    stage_drift(engine, drift, repaired, run_id)
    remaining = [d for d in drift if (d.entity, d.record_key) not in repaired]
    frame = pd.DataFrame([{"entity": d.entity, "record_key": d.record_key, "kind": d.kind, "detail": d.detail,
                           "repaired": (d.entity, d.record_key) in repaired} for d in drift],
                         columns=["entity", "record_key", "kind", "detail", "repaired"])
    counts = {f"{kind}": int((frame["kind"] == kind).sum()) for kind in (MISSING, CHANGED, UNKNOWN, NEVER_DELIVERED)}
    return dg.MaterializeResult(
        metadata={**nonzero({**counts, "erasures_enforced_again": len(enforced),
                             "erasure_deletes_finished": sum(sum(o.deleted.values()) + sum(o.already_gone.values())
                                                             for o in finished.values()),
                             "erasure_deletes_failed": sum(len(o.failed) for o in finished.values())}),
                  "repaired": len(repaired), "remaining": len(remaining), **files.as_metadata(),
                  **({"drift": preview_table(frame.head(50))} if not frame.empty else {}),
                  "staging_table": "sync_drift",
                  **request_metadata(metrics, "degreed_requests")},
        check_results=[dg.AssetCheckResult(
            check_name=NO_DRIFT_CHECK, passed=not remaining,
            metadata={"remaining": len(remaining),
                      "details": "\n".join(f"{d.entity} {d.record_key}: {d.kind}: {d.detail}"
                                           for d in remaining[:20]) or "none"},
        )],
    )


RECONCILE_ASSETS = [degreed_completions, degreed_skill_ratings, sync_drift]
