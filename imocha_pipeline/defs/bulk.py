"""Bulk backfill from the UI: the Completions Template file of every completion Degreed does not have yet."""

import dagster as dg
import pandas as pd

from imocha_pipeline.defs.metadata import preview_table
from imocha_pipeline.defs.resources import StagingDatabaseResource, SyncSettingsResource
from imocha_pipeline.sync.bulk.export import BulkSettings, export_completions
from imocha_pipeline.sync.completions.plan import plan_unplanned


class BulkExportConfig(dg.Config):
    target: str = ""
    """``directory`` or ``sftp``; empty: IMOCHA_PIPELINE_BULK_TARGET."""
    directory: str = ""
    """Folder for the file; empty: IMOCHA_PIPELINE_BULK_DIRECTORY."""


@dg.asset(group_name="completions", kinds={"csv", "sftp", "sql"}, owners=["team:data-engineering"])
def degreed_completions_file(context: dg.AssetExecutionContext, config: BulkExportConfig,
                             staging_db: StagingDatabaseResource,
                             sync_settings: SyncSettingsResource) -> dg.MaterializeResult:
    """A Completions Template file (`{Client}_Completions_File_YYYYMMDDHHMMSS.csv`) with every completion the
    ledger has not delivered, written to the bulk directory and, with target `sftp`, uploaded to the organisation's
    Degreed SFTP folder; its records are `sent_by_file` in sync_ledger until the reconcile sees them in Degreed.
    Degreed processes the file overnight; scores and skill ratings still go by API. Honours the dry run."""
    engine = staging_db.engine()
    run_id = context.run.run_id
    days = plan_unplanned(engine, sync_settings.completion_mapping(), run_id)
    if days:
        context.log.info("planned %d day(s) with staged attempts no plan had seen", len(days))
    bulk = BulkSettings.from_env(target=config.target or None, directory=config.directory or None)
    report = export_completions(engine, bulk, run_id, dry_run=sync_settings.is_dry_run())
    context.log.info(report.summary())
    metadata: dict[str, object] = {**report.as_metadata(), "target": bulk.target, "days_planned": len(days)}
    if report.path is not None:
        metadata["path"] = dg.MetadataValue.path(str(report.path))
        metadata["preview"] = preview_table(pd.read_csv(report.path, dtype=str, nrows=20))
    return dg.MaterializeResult(metadata=metadata)


BULK_ASSETS = [degreed_completions_file]
