"""The demo's story, read from the staging database: what a run fetched, planned and sent, and what waits and why.

The figures come from the tables every run writes (the staged extracts, ``sync_plan``, ``sync_ledger``,
``sync_quarantine``), so they are the same ones an analyst would query, whatever the runs log.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.sync.core.diff import UNCHANGED, WRITE_ACTIONS
from imocha_pipeline.sync.core.ledger import ACKNOWLEDGED, FAILED, PLANNED, SENDING, SENT_BY_FILE

NOUNS = {"assessment": "assessment", "completion": "completion", "skill_rating": "skill rating"}


def noun(entity: str, count: int = 2) -> str:
    """``completions``, ``1 skill rating``: the entity's name for ``count`` records."""
    name = NOUNS.get(entity, entity)
    return name if count == 1 else f"{name}s"


def _quarantined(engine: Engine) -> set[tuple[str, str]]:
    """(entity, record_key) of the open quarantine entries: records held back with a reason, not failed."""
    table = staging.sync_quarantine
    with engine.connect() as conn:
        return {(row.entity, row.record_key) for row in
                conn.execute(sa.select(table.c.entity, table.c.record_key).where(table.c.status == "open"))}


def _ledger(engine: Engine, where) -> list:
    table = staging.sync_ledger
    with engine.connect() as conn:
        return conn.execute(sa.select(table.c.entity, table.c.record_key, table.c.action, table.c.state)
                            .where(where)).all()


def _grouped(engine: Engine, table: sa.Table, columns: list[str], where=None) -> Counter:
    cols = [table.c[name] for name in columns]
    statement = sa.select(*cols, sa.func.count()).group_by(*cols)
    if where is not None:
        statement = statement.where(where)
    with engine.connect() as conn:
        return Counter({tuple(row[:-1]) if len(cols) > 1 else row[0]: row[-1] for row in conn.execute(statement)})


@dataclass
class Staged:
    """Row counts of the staged extracts at one moment (the difference of two is what a run fetched)."""

    counts: Counter = field(default_factory=Counter)

    @classmethod
    def read(cls, engine: Engine) -> Staged:
        counts = Counter()
        with engine.connect() as conn:
            for table in (staging.imocha_assessments, staging.degreed_assessments, staging.imocha_skill_scores):
                counts[table.name] = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        for status, n in _grouped(engine, staging.imocha_completions, ["status"]).items():
            counts[f"attempts {status}"] = n
        return cls(counts)

    def __sub__(self, other: Staged) -> Staged:
        return Staged(Counter({key: self.counts[key] - other.counts[key] for key in self.counts}))

    @property
    def attempts(self) -> str:
        by_status = {key.removeprefix("attempts "): n for key, n in self.counts.items()
                     if key.startswith("attempts ") and n}
        total = sum(by_status.values())
        detail = ", ".join(f"{n} {status}" for status, n in sorted(by_status.items(), key=lambda item: -item[1]))
        return (f"{total} attempt(s)" + (f" ({detail})" if detail else "")
                + f" with {self.counts['imocha_skill_scores']} skill scores")


@dataclass
class RunFigures:
    """What one run planned and what Degreed acknowledged, by entity (read right after the run)."""

    planned: Counter  # (entity, action) -> records the run planned
    held: Counter  # (entity, action, reason) -> records planned but not sent (skipped or waiting)
    sent: Counter  # (entity, action) -> records Degreed acknowledged in the run
    failed: Counter  # entity -> records whose write failed in the run
    waiting: Counter  # entity -> records of the run held in quarantine (e.g. the learner is not in Degreed yet)

    @classmethod
    def read(cls, engine: Engine, run_id: str) -> RunFigures:
        plan = _grouped(engine, staging.sync_plan, ["entity", "action", "reason"], staging.sync_plan.c.run_id == run_id)
        planned, held = Counter(), Counter()
        for (entity, action, reason), n in plan.items():
            planned[(entity, action)] += n
            if action not in (*WRITE_ACTIONS, UNCHANGED):
                held[(entity, action, reason)] += n
        sent, failed, waiting = Counter(), Counter(), Counter()
        quarantined = _quarantined(engine)
        for row in _ledger(engine, staging.sync_ledger.c.run_id == run_id):
            if row.state == ACKNOWLEDGED:
                sent[(row.entity, row.action)] += 1
            elif (row.entity, row.record_key) in quarantined:
                waiting[row.entity] += 1
            elif row.state == FAILED:
                failed[row.entity] += 1
        return cls(planned, held, sent, failed, waiting)

    @property
    def writes(self) -> int:
        return sum(n for (_entity, action), n in self.planned.items() if action in WRITE_ACTIONS)

    def planned_line(self) -> str:
        unchanged = sum(n for (_entity, action), n in self.planned.items() if action == UNCHANGED)
        parts = [f"{noun(entity)} {action} {n}" for (entity, action), n in sorted(self.planned.items())
                 if action in WRITE_ACTIONS and n]
        line = f"{self.writes} write(s)" + (f": {', '.join(parts)}" if parts else "")
        return line + (f"; {unchanged} already up to date" if unchanged else "")

    def held_lines(self) -> list[str]:
        return [f"held back: {n} {noun(entity, n)} ({action}): {reason}"
                for (entity, action, reason), n in sorted(self.held.items())]

    def sent_line(self) -> str:
        parts = [f"{noun(entity)} {action}d {n}" for (entity, action), n in sorted(self.sent.items()) if n]
        waiting = ", ".join(f"{n} {noun(entity, n)}" for entity, n in sorted(self.waiting.items()))
        failed = sum(self.failed.values())
        return ((", ".join(parts) or "nothing") + (f"; quarantined: {waiting}" if waiting else "")
                + (f"; {failed} FAILED (they stay outstanding)" if failed else ""))

    def count_sent(self, entity: str) -> int:
        return sum(n for (name, _action), n in self.sent.items() if name == entity)


# What becomes of a ledger row that is not acknowledged (an erased learner's rows, erased or deleted, are not
# waiting for anything: they are left out).
LEDGER_STATE_OUTLOOK = {
    PLANNED: "the next run sends them again", SENDING: "the next run sends them again",
    FAILED: "the next run sends them again",
    SENT_BY_FILE: "in a Completions Template file; the reconcile confirms them or sends them by API after the grace "
                  "period",
}


def waiting_lines(engine: Engine, limit: int = 4) -> list[str]:
    """What is not in Degreed and why: open quarantine entries (with their next retry) and records the plan holds
    back, grouped by reason; the first ``limit`` groups, then how many more."""
    quarantine = staging.sync_quarantine
    with engine.connect() as conn:
        rows = conn.execute(sa.select(quarantine.c.entity, quarantine.c.kind, quarantine.c.reason,
                                      quarantine.c.next_retry_at)
                            .where(quarantine.c.status == "open")
                            .order_by(quarantine.c.entity, quarantine.c.kind, quarantine.c.record_key)).all()
    groups: dict[tuple[str, str], list] = {}
    for row in rows:
        groups.setdefault((row.entity, row.kind), []).append(row)
    lines = []
    for (entity, kind), members in groups.items():
        retries = [row.next_retry_at for row in members if row.next_retry_at is not None]
        retry = f"; next retry {min(retries):%H:%M:%S} UTC" if retries else ""
        lines.append(f"{len(members)} {noun(entity, len(members))} quarantined ({kind}), e.g. "
                     f"{members[0].reason}{retry}")
    plan = _grouped(engine, staging.sync_plan, ["entity", "action", "reason"],
                    staging.sync_plan.c.action.not_in([*WRITE_ACTIONS, UNCHANGED]))
    lines += [f"{n} {noun(entity, n)} not sent ({action}): {reason}"
              for (entity, action, reason), n in sorted(plan.items())]
    quarantined = _quarantined(engine)
    ledger = Counter((row.entity, row.state) for row in _ledger(engine, staging.sync_ledger.c.state != ACKNOWLEDGED)
                     if (row.entity, row.record_key) not in quarantined)
    lines += [f"{n} {noun(entity, n)} {state} in the ledger: {LEDGER_STATE_OUTLOOK[state]}"
              for (entity, state), n in sorted(ledger.items()) if state in LEDGER_STATE_OUTLOOK]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more kinds (see the view v_sync_status)"]
    return lines


def acknowledged_counts(engine: Engine) -> dict[str, int]:
    """entity -> records the ledger holds as acknowledged by Degreed."""
    return dict(_grouped(engine, staging.sync_ledger, ["entity"], staging.sync_ledger.c.state == ACKNOWLEDGED))


def counts_text(counts: dict[str, int]) -> str:
    """``10 assessments, 38 completions, 104 skill ratings``."""
    return ", ".join(f"{n} {noun(entity, n)}" for entity, n in counts.items())
