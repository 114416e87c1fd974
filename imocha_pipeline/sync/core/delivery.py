"""Deliver what is outstanding: the one send path of every apply step, retry, catch-up and repair.

``deliver`` finds the entity's outstanding records in a scope (``sync/outstanding.py``), holds back any whose
payload breaks the entity's pandera model (quarantine, with the reason), and sends the rest through
``apply_plan`` (claims, the ledger, look-ups before resends). ``Delivery.undelivered`` is what was due and
did not reach Degreed: an apply step with any fails, so a green run means Degreed took everything that was due.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

import pandas as pd
from sqlalchemy.engine import Engine

from imocha_pipeline.sync.core.apply import ApplyResult, EntityWriter, apply_plan
from imocha_pipeline.sync.core.diff import WRITE_ACTIONS
from imocha_pipeline.sync.core.entity import EntitySpec
from imocha_pipeline.sync.core.ledger import Ledger
from imocha_pipeline.sync.core.outstanding import Scope, outstanding
from imocha_pipeline.sync.core.plan_store import mark_delivered
from imocha_pipeline.sync.core.quarantine import VALIDATION, Entry, Quarantine
from imocha_pipeline.sync.core.validation import SchemaProblem, split_valid

UNDELIVERED_OUTCOMES = ("failed",)
"""Outcomes of a due write that mean Degreed did not take it (a rejection or a missing learner is quarantined
with its reason instead; a record another live run holds is that run's to deliver)."""


@dataclass
class Delivery:
    """What one ``deliver`` call did for one entity."""

    entity: str
    scope: Scope
    due: int = 0
    invalid: int = 0
    waiting: Counter = field(default_factory=Counter)
    result: ApplyResult = field(default_factory=ApplyResult)
    dry_run: bool = False
    sent: list[dict] = field(default_factory=list)
    """The due records given to the apply loop: ``record_key``, ``action``, ``day`` (the attempt's day)."""
    held_back: list[dict] = field(default_factory=list)
    """Outstanding records not sent: ``record_key``, ``reason`` (why it waits, or the payload problem), ``day``."""

    @property
    def undelivered(self) -> int:
        return sum(int(self.result.counts.get(outcome, 0)) for outcome in UNDELIVERED_OUTCOMES)

    def as_metadata(self) -> dict[str, object]:
        data: dict[str, object] = {"due": self.due, "invalid_payloads": self.invalid,
                                   **{f"waiting_{reason}": int(n) for reason, n in sorted(self.waiting.items())}}
        if self.dry_run:
            data["writes_skipped"] = self.due
            return data
        data.update(self.result.as_metadata())
        data["undelivered"] = self.undelivered
        return data

    def records(self) -> list[dict]:
        """One row per record this delivery looked at: what was sent and how it ended, then what was held back
        and why (for the run's table of records)."""
        errors = {e["record_key"]: e["error"] for e in self.result.errors}
        rows = [{"entity": self.entity, "record_key": r["record_key"], "day": r["day"], "action": r["action"],
                 "outcome": "not sent (dry run)" if self.dry_run
                 else self.result.outcomes.get(r["record_key"], "not tried"),
                 "detail": errors.get(r["record_key"], "")} for r in self.sent]
        return rows + [{"entity": self.entity, "record_key": r["record_key"], "day": r["day"], "action": "",
                        "outcome": "held back", "detail": r["reason"]} for r in self.held_back]

    def by_day(self) -> dict[date | None, Delivery]:
        """This delivery split by attempt day, each part with its day's records and their final outcomes as its
        counts, so the parts of a multi-day run add up to the run's records."""
        parts: dict[date | None, Delivery] = {}
        errors = {e["record_key"]: e for e in self.result.errors}
        for record in self.sent:
            part = parts.setdefault(record["day"], Delivery(self.entity, self.scope, dry_run=self.dry_run))
            part.sent.append(record)
            part.due += 1
            key = record["record_key"]
            if key in self.result.outcomes:
                part.result.note(key, self.result.outcomes[key])
            if key in errors:
                part.result.errors.append(errors[key])
        for record in self.held_back:
            part = parts.setdefault(record["day"], Delivery(self.entity, self.scope, dry_run=self.dry_run))
            part.held_back.append(record)
            if record["reason"] in self.waiting:
                part.waiting[record["reason"]] += 1
            else:
                part.invalid += 1
        return parts

    def first_errors(self, limit: int = 20) -> list[str]:
        return [f"{e['record_key']}: {e['error']}" for e in self.result.errors[:limit]]


def _day(value) -> date | None:
    """An attempt day as a ``date`` (None for records without one, e.g. assessments)."""
    if value is None or (not isinstance(value, (date, str)) and pd.isna(value)):
        return None
    return date.fromisoformat(value[:10]) if isinstance(value, str) else pd.Timestamp(value).date()


def validate_payloads(frame: pd.DataFrame, entity: EntitySpec) -> tuple[pd.DataFrame, list[Entry]]:
    """Split the due records into those whose payload passes the entity's model and quarantine entries."""
    writes = frame[frame["action"].isin(WRITE_ACTIONS) & (frame["action"] != "retire")]
    if entity.model is None or writes.empty:
        return frame, []
    try:
        _, failures = split_valid(writes.reset_index(drop=True), entity.model, "record_key",
                                  f"{entity.name} payloads")
    except SchemaProblem as exc:
        return frame.iloc[0:0], [Entry(str(key), VALIDATION, str(exc)) for key in writes["record_key"]]
    entries = [Entry(f.record_key, VALIDATION, f"{entity.name} payload not sent: {f.reason}", f.column, f.rule,
                     f.bad_value) for f in failures]
    bad = {entry.record_key for entry in entries}
    return frame[~frame["record_key"].isin(bad)], entries


def deliver(engine: Engine, entity: EntitySpec, writer: EntityWriter, scope: Scope, run_id: str, *,
            dry_run: bool = False, progress: Callable[[int, int, ApplyResult], None] | None = None,
            on_start: Callable[[int], None] | None = None, now: datetime | None = None) -> Delivery:
    """Send the entity's due outstanding records in ``scope``; see the module docstring."""
    found = outstanding(engine, entity, scope, now=now)
    quarantine = Quarantine(engine, entity.name, run_id)
    frame, invalid = validate_payloads(found.due, entity)
    quarantine.put(invalid)
    day_of = dict(zip(found.due["record_key"], found.due["source_day"], strict=True))
    delivery = Delivery(entity.name, scope, due=len(frame), invalid=len(invalid), waiting=found.waiting,
                        dry_run=dry_run,
                        sent=[{"record_key": key, "action": action, "day": _day(day_of.get(key))}
                              for key, action in zip(frame["record_key"], frame["action"], strict=True)],
                        held_back=[{"record_key": e.record_key, "reason": e.reason,
                                    "day": _day(day_of.get(e.record_key))} for e in invalid]
                        + [{"record_key": key, "reason": reason, "day": _day(found.waiting_days.get(key))}
                           for reason, keys in found.waiting_keys.items() for key in keys])
    if on_start is not None:
        on_start(len(frame))
    if dry_run or frame.empty:
        return delivery
    delivery.result = apply_plan(frame, writer, Ledger(engine, entity.name, run_id), quarantine,
                                 fields=entity.all_fields, progress=progress)
    mark_delivered(engine, entity.name, frame["record_key"])
    return delivery
