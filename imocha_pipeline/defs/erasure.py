"""``forget_job``: erase one learner (the same as ``imocha-pipeline forget``), with the report as run metadata."""

# No "from __future__ import annotations": Dagster reads the op's config annotation as a class.

import dagster as dg

from imocha_pipeline.defs.resources import DegreedResource, ImochaResource, StagingDatabaseResource
from imocha_pipeline.settings import InvalidSettingError, MissingSettingError
from imocha_pipeline.sync.erasure import forget as erasure


class ForgetConfig(dg.Config):
    email: str
    """The learner's email address. Dagster keeps a run's config in its run history: delete the run afterwards
    where that matters, or use the CLI."""
    in_imocha: bool = False
    """Also ask iMocha to mask the candidate (POST /v3/gdpr/requests)."""
    in_degreed: bool = False
    """Also delete the completions and skill ratings we created in Degreed (by the ledger's Degreed ids)."""
    dry_run: bool = False
    """Only report what would go, per table and system; change nothing."""
    undo: bool = False
    """Lift the learner's erasure instead (an operator's decision): the learner is staged and sent again."""


@dg.op(description="Erase one learner's personal data from the staging tables (and, when asked, in iMocha and "
                   "Degreed); the report of what went, per table and system, is the run's metadata.")
def forget_learner(context: dg.OpExecutionContext, config: ForgetConfig, staging_db: StagingDatabaseResource,
                   imocha: ImochaResource, degreed: DegreedResource):
    try:
        if config.undo:
            report = erasure.undo(staging_db.engine(), config.email, dry_run=config.dry_run)
        else:
            report = erasure.forget(staging_db.engine(), config.email, in_imocha=config.in_imocha,
                                    in_degreed=config.in_degreed, dry_run=config.dry_run,
                                    imocha_client=imocha.client, degreed_client=degreed.client)
    except (MissingSettingError, InvalidSettingError, ValueError, LookupError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    for line in report.lines():
        context.log.info(line)
    values = report.as_dict()
    metadata: dict[str, object] = {"learner": values["learner"], "dry_run": report.dry_run, "undo": report.undo,
                                   "report": dg.MetadataValue.md("\n".join(f"    {line}" for line in report.lines())),
                                   "degreed": dg.MetadataValue.json(report.degreed),
                                   "imocha": dg.MetadataValue.json(report.imocha)}
    metadata.update({f"local.{table}": count for table, count in sorted(report.local.items())})
    if report.failed:
        raise dg.Failure(description="some Degreed deletes failed; the next reconcile deletes the rest, or run "
                                     "the job again to delete them now", metadata=metadata)
    return dg.Output(values, metadata=metadata)


@dg.job(name="forget_job", tags={"imocha_pipeline/entity": "erasure"},
        description="Right to erasure for one learner: removes their personal data from the staging tables and, when "
                    "asked, in iMocha and Degreed; the learner is not synced again until the erasure is lifted.")
def forget_job():
    forget_learner()
