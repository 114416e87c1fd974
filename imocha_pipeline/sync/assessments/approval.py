"""Guard approvals of assessment plans: the apply step sends only the exact plan a passed guard approved.

Each assessment plan gets a ``plan_id``; its rows in ``sync_plan`` carry it, and the guard's verdict is recorded
with it (``sync_state`` ``assessment.plan``) in the same transaction. The apply step reads the verdict: a
blocked plan sends nothing, however the step is started (the job, "Materialize selected" on the apply asset
alone, a Dagster retry under a new run id). Only a new plan that passes the guard, or one a person confirmed
(``confirm_large_changes``), replaces it.

The shrink guard compares the iMocha extract with the extract of the last *approved* plan (``sync_state``
``assessment.extract_baseline``), so a blocked plan blocks again on every re-run until someone confirms it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.sync.core.plan_store import plan_rows

PLAN_STATE = "assessment.plan"
BASELINE_STATE = "assessment.extract_baseline"
EXTRACT_COUNT_STATE = "assessment.extract_count"
LAST_CHANGE_STATE = "assessment.last_change_plan"
CONFIRM_HINT = ("re-run assessment_sync_job with run config "
                "ops.assessment_sync_plan.config.confirm_large_changes: true")


@dataclass(frozen=True)
class PlanVerdict:
    """What the guard decided about one plan."""

    plan_id: str
    approved: bool
    verdict: str
    run_id: str
    planned_at: datetime | None = None

    def blocked_message(self) -> str:
        return (f"assessment plan {self.plan_id} (run {self.run_id}) was blocked by assessment_plan_guard: "
                f"{self.verdict}. Nothing was sent to Degreed. If the change is intended, {CONFIRM_HINT}")


def record_extract_count(engine: Engine, current: int) -> None:
    """The iMocha extract's size, for the shrink guard. The baseline is left alone (it moves with approvals);
    a database from before approvals existed gets the last extract's count as its baseline once."""
    with engine.begin() as conn:
        if staging.get_state(conn, BASELINE_STATE) is None:
            earlier = staging.get_state(conn, EXTRACT_COUNT_STATE)
            if isinstance(earlier, dict) and earlier.get("current") is not None:
                staging.set_state(conn, BASELINE_STATE, {"count": int(earlier["current"]), "plan_id": None})
        staging.set_state(conn, EXTRACT_COUNT_STATE, {"current": int(current)})


def extract_counts(engine: Engine) -> tuple[int, int]:
    """(baseline, current): the extract size at the last approved plan (0: none yet) and now."""
    with engine.connect() as conn:
        baseline = staging.get_state(conn, BASELINE_STATE) or {}
        current = staging.get_state(conn, EXTRACT_COUNT_STATE) or {}
    return int(baseline.get("count") or 0), int(current.get("current") or 0)


def record_plan(engine: Engine, entity: str, plan_frame: pd.DataFrame, fields: tuple[str, ...], run_id: str,
                approved: bool, verdict: str, extract_count: int) -> PlanVerdict:
    """Stage the plan under a new plan id with the guard's verdict (one transaction); an approved plan moves the
    shrink baseline to this extract."""
    plan_id = uuid.uuid4().hex
    now = staging.utcnow()
    rows = plan_rows(entity, plan_frame, fields, run_id, plan_id)
    with engine.begin() as conn:
        conn.execute(staging.sync_plan.delete().where(staging.sync_plan.c.entity == entity))
        staging.upsert(conn, staging.sync_plan, rows)
        staging.set_state(conn, PLAN_STATE, {"plan_id": plan_id, "approved": approved, "verdict": verdict,
                                             "run_id": run_id, "planned_at": now.isoformat()})
        if approved:
            staging.set_state(conn, BASELINE_STATE, {"count": int(extract_count), "plan_id": plan_id})
    return PlanVerdict(plan_id, approved, verdict, run_id, now)


def last_change_plan(engine: Engine, plan: PlanVerdict, writes: int) -> dict:
    """The last plan that had something to write (``plan_id``, ``planned_at``, ``writes``, ``run_id``): this one
    when ``writes`` > 0 (then recorded), else the one recorded before ({} if none), so a no-change plan can point to
    it in the UI."""
    with engine.begin() as conn:
        if writes:
            last = {"plan_id": plan.plan_id, "run_id": plan.run_id, "writes": int(writes),
                    "planned_at": plan.planned_at.isoformat() if plan.planned_at else None}
            staging.set_state(conn, LAST_CHANGE_STATE, last)
            return last
        found = staging.get_state(conn, LAST_CHANGE_STATE)
    return found if isinstance(found, dict) else {}


def current_plan(engine: Engine) -> PlanVerdict | None:
    """The staged assessment plan's verdict (None: no plan was ever staged with a verdict)."""
    with engine.connect() as conn:
        state = staging.get_state(conn, PLAN_STATE)
    if not isinstance(state, dict) or not state.get("plan_id"):
        return None
    planned_at = datetime.fromisoformat(state["planned_at"]) if state.get("planned_at") else None
    return PlanVerdict(str(state["plan_id"]), bool(state.get("approved")), str(state.get("verdict") or ""),
                       str(state.get("run_id") or ""), planned_at)
