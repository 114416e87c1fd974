"""Helpers that turn run facts into Dagster metadata: preview tables and request counts."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from imocha_pipeline.clients.http import RequestMetrics
from imocha_pipeline.sync.core.plain_values import plain


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
    """Request counts by endpoint and outcome: flat numbers the UI can plot over time (totals by class, and
    one integer per endpoint template and outcome, see ``request_key``), plus the full breakdown as JSON."""
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
    flat.update({f"{prefix}_{name}": count for name, count in classes.items()})
    flat[f"{prefix}_by_endpoint"] = dg.MetadataValue.json(snapshot)
    for endpoint, outcomes in snapshot.items():
        for outcome, count in outcomes.items():
            flat[request_key(prefix, endpoint, outcome)] = dg.MetadataValue.int(count)
    return flat
