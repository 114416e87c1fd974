"""Helpers that turn run facts into Dagster metadata: preview tables, request counts, the staged tables' schema,
and the apply steps' outcomes (non-zero counts and a table of the records sent and held back)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from imocha_pipeline.clients.http import RequestMetrics
from imocha_pipeline.sync.core.delivery import Delivery
from imocha_pipeline.sync.core.plain_values import plain
from imocha_pipeline.sync.core.progress import eta_minutes, format_duration


def _cell(value) -> str | int | float | bool | None:
    value = plain(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def preview_table(frame: pd.DataFrame) -> dg.TableMetadataValue:
    """A small table for the Dagster UI (every cell as a plain scalar)."""
    columns = [dg.TableColumn(str(name), "string") for name in frame.columns]
    records = [dg.TableRecord(data={str(k): _cell(v) for k, v in row.items()}) for row in frame.to_dict("records")]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def request_key(prefix: str, endpoint: str, outcome: str) -> str:
    """The metadata key of one endpoint and outcome, e.g. ``degreed_requests POST /api/v2/completions 201``
    (outcome: the HTTP status, or ``error:<kind>`` for a request that got no answer)."""
    return f"{prefix} {endpoint} {outcome}"


def request_metadata(metrics: RequestMetrics, prefix: str) -> dict[str, object]:
    """Request counts by endpoint and outcome: flat numbers the UI can plot over time (the total, the classes that
    occurred, and one integer per endpoint template and outcome, see ``request_key``)."""
    snapshot = metrics.snapshot()
    flat: dict[str, object] = {f"{prefix}_total": sum(sum(outcomes.values()) for outcomes in snapshot.values())}
    classes = {"2xx": 0, "4xx": 0, "429": 0, "5xx": 0, "transport_errors": 0}
    for outcomes in snapshot.values():
        for outcome, count in outcomes.items():
            if outcome == "429":
                classes["429"] += count
            elif outcome.startswith("error:"):
                classes["transport_errors"] += count
            elif outcome[:1] in "245":
                classes[f"{outcome[0]}xx"] += count
    flat.update({f"{prefix}_{name}": count for name, count in classes.items() if count})
    for endpoint, outcomes in snapshot.items():
        for outcome, count in outcomes.items():
            flat[request_key(prefix, endpoint, outcome)] = dg.MetadataValue.int(count)
    return flat


RECORDS_SHOWN = 50
"""Rows of the records table on an apply step; the rest are counted ("and N more")."""


def nonzero(values: Mapping[str, object], keep: Iterable[str] = ()) -> dict[str, object]:
    """The entries worth a line in the UI: non-zero ones, and those in ``keep`` even when 0."""
    kept = set(keep)
    return {key: value for key, value in values.items() if value or key in kept}


def table_schema(table: sa.Table) -> dg.TableSchema:
    """A staged table's columns as Dagster's column schema (types as the database declares them)."""
    return dg.TableSchema(columns=[
        dg.TableColumn(column.name, str(column.type).lower(), description=column.comment,
                       constraints=dg.TableColumnConstraints(nullable=bool(column.nullable)))
        for column in table.columns])


COLUMN_SCHEMA = "dagster/column_schema"


def staged_table_metadata(table: sa.Table, row_count: int) -> dict[str, object]:
    """Dagster's table metadata of a staged table: its name, rows and column schema (the UI's Columns tab)."""
    return {"dagster/table_name": table.name, "dagster/row_count": int(row_count),
            COLUMN_SCHEMA: dg.MetadataValue.table_schema(table_schema(table))}


def _md_cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")[:200]


def records_markdown(rows: Sequence[Mapping[str, object]], columns: Sequence[str],
                     limit: int = RECORDS_SHOWN, empty: str = "No record was sent or held back.") -> dg.MetadataValue:
    """A markdown table of at most ``limit`` rows, saying how many more there are."""
    if not rows:
        return dg.MetadataValue.md(empty)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(row.get(name)) for name in columns) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n... and {len(rows) - limit} more (sync_ledger and sync_quarantine hold every record).")
    return dg.MetadataValue.md("\n".join(lines))


RECORD_COLUMNS = ("entity", "record_key", "day", "action", "outcome", "detail")


def apply_metadata(deliveries: Sequence[Delivery], *, dry_run: bool) -> dict[str, object]:
    """An apply step's outcomes: per entity the records due, the failures (even when 0) and every other non-zero
    outcome, and a table of the records sent and held back with their reasons."""
    metadata: dict[str, object] = {"dry_run": True} if dry_run else {}
    rows = []
    for delivery in deliveries:
        keep = ("due",) if delivery.dry_run else ("due", "failed")
        metadata.update({f"{delivery.entity}_{key}": value for key, value in nonzero(delivery.as_metadata(),
                                                                                     keep).items()})
        if delivery.result.errors:
            metadata[f"{delivery.entity}_errors"] = "\n".join(delivery.first_errors())
        rows += delivery.records()
    metadata["records"] = records_markdown(rows, RECORD_COLUMNS, empty="Nothing was due: no record was sent or "
                                                                        "held back.")
    return metadata


def apply_metadata_by_day(deliveries: Sequence[Delivery], *, dry_run: bool) -> Callable[[date], dict[str, object]]:
    """``apply_metadata`` of one attempt day, for ``describe_each_day`` (the records are split by day once)."""
    parts = [(delivery, delivery.by_day()) for delivery in deliveries]

    def of_day(day: date) -> dict[str, object]:
        return apply_metadata([by_day.get(day) or Delivery(delivery.entity, delivery.scope, dry_run=delivery.dry_run)
                               for delivery, by_day in parts], dry_run=dry_run)
    return of_day


def describe_each_day(context: dg.AssetExecutionContext, days: Sequence[date],
                      day_metadata: Callable[[date], Mapping[str, object]], *, asset_key: str | None = None,
                      run_totals: Mapping[str, object] | None = None) -> None:
    """In a run of several days (a single-run backfill) give each day's materialization that day's own figures,
    so the days of a range add up to the run instead of each repeating its totals. The run's totals (and what
    belongs to no one day, such as request counts) go to the step's log; call this instead of putting metadata on
    the ``MaterializeResult``, which Dagster copies to every partition of the run."""
    span = f"{days[0]}..{days[-1]} ({len(days)} days in one run; the run's totals are in its log)"
    for day in days:
        metadata = {**day_metadata(day), "run_days": span}
        if day != days[-1]:  # the same for every day: on the run's latest event only (what the Columns tab reads)
            metadata.pop(COLUMN_SCHEMA, None)
        context.add_asset_metadata(metadata, asset_key=asset_key, partition_key=day.isoformat())
    if run_totals:
        context.log.info("%s run totals for %s..%s: %s", asset_key or context.asset_key.to_user_string(), days[0],
                         days[-1], ", ".join(f"{key} {value}" for key, value in run_totals.items()
                                             if not isinstance(value, dg.MetadataValue)
                                             or isinstance(value, dg.IntMetadataValue)))


NOTHING_TO_SEND = "Nothing to send: Degreed already holds every planned record."


def plan_summary(writes: int, per_minute: int, previews: Mapping[str, pd.DataFrame]) -> dict[str, object]:
    """A plan's headline: the writes and their ETA at the rate budget with a preview of the changes, or, when there
    is nothing to write, a plain "nothing to send" (no ETA, no empty preview)."""
    if not writes:
        return {"writes_planned": 0, "summary": NOTHING_TO_SEND}
    eta = eta_minutes(writes, per_minute)
    return {"writes_planned": writes, "summary": f"{writes} writes to send",
            "eta_minutes": round(eta, 2), "eta": f"at least {format_duration(eta * 60)} at {per_minute} requests/min",
            **{name: preview_table(frame) for name, frame in previews.items() if not frame.empty}}
