"""The staged plan (``sync_plan``): what the apply step will do, readable before it happens."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline.sync import staging
from imocha_pipeline.sync.values import plain

PLAN_COLUMNS = ["record_key", "action", "reason", "changed_fields", "degreed_id", "payload_hash"]


def stage_plan(engine: Engine, entity: str, plan_frame: pd.DataFrame, fields: tuple[str, ...], run_id: str,
               replace_all: bool = True) -> None:
    """Store the plan rows of one entity. ``replace_all`` drops the entity's earlier rows first (a full plan);
    otherwise only the planned keys are replaced (a partition's plan leaves other partitions' rows)."""
    now = staging.utcnow()
    rows = [
        {
            "entity": entity, "record_key": str(rec["record_key"]), "action": rec["action"],
            "reason": rec.get("reason"), "changed_fields": list(plain(rec.get("changed_fields")) or []),
            "degreed_id": plain(rec.get("degreed_id")), "payload": {f: plain(rec.get(f)) for f in fields},
            "payload_hash": plain(rec.get("payload_hash")), "run_id": run_id, "planned_at": now,
        }
        for rec in plan_frame.to_dict("records")
    ]
    with engine.begin() as conn:
        if replace_all:
            conn.execute(staging.sync_plan.delete().where(staging.sync_plan.c.entity == entity))
        staging.upsert(conn, staging.sync_plan, rows)


def load_plan(engine: Engine, entity: str, fields: tuple[str, ...], run_id: str | None = None) -> pd.DataFrame:
    """The staged plan of one entity (optionally only the rows a given run planned) with payload columns."""
    condition = staging.sync_plan.c.entity == entity
    if run_id is not None:
        condition = sa.and_(condition, staging.sync_plan.c.run_id == run_id)
    with engine.connect() as conn:
        rows = staging.read_rows(conn, staging.sync_plan, condition)
    records = [{**{f: (row["payload"] or {}).get(f) for f in fields}, **row} for row in rows]
    columns = [*PLAN_COLUMNS, *fields]
    return pd.DataFrame(records, columns=columns) if records else pd.DataFrame(columns=columns)
