"""The nightly retention job: removes from the staging database what is older than IMOCHA_PIPELINE_RETENTION_DAYS
(``sync/core/retention.py`` says what, per table, and why the ledger stays)."""

# No "from __future__ import annotations": Dagster reads the op's config annotation as a class.

import dagster as dg

from imocha_pipeline.defs.resources import StagingDatabaseResource, SyncSettingsResource
from imocha_pipeline.settings import IMOCHA_PIPELINE_RETENTION_CRON, InvalidSettingError
from imocha_pipeline.sync.core.retention import TABLES, apply_retention, retention_days


class RetentionConfig(dg.Config):
    dry_run: bool = False
    """Only count what would be removed (IMOCHA_PIPELINE_DRY_RUN=1 does the same)."""


@dg.op(description="Remove plans, closed quarantine rows, drift rows and callback bodies older than "
                   "IMOCHA_PIPELINE_RETENTION_DAYS; the ledger and whatever is still to send stay.")
def apply_staging_retention(context: dg.OpExecutionContext, config: RetentionConfig,
                            staging_db: StagingDatabaseResource, sync_settings: SyncSettingsResource):
    try:
        days = retention_days()
    except InvalidSettingError as exc:  # the run fails with the setting's own words, nothing removed
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    dry_run = config.dry_run or sync_settings.is_dry_run()
    report = apply_retention(staging_db.engine(), days, dry_run=dry_run)
    context.log.info("retention: %s", report.summary())
    metadata: dict[str, object] = {"dry_run": dry_run, "summary": report.summary(),
                                   "retention_days": days if days is not None else "keep everything",
                                   "removed_total": report.total}
    metadata.update({f"removed.{table}": report.removed.get(table, 0) for table in TABLES})
    if report.cutoff is not None:
        metadata["cutoff"] = report.cutoff.isoformat()
    return dg.Output(dict(report.removed), metadata=metadata)


@dg.job(name="retention_job", tags={"imocha_pipeline/entity": "retention"},
        description="Removes from the staging database what is older than IMOCHA_PIPELINE_RETENTION_DAYS (unset: "
                    "keeps everything); counts only with IMOCHA_PIPELINE_DRY_RUN=1 or config dry_run.")
def retention_job():
    apply_staging_retention()


retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule=IMOCHA_PIPELINE_RETENTION_CRON.value(),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly retention of the staging database (IMOCHA_PIPELINE_RETENTION_DAYS; unset: keeps "
                "everything).",
)
