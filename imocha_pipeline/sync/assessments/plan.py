"""The assessment plan: the desired Degreed content of each valid test, the diff against Degreed's snapshot, and
the guard that blocks mass retirement and a sudden shrink of the extract."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.sync.assessments.entity import ASSESSMENT, ASSESSMENTS
from imocha_pipeline.sync.assessments.extract import LIST_ENTRY_KEY_PREFIX
from imocha_pipeline.sync.assessments.mapping import DESIRED_ASSESSMENT_FIELDS, AssessmentMapping, desired_assessments
from imocha_pipeline.sync.assessments.models import DesiredAssessmentModel
from imocha_pipeline.sync.core.diff import RETIRE, payload_hash, plan
from imocha_pipeline.sync.core.ledger import Ledger
from imocha_pipeline.sync.core.plain_values import plain
from imocha_pipeline.sync.core.quarantine import VALIDATION, Entry, Quarantine
from imocha_pipeline.sync.core.validation import RowFailure, split_valid


@dataclass
class DesiredResult:
    valid: pd.DataFrame
    failures: list[RowFailure]
    total: int


def build_desired(engine: Engine, mapping: AssessmentMapping, run_id: str) -> DesiredResult:
    """Map the staged iMocha tests, validate, quarantine failures, and stage the valid rows."""
    with engine.connect() as conn:
        extract = pd.DataFrame(staging.read_rows(conn, staging.imocha_assessments))
    desired = desired_assessments(extract, mapping)
    valid, failures = split_valid(desired, DesiredAssessmentModel, "external_id", "desired assessments")
    quarantine = Quarantine(engine, ASSESSMENT, run_id)
    quarantine.put(Entry(f.record_key, VALIDATION, f.reason, f.column, f.rule, f.bad_value) for f in failures)
    quarantine.resolve([key for key in valid["external_id"]] if not valid.empty else [], kinds=[VALIDATION])
    now = staging.utcnow()
    rows = [] if valid.empty else [
        {**{k: plain(v) for k, v in rec.items()}, "computed_at": now}
        for rec in valid[["external_id", "test_id", *DESIRED_ASSESSMENT_FIELDS, "content_type", "title_note"]
                         ].to_dict("records")
    ]
    with engine.begin() as conn:
        conn.execute(staging.desired_assessments.delete())
        staging.upsert(conn, staging.desired_assessments, rows)
    return DesiredResult(valid=valid, failures=failures, total=len(desired))


@dataclass
class AssessmentPlan:
    """The plan rows, and the retirements held back because iMocha's test list had an entry naming no test."""

    frame: pd.DataFrame
    held_back: list[str] = field(default_factory=list)


def compute_plan(engine: Engine, mapping: AssessmentMapping, run_id: str) -> AssessmentPlan:
    """Diff the desired content against Degreed's snapshot (only content under our external-id prefix).

    Quarantined tests are never retired. While an id-less test list entry is in quarantine the extract is
    incomplete and no retirement is planned at all (``held_back``).
    """
    with engine.connect() as conn:
        desired = pd.DataFrame(staging.read_rows(conn, staging.desired_assessments))
        actual = pd.DataFrame(staging.read_rows(conn, staging.degreed_assessments))
    if desired.empty:
        desired = pd.DataFrame(columns=["external_id", *DESIRED_ASSESSMENT_FIELDS])
    if actual.empty:
        actual = pd.DataFrame(columns=["external_id", "degreed_id", "obsolete", *DESIRED_ASSESSMENT_FIELDS])
    ours = actual["external_id"].fillna("").astype(str).str.match(rf"^{mapping.external_id_prefix}\d+$")
    actual = actual[ours]
    # Quarantined tests are neither created nor retired: they are still in iMocha, just not valid now.
    quarantined = set(Quarantine(engine, ASSESSMENT).open_entries([VALIDATION])["record_key"])
    incomplete = any(key.startswith(LIST_ENTRY_KEY_PREFIX) for key in quarantined)
    result = plan(desired, actual, ASSESSMENTS)
    retiring = result["action"] == RETIRE
    kept = retiring & result["record_key"].isin(quarantined)
    held = retiring & ~kept & incomplete
    held_back = list(result.loc[held, "record_key"].astype(str))
    result = result[~(kept | held)]
    notes = dict(zip(desired["external_id"], desired.get("title_note", pd.Series(dtype=object)), strict=False))
    noted = [isinstance(notes.get(key), str) and bool(notes[key]) for key in result["record_key"]]
    result.loc[noted, "reason"] = [f"{reason}; {notes[key]}" for key, reason in
                                   zip(result.loc[noted, "record_key"], result.loc[noted, "reason"], strict=True)]
    resolve_sending_from_snapshot(engine, result, run_id)
    return AssessmentPlan(result.reset_index(drop=True), held_back)


def resolve_sending_from_snapshot(engine: Engine, plan_frame: pd.DataFrame, run_id: str) -> int:
    """Ledger rows stuck in ``sending`` whose record Degreed already shows as desired become acknowledged."""
    ledger = Ledger(engine, ASSESSMENT, run_id)
    stuck = ledger.stuck_sending()
    if stuck.empty:
        return 0
    settled = plan_frame[(plan_frame["action"] == "unchanged") & plan_frame["record_key"].isin(stuck["record_key"])]
    for row in settled.to_dict("records"):  # an unchanged plan row carries no hash: Degreed shows these values
        values = {field: plain(row.get(field)) for field in ASSESSMENTS.fields}
        ledger.acknowledge(row["record_key"], row["degreed_id"], payload_hash(values, ASSESSMENTS), values,
                           action="resolved")
    return len(settled)


@dataclass(frozen=True)
class GuardVerdict:
    passed: bool
    retire_share: float
    shrink_share: float
    message: str


def guard_plan(plan_frame: pd.DataFrame, active_in_degreed: int, previous_extract: int, current_extract: int,
               max_retire_share: float, max_shrink_share: float, confirmed: bool) -> GuardVerdict:
    """Block mass retirement and a sudden shrink of the iMocha extract unless a person confirmed it.

    ``previous_extract`` is the extract size at the last approved plan (``sync/plan_approval.py``), so a shrink
    stays blocked on every re-run until it is confirmed."""
    retiring = int((plan_frame["action"] == RETIRE).sum()) if not plan_frame.empty else 0
    retire_share = retiring / active_in_degreed if active_in_degreed else 0.0
    shrink_share = max(0.0, (previous_extract - current_extract) / previous_extract) if previous_extract else 0.0
    problems = []
    if retire_share > max_retire_share:
        problems.append(f"the plan retires {retiring} of {active_in_degreed} active assessments "
                        f"({retire_share:.0%} > limit {max_retire_share:.0%})")
    if shrink_share > max_shrink_share:
        problems.append(f"the iMocha extract shrank from {previous_extract} tests (at the last approved plan) to "
                        f"{current_extract} ({shrink_share:.0%} > limit {max_shrink_share:.0%})")
    if not problems:
        return GuardVerdict(True, retire_share, shrink_share, "within limits")
    if confirmed:
        return GuardVerdict(True, retire_share, shrink_share, "confirmed by run config: " + "; ".join(problems))
    return GuardVerdict(False, retire_share, shrink_share,
                        "blocked: " + "; ".join(problems)
                        + ". If this is intended, re-run with run config "
                        "ops.assessment_sync_plan.config.confirm_large_changes: true")


def active_ours_in_degreed(engine: Engine, mapping: AssessmentMapping) -> int:
    with engine.connect() as conn:
        rows = staging.read_rows(conn, staging.degreed_assessments)
    prefix = mapping.external_id_prefix
    return sum(1 for r in rows if str(r.get("external_id") or "").startswith(prefix) and not r.get("obsolete"))
