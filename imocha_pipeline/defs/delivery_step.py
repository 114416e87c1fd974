"""The one apply step body: deliver what is outstanding, log progress (also while a send waits), and fail loudly
when something due did not reach Degreed. Used by assessment_sync_apply, completion_sync_apply and
completion_catch_up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import dagster as dg
from sqlalchemy.engine import Engine

from imocha_pipeline.clients.http import RequestMetrics
from imocha_pipeline.defs.metadata import (
    apply_metadata,
    apply_metadata_by_day,
    describe_each_day,
    request_metadata,
)
from imocha_pipeline.sync.core.apply import EntityWriter
from imocha_pipeline.sync.core.delivery import Delivery, deliver
from imocha_pipeline.sync.core.entity import EntitySpec
from imocha_pipeline.sync.core.outstanding import Scope
from imocha_pipeline.sync.core.progress import ProgressLog, progress_every_seconds


def deliver_all(context: dg.AssetExecutionContext, engine: Engine,
                work: Sequence[tuple[EntitySpec, EntityWriter, Scope]], *, run_id: str, dry_run: bool,
                per_minute: int, metrics: RequestMetrics, extra: dict[str, object] | None = None,
                days: Sequence[date] | None = None) -> dg.MaterializeResult:
    """Deliver each entity's outstanding records in its scope, one after the other.

    Returns the step's metadata; raises ``dg.Failure`` naming the counts and the first errors when any due record
    could not be delivered (the records stay outstanding: a retry of this step, the next run or the catch-up sends
    them). A green step means Degreed took everything that was due.

    ``days``: the partitions of a multi-day run. Each day's materialization then describes that day's records
    only; the run's totals (and request counts, which belong to no one day) go to the step's log.
    """
    deliveries: list[Delivery] = []
    for entity, writer, scope in work:
        progress = ProgressLog(context.log.info, f"{entity.name} apply", 0, per_minute,
                               every_seconds=progress_every_seconds())

        def started(total: int, progress: ProgressLog = progress) -> None:
            progress.total = total
            progress.start()

        try:
            # The timer keeps a line coming every interval while a send waits (rate budget, Retry-After).
            with progress.ticking():
                delivery = deliver(engine, entity, writer, scope, run_id, dry_run=dry_run, progress=progress,
                                   on_start=started)
        except BaseException:
            progress.finish(stopped=True)
            raise
        progress.finish(delivery.result)
        deliveries.append(delivery)
        context.log.info("%s (%s): %s", entity.name, scope.describe(), delivery.as_metadata())
    metadata = {**apply_metadata(deliveries, dry_run=dry_run), **(extra or {}),
                **request_metadata(metrics, "degreed_requests")}
    undelivered = [d for d in deliveries if d.undelivered]
    if undelivered:
        counts = "; ".join(f"{d.entity}: {d.undelivered} of {d.due} due writes failed" for d in undelivered)
        errors = [line for d in undelivered for line in d.first_errors(5)]
        raise dg.Failure(
            description=f"Degreed did not take everything that was due ({counts}). The records stay outstanding and "
                        "are sent by a retry of this step, the next run or the catch-up job. First errors:\n"
                        + "\n".join(errors),
            metadata={key: value for key, value in metadata.items()
                      if not isinstance(value, dg.MetadataValue) or isinstance(value, dg.IntMetadataValue)},
        )
    if days is not None and len(days) > 1:
        describe_each_day(context, days, apply_metadata_by_day(deliveries, dry_run=dry_run), run_totals=metadata)
        return dg.MaterializeResult()
    return dg.MaterializeResult(metadata=metadata)
