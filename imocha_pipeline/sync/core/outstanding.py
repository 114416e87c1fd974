"""What is still to send to Degreed, computed from the state: the staged plan, the ledger and the quarantine.

A planned record is *outstanding* until the ledger shows Degreed acknowledged exactly its values. Which run
planned it, and which run (if any) tried to send it, does not matter: any apply step, a Dagster retry of one under
a new run id, the catch-up job or the reconcile finds the same outstanding records and sends those that are due.

An outstanding record is *due* unless it waits for something:
- ``waiting_for_learner`` / ``rejected`` (quarantine): until its retry time (growing intervals);
- a completion whose assessment Degreed does not have yet: until the assessment is acknowledged by our ledger or
  seen in Degreed's snapshot (an assessment sync creates it);
- a record whose ledger row already carries a later iMocha attempt is *superseded*, never sent (the newest
  attempt wins at send time too: ``Ledger.claim``);
- a completion sent in a Completions Template file (ledger ``sent_by_file``, ``sync/bulk``): until the grace
  period (``IMOCHA_PIPELINE_BULK_GRACE_HOURS``) after the file was handed over has passed; then it is due (a
  create, after a read of Degreed) unless the reconcile saw it in Degreed first. The skill ratings of an attempt
  whose completion waits so wait with it (they go by API after the completion, as on the API path).
A ``failed`` row is always due: the next run that covers it sends it again.

For completions and skill ratings the action is decided here, from the ledger, not taken from the plan: a record
Degreed acknowledged with other values is updated (only the changed fields); any other one is created, and the
apply loop reads Degreed first when an earlier send is unresolved. Assessments keep the planned action, which
was computed against Degreed's own snapshot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.settings import IMOCHA_PIPELINE_BULK_GRACE_HOURS
from imocha_pipeline.sync.core.diff import CREATE, PLAN_BASE_COLUMNS, RETIRE, UPDATE, WAIT
from imocha_pipeline.sync.core.entity import EntitySpec
from imocha_pipeline.sync.core.ledger import ACKNOWLEDGED, SENT_BY_FILE, Source
from imocha_pipeline.sync.core.plain_values import same_value
from imocha_pipeline.sync.core.plan_store import delivered
from imocha_pipeline.sync.core.quarantine import OPEN, REJECTED, WAITING_FOR_ASSESSMENT, WAITING_FOR_LEARNER

GATED_KINDS = (WAITING_FOR_LEARNER, WAITING_FOR_ASSESSMENT, REJECTED)
OUTSTANDING_ACTIONS = (CREATE, UPDATE, RETIRE, WAIT)
NOT_DUE_LEARNER = "waiting_for_learner"
NOT_DUE_ASSESSMENT = "waiting_for_assessment"
NOT_DUE_REJECTED = "rejected_retry_later"
NOT_DUE_FILE = "waiting_for_file"
FILE_ENTITY = "completion"  # the one entity a Completions Template file carries
SUPERSEDED = "superseded"
RETRY_LATER_KINDS = (WAITING_FOR_LEARNER, REJECTED)  # held back until their retry time
_NOT_DUE_REASON = {WAITING_FOR_LEARNER: NOT_DUE_LEARNER, REJECTED: NOT_DUE_REJECTED}


@dataclass(frozen=True)
class Scope:
    """Which planned records to look at: those planned from attempts of ``days`` (None: every day), and, for
    assessments, only the rows of plan ``plan_id``."""

    days: tuple[date, ...] | None = None
    plan_id: str | None = None

    def describe(self) -> str:
        if self.plan_id:
            return f"plan {self.plan_id}"
        if self.days is None:
            return "every day"
        return f"{min(self.days)}..{max(self.days)}" if self.days else "no day"


@dataclass
class Outstanding:
    """The records due now (a plan frame ready for ``apply_plan``) and why the others wait."""

    due: pd.DataFrame
    waiting: Counter = field(default_factory=Counter)
    waiting_keys: dict[str, list[str]] = field(default_factory=dict)
    waiting_days: dict[str, date | None] = field(default_factory=dict)  # record key -> its source day

    @property
    def total(self) -> int:
        return len(self.due) + sum(count for reason, count in self.waiting.items() if reason != SUPERSEDED)


def _plan_with_ledger(engine: Engine, entity: EntitySpec, scope: Scope, now: datetime) -> pd.DataFrame:
    """The scope's planned records not delivered with their planned values, with their ledger and gating
    quarantine rows. Every query is driven by an index, so its cost follows the records it returns, not history:
    a scope of days by ``(entity, source_day)``; a plan by ``plan_id``'s rows of the entity; every day by the
    plan rows not marked delivered (``delivered_at`` NULL, index ``(entity, delivered_at, action)``: a row is
    marked once the ledger shows its values acknowledged, and unmarked by any later claim, ``Ledger.claim``).
    Across every day, records whose retry time has not come are left out in SQL (counted by ``waiting_counts``)."""
    plan, ledger, quarantine = staging.sync_plan, staging.sync_ledger, staging.sync_quarantine
    statement = (
        sa.select(plan,
                  ledger.c.state.label("ledger_state"), ledger.c.degreed_id.label("ledger_degreed_id"),
                  ledger.c.payload.label("ledger_payload"), ledger.c.source_at.label("ledger_source_at"),
                  ledger.c.source_id.label("ledger_source_id"), ledger.c.file_sent_at.label("file_sent_at"),
                  quarantine.c.kind.label("waiting_kind"), quarantine.c.next_retry_at.label("waiting_until"))
        .select_from(plan
                     .outerjoin(ledger, sa.and_(ledger.c.entity == plan.c.entity,
                                                ledger.c.record_key == plan.c.record_key))
                     .outerjoin(quarantine, sa.and_(quarantine.c.entity == plan.c.entity,
                                                    quarantine.c.record_key == plan.c.record_key,
                                                    quarantine.c.status == OPEN,
                                                    quarantine.c.kind.in_(GATED_KINDS))))
        .where(plan.c.entity == entity.name, plan.c.action.in_(OUTSTANDING_ACTIONS),
               sa.not_(sa.and_(ledger.c.state.is_not(None), delivered(plan, ledger))))
    )
    if scope.days is not None:
        statements = [statement.where(plan.c.source_day.in_(sorted(scope.days)))]
    elif scope.plan_id is not None:
        statements = [statement.where(plan.c.plan_id == scope.plan_id)]
    else:
        statements = [statement.where(plan.c.delivered_at.is_(None), sa.not_(_not_due_yet(quarantine, now)))]
    with engine.connect() as conn:
        rows = [dict(row._mapping) for each in statements for row in conn.execute(each)]
    rows.sort(key=lambda row: row["record_key"])
    return pd.DataFrame(rows)


def _not_due_yet(quarantine: sa.Table, now: datetime) -> sa.ColumnElement[bool]:
    """The joined quarantine row holds the record back until its retry time (learner not in Degreed, rejected)."""
    return sa.and_(quarantine.c.kind.in_(RETRY_LATER_KINDS), quarantine.c.next_retry_at.is_not(None),
                   quarantine.c.next_retry_at > now)


def waiting_counts(engine: Engine, entity: EntitySpec, now: datetime) -> Counter:
    """Open quarantine entries of the entity whose retry time has not come, by reason (a count over the
    ``(entity, status, kind, next_retry_at)`` index, no rows read)."""
    quarantine = staging.sync_quarantine
    with engine.connect() as conn:
        found = conn.execute(sa.select(quarantine.c.kind, sa.func.count()).where(
            quarantine.c.entity == entity.name, quarantine.c.status == OPEN,
            quarantine.c.kind.in_(RETRY_LATER_KINDS), quarantine.c.next_retry_at > now,
        ).group_by(quarantine.c.kind)).all()
    return Counter({_NOT_DUE_REASON[kind]: int(count) for kind, count in found if count})


def _source(at, source_id) -> Source | None:
    if at is None or pd.isna(at):
        return None
    return Source(pd.Timestamp(at).to_pydatetime(), int(source_id) if source_id is not None
                  and not pd.isna(source_id) else 0)


def file_grace() -> timedelta:
    """How long a record sent in a Completions Template file waits for Degreed before it is due by API."""
    return timedelta(hours=IMOCHA_PIPELINE_BULK_GRACE_HOURS.value())


def outstanding(engine: Engine, entity: EntitySpec, scope: Scope, *, now: datetime | None = None,
                assessments: set[str] | None = None) -> Outstanding:
    """The entity's outstanding records in ``scope``: those due now, and counts of those that wait and why."""
    now = now or staging.utcnow()
    file_due_before = now - file_grace()
    rows = _plan_with_ledger(engine, entity, scope, now)
    columns = [*PLAN_BASE_COLUMNS, *entity.all_fields, "source_id", "source_at", "source_day", "waiting_kind"]
    result = Outstanding(pd.DataFrame(columns=columns))
    if scope.days is None and scope.plan_id is None:
        result.waiting.update(waiting_counts(engine, entity, now))
    if rows.empty:
        return result
    if entity.needs_assessment and assessments is None:
        assessments = known_assessments(engine, {(payload or {}).get("content_id") for payload in rows["payload"]})
    in_files = _attempts_in_files(engine, file_due_before) if entity.per_attempt and entity.name != FILE_ENTITY \
        else set()
    due: list[dict] = []
    for row in rows.to_dict("records"):
        payload = row.get("payload") or {}
        reason = _waiting_reason(row, payload, entity, assessments, now, file_due_before)
        if reason is None and in_files and _plain_int(row.get("source_id")) in in_files:
            reason = NOT_DUE_FILE
        if reason is not None:
            result.waiting[reason] += 1
            result.waiting_keys.setdefault(reason, []).append(row["record_key"])
            result.waiting_days[row["record_key"]] = row.get("source_day")
            continue
        record = {**{name: payload.get(name) for name in entity.all_fields},
                  "record_key": row["record_key"], "payload_hash": row.get("payload_hash"),
                  "source_id": row.get("source_id"), "source_at": row.get("source_at"),
                  "source_day": row.get("source_day"), "waiting_kind": row.get("waiting_kind")}
        record.update(_action(row, payload, entity))
        due.append(record)
    result.due = pd.DataFrame(due, columns=columns) if due else result.due
    return result


def _attempts_in_files(engine: Engine, due_before: datetime) -> set[int]:
    """iMocha attempts whose completion went in a file that Degreed has not confirmed, within the grace period."""
    ledger = staging.sync_ledger
    with engine.connect() as conn:
        return {int(i) for i in conn.execute(sa.select(ledger.c.source_id).where(
            ledger.c.entity == FILE_ENTITY, ledger.c.state == SENT_BY_FILE, ledger.c.file_sent_at > due_before,
            ledger.c.source_id.is_not(None))).scalars()}


def _plain_int(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _waiting_reason(row: dict, payload: dict, entity: EntitySpec, assessments: set[str] | None,
                    now: datetime, file_due_before: datetime) -> str | None:
    if entity.per_attempt:
        mine, held = _source(row.get("source_at"), row.get("source_id")), _source(row.get("ledger_source_at"),
                                                                                  row.get("ledger_source_id"))
        if mine is not None and held is not None and held > mine:
            return SUPERSEDED
    sent = row.get("file_sent_at")
    if (row.get("ledger_state") == SENT_BY_FILE and sent is not None and not pd.isna(sent)
            and pd.Timestamp(sent).to_pydatetime() > file_due_before):
        return NOT_DUE_FILE
    kind, until = row.get("waiting_kind"), row.get("waiting_until")
    not_yet = until is not None and not pd.isna(until) and pd.Timestamp(until).to_pydatetime() > now
    if kind == WAITING_FOR_LEARNER and not_yet:
        return NOT_DUE_LEARNER
    if kind == REJECTED and not_yet:
        return NOT_DUE_REJECTED
    if entity.needs_assessment and assessments is not None and payload.get("content_id") not in assessments:
        return NOT_DUE_ASSESSMENT
    return None


def _action(row: dict, payload: dict, entity: EntitySpec) -> dict:
    """The write to make now, with its reason and changed fields."""
    if not entity.per_attempt:
        return {"action": row["action"], "reason": row.get("reason"), "degreed_id": row.get("degreed_id"),
                "changed_fields": list(row.get("changed_fields") or [])}
    if row.get("ledger_state") == ACKNOWLEDGED and row.get("ledger_degreed_id"):
        held = row.get("ledger_payload") or {}
        changed = [name for name in entity.fields if not same_value(held.get(name), payload.get(name))]
        return {"action": UPDATE, "reason": f"Degreed holds other values ({', '.join(changed) or 'payload'})",
                "degreed_id": row["ledger_degreed_id"], "changed_fields": changed}
    state = row.get("ledger_state")
    reason = "not in Degreed yet" if state is None else f"not acknowledged by Degreed yet (ledger: {state})"
    return {"action": CREATE, "reason": reason, "degreed_id": row.get("ledger_degreed_id"), "changed_fields": []}


def known_assessments(engine: Engine, content_ids: Iterable[str | None] | None = None,
                       chunk: int = 500) -> set[str]:
    """External ids Degreed has as active content: acknowledged by our ledger or seen in its snapshot; with
    ``content_ids``, only among those (looked up by key)."""
    ledger, snapshot = staging.sync_ledger, staging.degreed_assessments
    acknowledged = sa.select(ledger.c.record_key).where(
        ledger.c.entity == "assessment", ledger.c.state == ACKNOWLEDGED,
        sa.func.coalesce(ledger.c.action, "") != "retire")
    seen = sa.select(snapshot.c.external_id).where(sa.or_(snapshot.c.obsolete.is_(False),
                                                          snapshot.c.obsolete.is_(None)))
    found: set[str] = set()
    with engine.connect() as conn:
        if content_ids is None:
            found |= set(conn.execute(acknowledged).scalars()) | set(conn.execute(seen).scalars())
        else:  # by key; the ledger row's state is checked here so no planner prefers the (entity, state) index
            wanted = sorted({str(i) for i in content_ids if i is not None and not pd.isna(i)})
            for start in range(0, len(wanted), chunk):
                part = wanted[start:start + chunk]
                found |= {row.record_key for row in conn.execute(
                    sa.select(ledger.c.record_key, ledger.c.state, ledger.c.action).where(
                        ledger.c.entity == "assessment", ledger.c.record_key.in_(part)))
                    if row.state == ACKNOWLEDGED and (row.action or "") != "retire"}
                found |= set(conn.execute(seen.where(snapshot.c.external_id.in_(part))).scalars())
    return {key for key in found if key}
