"""The reconcile's part of the file path: confirm what Degreed took from a Completions Template file, then send by
API what the file cannot carry (the score, the time of day) and what Degreed did not take within the grace period.

``confirm_file_deliveries`` matches each ``sent_by_file`` ledger row with Degreed's completions snapshot (the
learner's email or employee id and our external id, as the reconcile maps them) and marks it ``acknowledged``
with the Degreed id and the values Degreed holds: the file's date at midnight UTC and no percentile. The row is
then outstanding as an *update* (``sync/core/outstanding.py``): ``deliver_file_followups`` sends the percentile
and the exact time with one PATCH. A row Degreed does not show stays ``sent_by_file`` until the grace period has
passed, and is then due as a create, which the apply loop sends only after reading Degreed (the file's
``attempts``), so a file Degreed processed late never gives a second completion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.sync.completions.entity import COMPLETIONS, SKILL_RATINGS
from imocha_pipeline.sync.completions.records import utc_text
from imocha_pipeline.sync.core.apply import ApplyResult, EntityWriter, apply_plan
from imocha_pipeline.sync.core.delivery import validate_payloads
from imocha_pipeline.sync.core.diff import payload_hash
from imocha_pipeline.sync.core.ledger import SENT_BY_FILE, Ledger
from imocha_pipeline.sync.core.outstanding import NOT_DUE_FILE, Scope, file_grace, outstanding
from imocha_pipeline.sync.core.quarantine import Quarantine


@dataclass
class FileConfirmation:
    """What the reconcile found of the records sent by file."""

    confirmed: int = 0
    waiting: int = 0
    due_by_api: int = 0
    followups: ApplyResult = field(default_factory=ApplyResult)
    rating_followups: ApplyResult = field(default_factory=ApplyResult)

    def as_metadata(self) -> dict[str, int]:
        return {"file_confirmed": self.confirmed, "file_waiting": self.waiting, "file_due_by_api": self.due_by_api,
                **{f"file_followup_{k}": v for k, v in self.followups.as_metadata().items() if v},
                **{f"file_skill_ratings_{k}": v for k, v in self.rating_followups.as_metadata().items() if v}}


def _missing(value) -> bool:
    return value is None or (not isinstance(value, str) and pd.isna(value))


def _utc(value) -> str | None:
    if _missing(value):
        return None
    moment = pd.Timestamp(value)
    return utc_text(moment if moment.tzinfo else moment.tz_localize("UTC"))


def confirm_file_deliveries(engine: Engine, snapshot: pd.DataFrame, run_id: str,
                            now: datetime | None = None) -> FileConfirmation:
    """Mark ``acknowledged`` every ``sent_by_file`` completion Degreed's snapshot shows; count the rest."""
    now = now or staging.utcnow()
    ledger = Ledger(engine, COMPLETIONS.name, run_id)
    pending = ledger.rows((SENT_BY_FILE,))
    result = FileConfirmation()
    if pending.empty:
        return result
    by_email: dict[tuple[str, str], dict] = {}
    by_employee: dict[tuple[str, str], dict] = {}
    for row in ([] if snapshot.empty else snapshot.to_dict("records")):
        content = row.get("content_id")
        if _missing(content):
            continue
        if not _missing(row.get("user_id")):
            by_email[(str(row["user_id"]).strip().lower(), str(content))] = row
        if not _missing(row.get("employee_id")):
            by_employee[(str(row["employee_id"]), str(content))] = row
    due_before = now - file_grace()
    for row in pending.to_dict("records"):
        payload = row.get("payload") or {}
        user, content = str(payload.get("user_id") or ""), str(payload.get("content_id") or "")
        found = (by_employee.get((user, content)) if payload.get("user_identifier_type") == "EmployeeId"
                 else by_email.get((user.strip().lower(), content)))
        if found is None:
            sent = row.get("file_sent_at")
            late = sent is not None and not pd.isna(sent) and pd.Timestamp(sent).to_pydatetime() <= due_before
            result.due_by_api += int(late)
            result.waiting += int(not late)
            continue
        held = {**payload, "completed_at": _utc(found.get("completed_at")),
                "percentile": None if _missing(found.get("percentile")) else float(found["percentile"])}
        if ledger.confirm_file(str(row["record_key"]), str(found["degreed_id"]), held,
                               payload_hash(held, COMPLETIONS)):
            result.confirmed += 1
    return result


def earliest_file_day(engine: Engine) -> date | None:
    """The earliest UTC day a completion still waiting for Degreed's confirmation carries (its completion date,
    or the day its file was sent): the completions snapshot reads back at least that far."""
    pending = Ledger(engine, COMPLETIONS.name).rows((SENT_BY_FILE,))
    days = []
    for row in pending.to_dict("records"):
        for value in ((row.get("payload") or {}).get("completed_at"), row.get("file_sent_at")):
            if not _missing(value):
                days.append(pd.Timestamp(value).date())
    return min(days) if days else None


def file_record_keys(engine: Engine) -> set[str]:
    """Completions that went in a file at some point (the ledger keeps the file's name)."""
    ledger = staging.sync_ledger
    with engine.connect() as conn:
        return set(conn.execute(sa.select(ledger.c.record_key).where(
            ledger.c.entity == COMPLETIONS.name, ledger.c.file_name.is_not(None))).scalars())


def file_attempt_ids(engine: Engine) -> set[int]:
    """The iMocha attempts whose completion went in a file."""
    ledger = staging.sync_ledger
    with engine.connect() as conn:
        return {int(i) for i in conn.execute(sa.select(ledger.c.source_id).where(
            ledger.c.entity == COMPLETIONS.name, ledger.c.file_name.is_not(None),
            ledger.c.source_id.is_not(None))).scalars()}


def deliver_file_followups(engine: Engine, writers: dict[str, EntityWriter], run_id: str,
                           result: FileConfirmation, now: datetime | None = None) -> FileConfirmation:
    """Send by API, at the rate budget, what is due of the file's records: the score and time of the confirmed
    completions (a PATCH each), a create (after a read of Degreed) for those Degreed did not take in time, then the
    skill ratings of those attempts (``writers``: by entity name, completions and skill ratings)."""
    keys = file_record_keys(engine)
    if not keys:
        return result
    attempts = file_attempt_ids(engine)
    for entity in (COMPLETIONS, SKILL_RATINGS):
        found = outstanding(engine, entity, Scope(), now=now)
        mine = found.due["record_key"].isin(keys) if entity is COMPLETIONS else \
            found.due["source_id"].isin(attempts)
        frame, invalid = validate_payloads(found.due[mine], entity)
        quarantine = Quarantine(engine, entity.name, run_id)
        quarantine.put(invalid)
        if entity is COMPLETIONS:
            result.waiting = len(found.waiting_keys.get(NOT_DUE_FILE, []))
        if not frame.empty:
            applied = apply_plan(frame, writers[entity.name], Ledger(engine, entity.name, run_id), quarantine,
                                 fields=entity.all_fields)
            target = result.followups if entity is COMPLETIONS else result.rating_followups
            target.counts.update(applied.counts)
            target.errors.extend(applied.errors)
    return result
