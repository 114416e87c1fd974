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
from datetime import datetime

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

    def first_errors(self, limit: int = 20) -> list[str]:
        return [f"{e['record_key']}: {e['error']}" for e in self.result.errors[:limit]]


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
    delivery = Delivery(entity.name, scope, due=len(frame), invalid=len(invalid), waiting=found.waiting,
                        dry_run=dry_run)
    if on_start is not None:
        on_start(len(frame))
    if dry_run or frame.empty:
        return delivery
    delivery.result = apply_plan(frame, writer, Ledger(engine, entity.name, run_id), quarantine,
                                 fields=entity.all_fields, progress=progress)
    mark_delivered(engine, entity.name, frame["record_key"])
    return delivery
