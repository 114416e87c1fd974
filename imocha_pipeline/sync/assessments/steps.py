"""The assessment flow in plain Python: extract, stage, map and validate, plan, guard.

The Dagster assets in ``defs/assessments.py`` call these functions; keeping them here makes each step
testable on its own and keeps Dagster objects thin.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.errors import NotFoundError, PayloadError
from imocha_pipeline.clients.imocha import ImochaClient, ImochaPayloadError, TestListProblem
from imocha_pipeline.sync.assessments.entity import ASSESSMENT as ENTITY
from imocha_pipeline.sync.assessments.entity import ASSESSMENTS
from imocha_pipeline.sync.assessments.mapping import DESIRED_ASSESSMENT_FIELDS, AssessmentMapping, desired_assessments
from imocha_pipeline.sync.assessments.models import DesiredAssessmentModel
from imocha_pipeline.sync.core.concurrent_fetch import fetch_all
from imocha_pipeline.sync.core.diff import RETIRE, plan
from imocha_pipeline.sync.core.ledger import ACKNOWLEDGED, SENDING, Ledger
from imocha_pipeline.sync.core.plain_values import plain
from imocha_pipeline.sync.core.quarantine import VALIDATION, Entry, Quarantine
from imocha_pipeline.sync.core.validation import RowFailure, split_valid

# Quarantine key of an entry of iMocha's test list that names no test (page and position from 1). While one is
# open the extract is incomplete, so no assessment is retired; it is resolved by the next clean read of the list.
LIST_ENTRY_KEY_PREFIX = "tests-list-"


def list_entry_key(page: int, item: int) -> str:
    """``tests-list-page-<page>-item-<item>``: the record key of an unreadable, id-less test list entry."""
    return f"{LIST_ENTRY_KEY_PREFIX}page-{int(page)}-item-{int(item)}"


def pick_active_link(links) -> object | None:
    """The test's public link: the first active one, preferring non-API links (the ones learners open)."""
    active = [link for link in links if str(getattr(link, "status", "")).lower() == "active"]
    if not active:
        return None
    public = [link for link in active if not getattr(link, "is_api_link", False)]
    return (public or active)[0]


def extract_assessments(client: ImochaClient, extracted_at: datetime, max_workers: int = 4,
                        problems: list[tuple[int, str]] | None = None,
                        unattributed: list[TestListProblem] | None = None) -> list[dict]:
    """Every iMocha test with its details and active link, as ``imocha_assessments`` rows.

    A test whose own answers cannot be read (malformed entry in the test list, malformed detail or links, gone
    since the list) is left out and reported in ``problems`` as ``(test id, reason)``; it never stops the other
    tests. An entry of the test list without a readable id is reported in ``unattributed`` (the extract is then
    incomplete); without that list it raises ``ImochaPayloadError``. Without ``problems`` everything raises.
    """
    if problems is None:
        tests = client.list_tests()
    else:
        listed: list[TestListProblem] = []
        tests = client.list_tests(listed)
        for problem in listed:
            if problem.test_id is not None:
                problems.append((int(problem.test_id), problem.reason))
            elif unattributed is not None:
                unattributed.append(problem)
            else:
                raise ImochaPayloadError(problem.reason)

    def enrich(test) -> dict | None:
        try:
            detail = client.get_test(test.test_id)
            link = pick_active_link(client.list_test_links(test.test_id))
        except (PayloadError, NotFoundError) as exc:
            if problems is None:
                raise
            problems.append((int(test.test_id), str(exc)))
            return None
        sections = [
            {"name": getattr(s, "name", None), "type": getattr(s, "section_type", None),
             "questions": getattr(s, "questions", None), "duration": getattr(s, "duration", None)}
            for s in (getattr(detail, "sections", None) or [])
        ]
        duration = getattr(detail, "duration_minutes", None)
        return {
            "test_id": int(test.test_id),
            "test_name": getattr(detail, "name", None) or test.name,
            "status": test.status,
            "duration_minutes": duration if duration is not None else test.duration_minutes,
            "question_count": getattr(detail, "questions", None),
            "labels": list(test.labels or []),
            "sections": sections,
            "test_link_id": getattr(link, "test_link_id", None),
            "test_link_key": getattr(link, "test_link", None),
            "test_link_url": None,
            "extracted_at": extracted_at,
        }

    by_id = {int(test.test_id): test for test in tests}
    rows = fetch_all(lambda test_id: enrich(by_id[test_id]), list(by_id), max_workers=max_workers)
    return [row for row in rows.values() if row is not None]


def quarantine_unreadable_tests(engine: Engine, problems: list[tuple[int, str]], mapping_prefix: str,
                                run_id: str) -> int:
    """Tests iMocha answered about with unreadable data: held in quarantine (neither created nor retired)."""
    entries = [Entry(f"{mapping_prefix}{test_id}", VALIDATION,
                     f"iMocha's answer for test {test_id} cannot be read ({reason}); the test is neither created nor "
                     "retired in Degreed until iMocha answers correctly (read again on every run)",
                     "iMocha answer", "well-formed iMocha answer", None)
               for test_id, reason in problems]
    return Quarantine(engine, ENTITY, run_id).put(entries)


def quarantine_unreadable_list_entries(engine: Engine, entries: list[TestListProblem], run_id: str) -> int:
    """Hold id-less test list entries in quarantine (they hold back every retirement) and resolve the ones of
    earlier runs that are gone. Call after every complete read of the list, also when it had none."""
    current = [
        Entry(list_entry_key(entry.page, entry.item), VALIDATION,
              f"entry {entry.item} on page {entry.page} of iMocha's test list (GET /v3/tests) cannot be read and "
              f"names no test ({entry.reason}). No assessment is retired in Degreed while the list has such an "
              "entry, because it may be a test that still exists; creates and updates go on. Ask iMocha to fix the "
              "entry; this clears itself on the first run that reads the list cleanly",
              "iMocha test list entry", "well-formed iMocha answer", entry.entry or None)
        for entry in entries
    ]
    quarantine = Quarantine(engine, ENTITY, run_id)
    open_keys = set(quarantine.open_entries([VALIDATION])["record_key"])
    stale = sorted(key for key in open_keys if key.startswith(LIST_ENTRY_KEY_PREFIX)
                   and key not in {entry.record_key for entry in current})
    quarantine.resolve(stale, kinds=[VALIDATION])
    return quarantine.put(current)


def stage_full_extract(engine: Engine, table: sa.Table, rows: list[dict], ts_column: str,
                       run_started: datetime) -> tuple[int, int]:
    """Upsert a complete extract and drop rows it no longer contains. Returns (previous, current) counts."""
    with engine.begin() as conn:
        previous = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        staging.upsert(conn, table, rows)
        staging.sweep_older(conn, table, ts_column, run_started)
        current = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    return int(previous), int(current)


def snapshot_degreed_assessments(client: DegreedClient, snapshot_at: datetime) -> list[dict]:
    """What Degreed really holds: every Assessment our key can see."""
    return [
        {
            "degreed_id": item.id, "external_id": item.external_id, "title": item.title, "summary": item.summary,
            "url": item.url, "duration": item.duration, "duration_type": item.duration_type,
            "language": item.language, "content_type": "Assessment", "obsolete": bool(item.obsolete),
            "provider_code": item.provider_code, "modified_at": item.modified_at, "snapshot_at": snapshot_at,
        }
        for item in client.iter_assessments()
    ]


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
    quarantine = Quarantine(engine, ENTITY, run_id)
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


def compute_plan(engine: Engine, mapping: AssessmentMapping, run_id: str,
                 held_back: list[str] | None = None) -> pd.DataFrame:
    """Diff the desired content against Degreed's snapshot (only content under our external-id prefix).

    Quarantined tests are never retired. While an id-less test list entry is in quarantine the extract is
    incomplete and no retirement is planned at all; their record keys are appended to ``held_back``.
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
    quarantined = set(Quarantine(engine, ENTITY).open_entries([VALIDATION])["record_key"])
    incomplete = any(key.startswith(LIST_ENTRY_KEY_PREFIX) for key in quarantined)
    result = plan(desired, actual, ASSESSMENTS)
    retiring = result["action"] == RETIRE
    kept = retiring & result["record_key"].isin(quarantined)
    held = retiring & ~kept & incomplete
    if held_back is not None:
        held_back.extend(result.loc[held, "record_key"].astype(str))
    result = result[~(kept | held)]
    notes = dict(zip(desired["external_id"], desired.get("title_note", pd.Series(dtype=object)), strict=False))
    noted = [isinstance(notes.get(key), str) and bool(notes[key]) for key in result["record_key"]]
    result.loc[noted, "reason"] = [f"{reason}; {notes[key]}" for key, reason in
                                   zip(result.loc[noted, "record_key"], result.loc[noted, "reason"], strict=True)]
    resolve_sending_from_snapshot(engine, result, run_id)
    return result.reset_index(drop=True)


def resolve_sending_from_snapshot(engine: Engine, plan_frame: pd.DataFrame, run_id: str) -> int:
    """Ledger rows stuck in ``sending`` whose record Degreed already shows as desired become acknowledged."""
    ledger = Ledger(engine, ENTITY, run_id)
    stuck = ledger.stuck_sending()
    if stuck.empty:
        return 0
    settled = plan_frame[(plan_frame["action"] == "unchanged") & plan_frame["record_key"].isin(stuck["record_key"])]
    for row in settled.to_dict("records"):
        ledger.acknowledge(row["record_key"], row["degreed_id"], row["payload_hash"], action="resolved")
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


def ledger_acknowledged_count(engine: Engine) -> int:
    return Ledger(engine, ENTITY).counts().get(ACKNOWLEDGED, 0)


def ledger_sending_count(engine: Engine) -> int:
    return Ledger(engine, ENTITY).counts().get(SENDING, 0)
