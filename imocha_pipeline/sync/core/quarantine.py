"""Quarantine: records held back with a reason a person can act on, and when to try them again.

Kinds: ``validation`` (the data broke a rule), ``waiting_for_learner`` (Degreed does not know the
learner yet), ``waiting_for_assessment`` (the content is not in Degreed yet), ``rejected`` (Degreed
refused the write for another reason). Waiting and rejected records are sent again by later runs (any apply, or
the catch-up job) once their retry time has come, at growing intervals; a record that later syncs or passes
validation is marked resolved.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline.settings import IMOCHA_PIPELINE_WAITING_RETRY_SECONDS
from imocha_pipeline.staging import sync_quarantine, utcnow

VALIDATION = "validation"
WAITING_FOR_LEARNER = "waiting_for_learner"
WAITING_FOR_ASSESSMENT = "waiting_for_assessment"
REJECTED = "rejected"
OPEN = "open"
RESOLVED = "resolved"
# Kinds whose records are sent again on their own once their retry time has come (``sync/outstanding.py``).
RETRIED_KINDS = (WAITING_FOR_LEARNER, WAITING_FOR_ASSESSMENT, REJECTED)


@dataclass(frozen=True)
class Entry:
    record_key: str
    kind: str
    reason: str
    column: str | None = None
    rule: str | None = None
    bad_value: str | None = None


def retry_delay(attempts: int, base: timedelta = timedelta(minutes=5), cap: timedelta = timedelta(hours=12)):
    """Growing interval between retries of a waiting record: 5 min, 10, 20, ... capped at 12 h."""
    return min(cap, base * (2 ** max(0, attempts - 1)))


class Quarantine:
    def __init__(self, engine: Engine, entity: str, run_id: str = "", retry_base: timedelta | None = None):
        self.engine = engine
        self.entity = entity
        self.run_id = run_id
        self.retry_base = retry_base if retry_base is not None else timedelta(
            seconds=IMOCHA_PIPELINE_WAITING_RETRY_SECONDS.value())

    def put(self, entries: Iterable[Entry]) -> int:
        """Record entries (open); a key already open gets its reason refreshed and attempts counted up."""
        entries = list(entries)
        if not entries:
            return 0
        now = utcnow()
        keys = [entry.record_key for entry in entries]
        with self.engine.begin() as conn:
            existing = {
                row.record_key: row
                for row in conn.execute(
                    sa.select(sync_quarantine).where(sync_quarantine.c.entity == self.entity,
                                                     sync_quarantine.c.record_key.in_(keys))
                )
            }
            for entry in entries:
                old = existing.get(entry.record_key)
                attempts = (old.attempts + 1) if old is not None and old.status == OPEN else 1
                values = {
                    "kind": entry.kind, "reason": entry.reason, "column_name": entry.column, "rule": entry.rule,
                    "bad_value": entry.bad_value, "status": OPEN, "attempts": attempts, "run_id": self.run_id,
                    "last_seen_at": now, "resolved_at": None,
                    "next_retry_at": now + retry_delay(attempts, self.retry_base)
                    if entry.kind in RETRIED_KINDS else None,
                }
                if old is None:
                    conn.execute(sync_quarantine.insert().values(entity=self.entity, record_key=entry.record_key,
                                                                 first_seen_at=now, **values))
                else:
                    if old.status != OPEN:
                        values["first_seen_at"] = now
                    conn.execute(sync_quarantine.update().where(
                        sync_quarantine.c.entity == self.entity,
                        sync_quarantine.c.record_key == entry.record_key).values(**values))
        return len(entries)

    def resolve(self, keys: Iterable[str], kinds: Iterable[str] | None = None) -> int:
        """Mark open entries for these keys resolved (the record passed or synced)."""
        keys = list(keys)
        if not keys:
            return 0
        condition = [sync_quarantine.c.entity == self.entity, sync_quarantine.c.status == OPEN]
        if kinds is not None:
            condition.append(sync_quarantine.c.kind.in_(list(kinds)))
        resolved = 0
        with self.engine.begin() as conn:
            for start in range(0, len(keys), 500):
                resolved += conn.execute(sync_quarantine.update().where(
                    *condition, sync_quarantine.c.record_key.in_(keys[start:start + 500])
                ).values(status=RESOLVED, resolved_at=utcnow(), next_retry_at=None)).rowcount or 0
        return resolved

    def open_entries(self, kinds: Iterable[str] | None = None) -> pd.DataFrame:
        statement = sa.select(sync_quarantine).where(sync_quarantine.c.entity == self.entity,
                                                    sync_quarantine.c.status == OPEN)
        if kinds is not None:
            statement = statement.where(sync_quarantine.c.kind.in_(list(kinds)))
        with self.engine.connect() as conn:
            return pd.DataFrame([dict(r._mapping) for r in conn.execute(statement)],
                                columns=[c.name for c in sync_quarantine.columns])

    def not_due(self, kind: str, now: datetime | None = None, keys: Iterable[str] | None = None,
                chunk: int = 500) -> set[str]:
        """Keys of open entries of ``kind`` whose next retry time has not come yet; with ``keys``, only among
        those, looked up by primary key (the rest is checked here, so no planner walks the open entries' index:
        the cost follows ``keys``, not the quarantine's size)."""
        now = now or utcnow()
        table = sync_quarantine
        with self.engine.connect() as conn:
            if keys is None:
                return {row.record_key for row in conn.execute(sa.select(table.c.record_key).where(
                    table.c.entity == self.entity, table.c.status == OPEN, table.c.kind == kind,
                    table.c.next_retry_at > now))}
            wanted = sorted(set(keys))
            found: set[str] = set()
            for start in range(0, len(wanted), chunk):
                rows = conn.execute(sa.select(table.c.record_key, table.c.status, table.c.kind, table.c.next_retry_at)
                                    .where(table.c.entity == self.entity,
                                           table.c.record_key.in_(wanted[start:start + chunk])))
                found |= {row.record_key for row in rows if row.status == OPEN and row.kind == kind
                          and row.next_retry_at is not None and row.next_retry_at > now}
            return found
