"""The staged plan (``sync_plan``): what must be in Degreed, per record, readable before it is sent.

Assessments: the whole plan of one run, replaced by the next plan, tagged with its ``plan_id``; the apply step
sends only the plan the guard approved (``sync/plan_approval.py``).

Completions and skill ratings: one row per record holding the newest attempt any run planned. A row is
replaced only by a plan of the same or a later attempt (``source_at``, then ``source_id``), so two runs planning
the same learner at once (a backfill of older days and a sensor run for today) never put an older attempt back.
What is still to send is computed from these rows and the ledger (``sync/outstanding.py``), not remembered by the
run that planned them.

``delivered_at`` marks a plan row whose values the ledger showed acknowledged (``mark_delivered``, after each
delivery); a staged row starts unmarked, and a claim of the record unmarks it (``Ledger.claim``). It only narrows
where the outstanding records of every day are looked for (``sync/outstanding.py``): the ledger stays the truth.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.sync.core.ledger import ACKNOWLEDGED
from imocha_pipeline.sync.core.plain_values import plain

SOURCE_COLUMNS = ("source_id", "source_at", "source_day")


def plan_rows(entity: str, plan_frame: pd.DataFrame, fields: tuple[str, ...], run_id: str,
              plan_id: str | None = None) -> list[dict]:
    """``sync_plan`` rows for a plan frame (source columns taken from the frame where it has them)."""
    now = staging.utcnow()
    rows = []
    for rec in plan_frame.to_dict("records"):
        row = {
            "entity": entity, "record_key": str(rec["record_key"]), "action": rec["action"],
            "reason": rec.get("reason"), "changed_fields": list(plain(rec.get("changed_fields")) or []),
            "degreed_id": plain(rec.get("degreed_id")), "payload": {f: plain(rec.get(f)) for f in fields},
            "payload_hash": plain(rec.get("payload_hash")), "run_id": run_id, "planned_at": now, "plan_id": plan_id,
            "delivered_at": None,
        }
        for column in SOURCE_COLUMNS:
            value = plain(rec.get(column))
            row[column] = value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
        rows.append(row)
    return rows


def stage_plan(engine: Engine, entity: str, plan_frame: pd.DataFrame, fields: tuple[str, ...], run_id: str,
               plan_id: str | None = None) -> None:
    """Replace the entity's plan with this one (a full plan: assessments)."""
    rows = plan_rows(entity, plan_frame, fields, run_id, plan_id)
    with engine.begin() as conn:
        conn.execute(staging.sync_plan.delete().where(staging.sync_plan.c.entity == entity))
        staging.upsert(conn, staging.sync_plan, rows)


def stage_latest(engine: Engine, entity: str, plan_frame: pd.DataFrame, fields: tuple[str, ...],
                 run_id: str) -> None:
    """Upsert the planned records, each only over a row of the same or an older attempt (other rows stay)."""
    rows = plan_rows(entity, plan_frame, fields, run_id)
    table = staging.sync_plan
    with engine.begin() as conn:
        staging.upsert(conn, table, rows, only_if=lambda excluded: staging.not_older(table, excluded))


def delivered(plan: sa.Table, ledger: sa.Table) -> sa.ColumnElement[bool]:
    """The (joined) ledger row shows Degreed acknowledged exactly the plan row's values."""
    return sa.and_(
        ledger.c.state == ACKNOWLEDGED,
        sa.func.coalesce(ledger.c.payload_hash, "") == sa.func.coalesce(plan.c.payload_hash, ""),
        (sa.func.coalesce(ledger.c.action, "") == "retire") == (plan.c.action == "retire"),
    )


def mark_delivered(engine: Engine, entity: str, keys: Iterable[str], chunk: int = 500) -> int:
    """Mark the plan rows of ``keys`` whose values the ledger shows acknowledged (``delivered_at``); returns how
    many. Looked up by key, so the cost follows the keys."""
    plan, ledger = staging.sync_plan, staging.sync_ledger
    keys = sorted({str(key) for key in keys})
    acknowledged = sa.exists().where(ledger.c.entity == plan.c.entity, ledger.c.record_key == plan.c.record_key,
                                     delivered(plan, ledger))
    marked = 0
    with engine.begin() as conn:
        for start in range(0, len(keys), chunk):
            marked += conn.execute(plan.update().where(
                plan.c.entity == entity, plan.c.record_key.in_(keys[start:start + chunk]),
                plan.c.delivered_at.is_(None), acknowledged).values(delivered_at=staging.utcnow())).rowcount or 0
    return marked
