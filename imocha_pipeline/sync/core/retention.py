"""Retention: what the staging database stops keeping after ``IMOCHA_PIPELINE_RETENTION_DAYS`` (default: keep all).

Per table, beyond the limit:

- ``sync_plan``: a row is removed once nothing can need it: it was planned (and, if delivered, delivered) before
  the limit and it is not outstanding: Degreed acknowledged exactly its values (``plan_store.delivered``), or it
  is ``unchanged``/``skip``, or the ledger shows Degreed acknowledged a later attempt of the record (superseded).
  A row still to send (created, updated, retired, waiting, failed) stays whatever its age.
- ``sync_quarantine``: closed (resolved) rows whose last word is older than the limit; open ones stay.
- ``sync_drift``: rows found before the limit (each reconcile replaces the table, so these are only left when the
  reconcile stopped running).
- ``callback_inbox``: the body (``payload``: the candidate's email, name and score as iMocha sent them) of a
  callback processed and received before the limit is cleared; the row itself stays (id, attempt id, status,
  run key), because the sensors and the callback replay ask whether an attempt's callback arrived and was run.

Kept whatever their age: ``sync_ledger`` (its identity and acknowledged payload are how a record is never sent
twice: a re-run plans against it, and a claim for a record already acknowledged or superseded is refused), the
staged iMocha attempts and scores (no raw payloads are kept there: the report is parsed into columns; they are the
analysts' history and what an unplanned day is planned from), the Degreed snapshots (replaced by each reconcile),
``sync_state``, ``rate_budget`` and ``skill_mapping``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.settings import IMOCHA_PIPELINE_RETENTION_DAYS
from imocha_pipeline.sync.core.ledger import ACKNOWLEDGED, holds_later_attempt
from imocha_pipeline.sync.core.outstanding import OUTSTANDING_ACTIONS
from imocha_pipeline.sync.core.plan_store import delivered
from imocha_pipeline.sync.core.quarantine import OPEN

SETTING = IMOCHA_PIPELINE_RETENTION_DAYS.name
PLAN = "sync_plan"
QUARANTINE = "sync_quarantine"
DRIFT = "sync_drift"
CALLBACK_BODIES = "callback_inbox"
TABLES = (PLAN, QUARANTINE, DRIFT, CALLBACK_BODIES)


@dataclass(frozen=True)
class RetentionReport:
    """What a retention pass removed (or, in a dry run, would remove), per table."""

    days: int | None
    cutoff: datetime | None
    dry_run: bool
    removed: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.removed.values())

    def summary(self) -> str:
        if self.days is None:
            return f"{SETTING} is not set: everything is kept"
        verb = "would remove" if self.dry_run else "removed"
        counts = ", ".join(f"{table} {self.removed.get(table, 0)}" for table in TABLES)
        return f"older than {self.days} days ({self.cutoff:%Y-%m-%d %H:%M} UTC): {verb} {counts}"


def _plan_rows_done(cutoff: datetime) -> sa.ColumnElement[bool]:
    """Plan rows older than ``cutoff`` that nothing can need: not outstanding, delivered, or superseded."""
    plan, ledger = staging.sync_plan, staging.sync_ledger
    same_record = sa.and_(ledger.c.entity == plan.c.entity, ledger.c.record_key == plan.c.record_key)
    later_attempt = sa.and_(ledger.c.state == ACKNOWLEDGED, plan.c.source_at.is_not(None),
                            holds_later_attempt(plan.c.source_at, sa.func.coalesce(plan.c.source_id, 0)))
    return sa.and_(
        plan.c.planned_at < cutoff,
        sa.or_(plan.c.delivered_at.is_(None), plan.c.delivered_at < cutoff),
        sa.or_(plan.c.action.not_in(OUTSTANDING_ACTIONS),
               sa.exists().where(same_record, delivered(plan, ledger)),
               sa.exists().where(same_record, later_attempt)),
    )


def _conditions(cutoff: datetime) -> dict[str, tuple[sa.Table, sa.ColumnElement[bool]]]:
    quarantine, drift, inbox = staging.sync_quarantine, staging.sync_drift, staging.callback_inbox
    return {
        PLAN: (staging.sync_plan, _plan_rows_done(cutoff)),
        QUARANTINE: (quarantine, sa.and_(quarantine.c.status != OPEN,
                                         sa.func.coalesce(quarantine.c.resolved_at, quarantine.c.last_seen_at)
                                         < cutoff)),
        DRIFT: (drift, drift.c.found_at < cutoff),
        CALLBACK_BODIES: (inbox, sa.and_(inbox.c.processed_at.is_not(None), inbox.c.received_at < cutoff,
                                         inbox.c.payload.is_not(None))),
    }


def retention_days() -> int | None:
    """The limit in days from ``IMOCHA_PIPELINE_RETENTION_DAYS`` (None: keep everything); an invalid value raises
    ``InvalidSettingError`` naming the setting."""
    return IMOCHA_PIPELINE_RETENTION_DAYS.value()


def apply_retention(engine: Engine, days: int | None, *, dry_run: bool = False,
                    now: datetime | None = None) -> RetentionReport:
    """Remove what is older than ``days`` (None: nothing), or only count it (``dry_run``); one transaction."""
    if days is None:
        return RetentionReport(None, None, dry_run, {table: 0 for table in TABLES})
    days = IMOCHA_PIPELINE_RETENTION_DAYS.check(days)
    cutoff = (now or staging.utcnow()) - timedelta(days=days)
    removed: dict[str, int] = {}
    with engine.begin() as conn:
        for name, (table, condition) in _conditions(cutoff).items():
            if dry_run:
                removed[name] = int(conn.execute(sa.select(sa.func.count()).select_from(table)
                                                 .where(condition)).scalar_one())
            elif name == CALLBACK_BODIES:
                removed[name] = conn.execute(table.update().where(condition).values(payload=None)).rowcount or 0
            else:
                removed[name] = conn.execute(table.delete().where(condition)).rowcount or 0
    return RetentionReport(days, cutoff, dry_run, removed)
